"""Kubernetes discovery against a loopback HTTP server serving a PodList."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from observer import conventions as c
from observer.sources.discovery import DiscoveryError, KubernetesDiscovery, KubernetesDiscoveryConfig


def _pod(
    name: str, labels: dict[str, str], ip: str | None = "10.0.0.1", ready: bool = True
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "llm", "labels": labels},
        "status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


PODS = {
    "kind": "PodList",
    "items": [
        # the name says "decode" but the label says prefill: labels win
        _pod("ms-decode-abc", {c.K8S_LABEL_ROLE: "prefill", c.K8S_LABEL_INSTANCE: "ms"}),
        _pod("ms-x", {c.K8S_LABEL_ROLE: "decode", c.K8S_LABEL_INSTANCE: "ms"}, ip="10.0.0.2", ready=False),
        _pod("pending", {c.K8S_LABEL_ROLE: "decode"}, ip=None),
        _pod("odd", {}, ip="fd00::1"),
    ],
}


@pytest.fixture
def api() -> Iterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []

    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append({"path": self.path, "auth": self.headers.get("Authorization", "")})
            if not self.path.startswith("/api/v1/namespaces/llm/pods"):
                self.send_response(403)
                self.end_headers()
                return
            body = json.dumps(PODS).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", seen
    srv.shutdown()
    srv.server_close()


def test_lists_pods_by_label_with_token_and_roles_from_labels(
    api: tuple[str, list[dict[str, str]]], tmp_path: Path
) -> None:
    url, seen = api
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    cfg = KubernetesDiscoveryConfig(
        api_url=url, namespace="llm", token_file=token, ca_file=None, kv_events_port=5557
    )
    pods = KubernetesDiscovery(cfg).pods()
    assert [p.pod for p in pods] == ["ms-decode-abc", "ms-x", "odd"]
    by = {p.pod: p for p in pods}
    assert by["ms-decode-abc"].role == c.ROLE_PREFILL
    assert by["ms-decode-abc"].pool == "ms"
    assert by["ms-x"].role == c.ROLE_DECODE
    assert not by["ms-x"].ready
    assert by["odd"].role is None
    assert by["odd"].pool == "default"
    assert by["odd"].metrics_url == "http://[fd00::1]:8000/metrics"
    assert by["ms-x"].kv_events_endpoint == "tcp://10.0.0.2:5557"
    assert seen[0]["auth"] == "Bearer s3cret"
    assert "labelSelector=llm-d.ai%2Finference-serving%3Dtrue" in seen[0]["path"]


def test_api_error_raises(api: tuple[str, list[dict[str, str]]]) -> None:
    url, _ = api
    cfg = KubernetesDiscoveryConfig(api_url=url, namespace="other", token_file=None, ca_file=None)
    with pytest.raises(DiscoveryError):
        KubernetesDiscovery(cfg).pods()
