"""Pod discovery over the Kubernetes API (plain HTTP with httpx: only the autoscaler's connector
may import `kubernetes`). Roles and pools come from pod labels, never from pod names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from observer import conventions as c
from observer.sources.samples import PodTarget

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
VALID_ROLES = (c.ROLE_PREFILL, c.ROLE_DECODE, c.ROLE_BOTH)


class DiscoveryError(Exception):
    """The API server could not be listed (the caller keeps its previous pods: unknown, not empty)."""


@dataclass(frozen=True, slots=True)
class KubernetesDiscoveryConfig:
    api_url: str = "https://kubernetes.default.svc"
    namespace: str = "default"
    label_selector: str = f"{c.K8S_LABEL_SERVING}=true"
    role_label: str = c.K8S_LABEL_ROLE
    pool_label: str = c.K8S_LABEL_INSTANCE
    default_pool: str = "default"
    metrics_port: int = 8000
    metrics_path: str = "/metrics"
    kv_events_port: int | None = None  # e.g. 5557
    kv_replay_port: int | None = None  # e.g. 5558
    token_file: Path | None = SA_DIR / "token"
    ca_file: Path | None = SA_DIR / "ca.crt"
    timeout_seconds: float = 5.0


def pod_target(item: Mapping[str, Any], cfg: KubernetesDiscoveryConfig) -> PodTarget | None:
    """Pure: one PodList item -> a target (None when it has no IP yet)."""
    meta = item.get("metadata") or {}
    status = item.get("status") or {}
    labels: Mapping[str, str] = meta.get("labels") or {}
    ip = status.get("podIP")
    if not ip or status.get("phase") not in (None, "Running"):
        return None
    role = labels.get(cfg.role_label)
    ready = any(
        cond.get("type") == "Ready" and cond.get("status") == "True"
        for cond in status.get("conditions") or ()
    )
    host = f"[{ip}]" if ":" in ip else ip
    return PodTarget(
        pod=str(meta.get("name", "")),
        role=role if role in VALID_ROLES else None,
        pool=labels.get(cfg.pool_label, cfg.default_pool),
        namespace=str(meta.get("namespace", cfg.namespace)),
        metrics_url=f"http://{host}:{cfg.metrics_port}{cfg.metrics_path}",
        kv_events_endpoint=f"tcp://{host}:{cfg.kv_events_port}" if cfg.kv_events_port else None,
        kv_replay_endpoint=f"tcp://{host}:{cfg.kv_replay_port}" if cfg.kv_replay_port else None,
        ready=ready,
    )


class KubernetesDiscovery:
    """Lists pods by label selector with the service-account bearer token and CA."""

    def __init__(self, config: KubernetesDiscoveryConfig, client: httpx.Client | None = None) -> None:
        self.config = config
        verify: bool | str = True
        if config.ca_file is not None and config.ca_file.exists():
            verify = str(config.ca_file)
        self._client = client or httpx.Client(timeout=config.timeout_seconds, verify=verify)

    def close(self) -> None:
        self._client.close()

    def _token(self) -> str | None:
        f = self.config.token_file
        if f is not None and f.exists():  # re-read each time: projected tokens rotate
            return f.read_text().strip()
        return None

    def pods(self) -> tuple[PodTarget, ...]:
        cfg = self.config
        url = f"{cfg.api_url.rstrip('/')}/api/v1/namespaces/{cfg.namespace}/pods"
        headers = {"Accept": "application/json"}
        token = self._token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            r = self._client.get(url, params={"labelSelector": cfg.label_selector}, headers=headers)
            r.raise_for_status()
            body = r.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise DiscoveryError(f"listing pods in {cfg.namespace}: {exc}") from exc
        targets = (pod_target(item, cfg) for item in body.get("items") or ())
        return tuple(sorted((t for t in targets if t is not None), key=lambda t: t.pod))
