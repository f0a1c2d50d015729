"""Pod discovery over the Kubernetes API (plain HTTP with httpx: only the autoscaler's connector
may import `kubernetes`). Roles and pools come from pod labels, never from pod names.

The PodList is read as untrusted JSON: names, namespaces and pool labels go through `clean_value`
(observer/sources/untrusted.py) in `pod_target`, and a field of the wrong type is absent, never
`str()`-ed into a name or an exception in the signals engine. The answer is read under
`max_body_bytes` (observer/sources/capped.py): past it the listing fails (`DiscoveryError`), as it
does when the answer is not complete within `timeout_seconds` (the whole answer's deadline).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from observer import conventions as c
from observer.sources.capped import DEFAULT_MAX_API_BYTES, capped_client, get_text
from observer.sources.samples import VALID_ROLES, PodTarget
from observer.sources.untrusted import Clean, ValueCleaner, clean_value, text_or_none

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
MAX_BODY_SETTING = "sources.kubernetes.max_body_bytes"  # named by a ResponseTooLarge
TIMEOUT_SETTING = "sources.kubernetes.timeout_seconds"  # named by an AnswerTooSlow


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
    timeout_seconds: float = 5.0  # the PodList answer, connect to last byte (and each socket operation)
    max_body_bytes: int = DEFAULT_MAX_API_BYTES  # the PodList answer, received and decoded


def _object(v: Any) -> Mapping[str, Any]:
    return v if isinstance(v, Mapping) else {}


def pod_target(
    item: Mapping[str, Any], cfg: KubernetesDiscoveryConfig, clean: Clean = clean_value
) -> PodTarget | None:
    """Pure: one PodList item -> a target (None when it has no IP yet, or no name). Strings that
    become names go through `clean`."""
    meta = _object(item.get("metadata"))
    status = _object(item.get("status"))
    labels = _object(meta.get("labels"))
    ip = status.get("podIP")
    if not isinstance(ip, str) or not ip or status.get("phase") not in (None, "Running"):
        return None
    name = text_or_none(meta.get("name"), clean)
    if not name:
        return None
    role = labels.get(cfg.role_label)
    conditions = status.get("conditions")
    ready = any(
        isinstance(cond, Mapping) and cond.get("type") == "Ready" and cond.get("status") == "True"
        for cond in (conditions if isinstance(conditions, list) else ())
    )
    host = f"[{ip}]" if ":" in ip else ip
    return PodTarget(
        pod=name,
        role=role if role in VALID_ROLES else None,
        pool=text_or_none(labels.get(cfg.pool_label), clean) or cfg.default_pool,
        namespace=text_or_none(meta.get("namespace"), clean) or cfg.namespace,
        metrics_url=f"http://{host}:{cfg.metrics_port}{cfg.metrics_path}",
        kv_events_endpoint=f"tcp://{host}:{cfg.kv_events_port}" if cfg.kv_events_port else None,
        kv_replay_endpoint=f"tcp://{host}:{cfg.kv_replay_port}" if cfg.kv_replay_port else None,
        ready=ready,
    )


class KubernetesDiscovery:
    """Lists pods by label selector with the service-account bearer token and CA."""

    def __init__(self, config: KubernetesDiscoveryConfig, client: httpx.Client | None = None) -> None:
        self.config = config
        self.cleaner = ValueCleaner(c.SOURCE_DISCOVERY)  # pod names, namespaces, pool labels
        verify: bool | str = True
        if config.ca_file is not None and config.ca_file.exists():
            verify = str(config.ca_file)
        self._client = client or capped_client(config.timeout_seconds, verify=verify)

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
            text = get_text(
                self._client,
                url,
                max_bytes=cfg.max_body_bytes,
                setting=MAX_BODY_SETTING,
                max_seconds=cfg.timeout_seconds,
                seconds_setting=TIMEOUT_SETTING,
                params={"labelSelector": cfg.label_selector},
                headers=headers,
            )
            body = json.loads(text)
        except (httpx.HTTPError, ValueError) as exc:
            raise DiscoveryError(f"listing pods in {cfg.namespace}: {exc}") from exc
        items = body.get("items") if isinstance(body, dict) else ()
        if not isinstance(items, list | None):
            raise DiscoveryError(f"listing pods in {cfg.namespace}: the answer is not a PodList")
        targets = (pod_target(i, cfg, self.cleaner) for i in items or () if isinstance(i, Mapping))
        return tuple(sorted((t for t in targets if t is not None), key=lambda t: t.pod))
