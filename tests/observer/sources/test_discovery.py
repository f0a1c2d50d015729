"""Kubernetes discovery against a loopback HTTP server serving a PodList."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from observer import conventions as c
from observer.sources.discovery import (
    MAX_BODY_SETTING,
    TIMEOUT_SETTING,
    DiscoveryError,
    KubernetesDiscovery,
    KubernetesDiscoveryConfig,
)
from observer.sources.untrusted import clean_value
from tests.support.hostile import CASES as HOSTILE_CASES
from tests.support.hostile import hostile
from tests.support.httpstub import Answer, Seen, serve_http
from tests.support.oversize import json_pad


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


@contextmanager
def pod_api(body: bytes) -> Iterator[tuple[str, list[Seen]]]:
    """An API server answering `body` to a pod list of namespace `llm`, 403 elsewhere."""

    def answer(req: Seen) -> tuple[int, bytes]:
        return (200, body) if req.path.startswith("/api/v1/namespaces/llm/pods") else (403, b"{}")

    with serve_http(answer) as served:
        yield served


@pytest.fixture
def api() -> Iterator[tuple[str, list[Seen]]]:
    with pod_api(json.dumps(PODS).encode()) as served:
        yield served


def test_lists_pods_by_label_with_token_and_roles_from_labels(
    api: tuple[str, list[Seen]], tmp_path: Path
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
    assert seen[0].auth == "Bearer s3cret"
    assert "labelSelector=llm-d.ai%2Finference-serving%3Dtrue" in seen[0].path


def test_api_error_raises(api: tuple[str, list[Seen]]) -> None:
    url, _ = api
    cfg = KubernetesDiscoveryConfig(api_url=url, namespace="other", token_file=None, ca_file=None)
    with pytest.raises(DiscoveryError):
        KubernetesDiscovery(cfg).pods()


def test_hostile_pod_list_gives_safe_names_and_no_exception() -> None:
    """What a broken API (or emulator) may answer: a lone surrogate (JSON `\\ud800`) and a 300 KB
    pod name, a non-string pool label, labels that are not an object, pods without a usable name.
    Names are cleaned as spans' are (they were: a lone surrogate that made /metrics answer 500,
    and 300 KB labels), wrong types are absent, and each rewrite is counted."""
    long = "p" * 300_000
    items = [
        _pod("vllm-@SURROGATE@", {c.K8S_LABEL_ROLE: "decode", c.K8S_LABEL_INSTANCE: "ms"}),
        _pod(long, {c.K8S_LABEL_ROLE: "prefill", c.K8S_LABEL_INSTANCE: ["not", "a", "string"]}),
        {**_pod("labels-list", {}), "metadata": {"name": "labels-list", "labels": ["x"]}},
        {**_pod("x", {}), "metadata": {"name": 42}},  # no string name: skipped
        {**_pod("x", {}), "metadata": None},
        "not an object",
    ]
    body = json.dumps({"kind": "PodList", "items": items}).replace("@SURROGATE@", "\\ud800").encode()
    assert b'"vllm-\\ud800"' in body
    with pod_api(body) as (url, _):
        discovery = KubernetesDiscovery(
            KubernetesDiscoveryConfig(api_url=url, namespace="llm", token_file=None, ca_file=None)
        )
        pods = discovery.pods()
    by = {p.pod: p for p in pods}
    assert set(by) == {f"vllm-{c.VALUE_REPLACEMENT}", clean_value(long), "labels-list"}
    assert len(clean_value(long)) == c.MAX_VALUE_CHARS
    for p in pods:
        p.pod.encode("utf-8")  # no lone surrogate left
    assert by[f"vllm-{c.VALUE_REPLACEMENT}"].pool == "ms"
    assert by[clean_value(long)].pool == "default"  # a non-string label is absent
    assert by[clean_value(long)].role == c.ROLE_PREFILL
    assert by["labels-list"].pool == "default"
    assert discovery.cleaner.count == 2


def test_an_answer_that_is_not_a_pod_list_is_a_discovery_error() -> None:
    for body in (b"[1, 2]", b'{"items": 5}'):
        with pod_api(body) as (url, _):
            cfg = KubernetesDiscoveryConfig(api_url=url, namespace="llm", token_file=None, ca_file=None)
            with pytest.raises(DiscoveryError, match="not a PodList"):
                KubernetesDiscovery(cfg).pods()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("kind", "case"), HOSTILE_CASES)
def test_a_pod_list_too_large_or_too_slow_is_a_discovery_error(kind: str, case: str) -> None:
    """A PodList answer over `max_body_bytes` (declared, endless, or gzip inflating past it), or
    one that keeps coming past `timeout_seconds` (a header line or a body chunk every 0.2 s, never
    a per-read timeout), is a DiscoveryError naming that setting (the caller keeps its previous
    pods); exactly the cap, or the same answer at once, is read."""
    bad = hostile(kind, json.dumps(PODS).encode(), json_pad)

    def answer(req: Seen) -> Answer:
        return bad.reply(case)

    with serve_http(answer) as (url, _):
        cfg = KubernetesDiscoveryConfig(
            api_url=url, namespace="llm", token_file=None, ca_file=None, **bad.limits
        )
        discovery = KubernetesDiscovery(cfg)
        start = time.monotonic()
        try:
            pods, error = discovery.pods(), None
        except DiscoveryError as exc:
            pods, error = (), str(exc)
        elapsed = time.monotonic() - start
        discovery.close()
    if case == bad.fine:
        assert error is None
        assert [p.pod for p in pods] == ["ms-decode-abc", "ms-x", "odd"]
        return
    bad.refused(case, error, elapsed, max_body_setting=MAX_BODY_SETTING, timeout_setting=TIMEOUT_SETTING)
