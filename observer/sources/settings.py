"""`sources:` section of the settings: which metric source, which discovery, optional KV events.

`SourcesSettings.model_validate(settings.sources)` parses the free-form dict of
`observer.config.Settings`. Every knob has a default; documented in docs/sources.md.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from observer import conventions as c
from observer.k8snames import Namespace
from observer.sections import Section
from observer.sources.capped import DEFAULT_MAX_API_BYTES, DEFAULT_MAX_PAGE_BYTES
from observer.sources.discovery import SA_DIR, KubernetesDiscoveryConfig
from observer.sources.prometheus import PrometheusSourceConfig
from observer.sources.promql import LABEL_NAME_PATTERN
from observer.sources.samples import EppTarget, PodTarget
from observer.sources.scrape import ScrapeSourceConfig

_SURROGATE = re.compile("[\ud800-\udfff]")


class StaticPod(Section):
    pod: str
    role: str | None = Field(None, description="prefill | decode | prefill-decode")
    pool: str = "default"
    namespace: str = ""
    model: str | None = None
    metrics_url: str | None = Field(None, description="http://ip:port/metrics (scrape source)")
    kv_events_endpoint: str | None = Field(None, description="tcp://ip:5557")
    kv_replay_endpoint: str | None = Field(None, description="tcp://ip:5558")

    def target(self) -> PodTarget:
        return PodTarget(
            pod=self.pod,
            role=self.role,
            pool=self.pool,
            namespace=self.namespace,
            model=self.model,
            metrics_url=self.metrics_url,
            kv_events_endpoint=self.kv_events_endpoint,
            kv_replay_endpoint=self.kv_replay_endpoint,
        )


class StaticEpp(Section):
    pool: str
    metrics_url: str

    def target(self) -> EppTarget:
        return EppTarget(pool=self.pool, metrics_url=self.metrics_url)


class StaticDiscoverySettings(Section):
    pods: tuple[StaticPod, ...] = ()
    epps: tuple[StaticEpp, ...] = ()


class KubernetesDiscoverySettings(Section):
    api_url: str = "https://kubernetes.default.svc"
    namespace: Namespace = "default"
    label_selector: str = f"{c.K8S_LABEL_SERVING}=true"
    role_label: str = c.K8S_LABEL_ROLE
    pool_label: str = c.K8S_LABEL_INSTANCE
    default_pool: str = "default"
    metrics_port: int = Field(8000, ge=1, le=65535)
    metrics_path: str = "/metrics"
    kv_events_port: int | None = Field(None, ge=1, le=65535)
    kv_replay_port: int | None = Field(None, ge=1, le=65535)
    token_file: Path | None = SA_DIR / "token"
    ca_file: Path | None = SA_DIR / "ca.crt"
    timeout_seconds: float = Field(
        5.0, gt=0, description="the PodList answer, connect to last byte (and each socket operation)"
    )
    max_body_bytes: int = Field(
        DEFAULT_MAX_API_BYTES, ge=1, description="cap on the PodList answer (received and decoded)"
    )

    def config(self) -> KubernetesDiscoveryConfig:
        return KubernetesDiscoveryConfig(**self.model_dump())


class PrometheusSettings(Section):
    url: str = "http://127.0.0.1:9090"
    bearer_token: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: float = Field(
        5.0,
        gt=0,
        description="each query answer (each retry its own), connect to last byte; each socket operation",
    )
    retries: int = Field(2, ge=0)
    backoff_factor: float = Field(0.2, ge=0)
    rate_window_seconds: int = Field(60, ge=1, description=">= 4 Prometheus scrape intervals")
    stale_after_seconds: float = Field(60.0, gt=0)
    # Prometheus label names (`pod`, not a Kubernetes label such as `llm-d.ai/role`): any other
    # name passed here and then failed every read of the source ("invalid label name").
    pod_label: str = Field(c.PROM_LABEL_POD, pattern=LABEL_NAME_PATTERN)
    namespace_label: str = Field(c.PROM_LABEL_NAMESPACE, pattern=LABEL_NAME_PATTERN)
    namespace: str | None = None
    role_label: str | None = Field(None, pattern=LABEL_NAME_PATTERN)
    pool_label: str | None = Field(None, pattern=LABEL_NAME_PATTERN)
    default_pool: str = "default"
    max_body_bytes: int = Field(
        DEFAULT_MAX_API_BYTES, ge=1, description="cap on each query answer (received and decoded)"
    )

    @field_validator("namespace")
    @classmethod
    def _sendable(cls, v: str | None) -> str | None:
        # quoted into every query (promql.quote); a lone surrogate cannot be sent as UTF-8
        if v is not None and _SURROGATE.search(v):
            raise ValueError("must not contain lone surrogate characters")
        return v

    def config(self) -> PrometheusSourceConfig:
        return PrometheusSourceConfig(**self.model_dump())


class ScrapeSettings(Section):
    timeout_seconds: float = Field(
        2.0,
        gt=0,
        description="each /metrics page and EPP counter read, connect to last byte; each socket operation",
    )
    max_workers: int = Field(8, ge=1)
    headers: dict[str, str] = Field(default_factory=dict)
    max_body_bytes: int = Field(
        DEFAULT_MAX_PAGE_BYTES, ge=1, description="cap on each /metrics page, also the autoscaler's EPP reads"
    )

    def config(self) -> ScrapeSourceConfig:
        return ScrapeSourceConfig(
            timeout_seconds=self.timeout_seconds,
            max_workers=self.max_workers,
            headers=dict(self.headers),
            max_body_bytes=self.max_body_bytes,
        )


class KvPublisherSettings(Section):
    endpoint: str
    replay_endpoint: str | None = None


class KvEventsSettings(Section):
    enabled: bool = False
    publishers: tuple[KvPublisherSettings, ...] = Field(
        (), description="in addition to the discovered pods' kv_events_endpoint"
    )
    max_blocks_per_pod: int = Field(200_000, ge=1)
    max_pods: int = Field(1024, ge=1)
    rate_window_seconds: float = Field(60.0, gt=0)
    replay_timeout_ms: int = Field(500, ge=1)
    max_topics_per_publisher: int = Field(
        8, ge=1, description="distinct kv@<pod>@<model> topics one publisher may report; more are dropped"
    )
    max_message_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="largest KV-event message read; a larger one drops that connection (then resubscribed)",
    )


class SourcesSettings(Section):
    """Where fleet metrics come from. The embedded default scrapes statically listed pods."""

    metrics: Literal["scrape", "prometheus", "none"] = "scrape"
    discovery: Literal["static", "kubernetes"] = "static"
    static: StaticDiscoverySettings = StaticDiscoverySettings()
    kubernetes: KubernetesDiscoverySettings = KubernetesDiscoverySettings()
    prometheus: PrometheusSettings = PrometheusSettings()
    scrape: ScrapeSettings = ScrapeSettings()
    kv_events: KvEventsSettings = KvEventsSettings()

    @model_validator(mode="after")
    def _check(self) -> SourcesSettings:
        if self.discovery == "static" and self.metrics == "scrape":
            missing = [p.pod for p in self.static.pods if not p.metrics_url]
            if missing:
                raise ValueError(f"sources.static.pods without metrics_url (scrape source): {missing}")
        return self
