"""Inputs, configs and results of the fleet signals. Frozen; every result carries its evidence."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from observer.model import TierTokens


@dataclass(frozen=True, slots=True)
class TenantPodHits:
    """Cached tokens of one tenant served on one pod in a window, by tier (from RequestRecords:
    the prefill pod for P/D requests, else the decode pod)."""

    tenant: str
    pod: str
    hits: TierTokens


@dataclass(frozen=True, slots=True)
class TenantWindow:
    """One tenant in one window: what the cascade signal reads."""

    tenant: str
    requests: int
    ttft_p90: float | None
    hits: TierTokens
    pod_hits: Mapping[str, TierTokens] = field(default_factory=dict)  # pod -> hits

    @property
    def hbm_share(self) -> float | None:
        return self.hits.hbm / self.hits.total if self.hits.total else None


@dataclass(frozen=True, slots=True)
class CascadeConfig:
    hbm_share_drop: float = 0.3  # absolute drop of the HBM share of hits vs baseline
    ttft_ratio: float = 2.0  # TTFT p90 >= ratio x baseline
    load_tolerance: float = 0.25  # fleet load "flat": |load/baseline - 1| <= tolerance
    evictor_min_rise: float = 0.1  # rise of a tenant's share of a pod's HBM hits to be named
    alpha: float = 0.2  # EWMA weight of a quiet window
    min_baseline_windows: int = 3
    min_requests: int = 5


@dataclass(frozen=True, slots=True)
class TenantBaseline:
    hbm_share: float
    ttft_p90: float
    pod_hbm_occupancy: Mapping[str, float]  # pod -> this tenant's share of the pod's HBM hits
    windows: int
    updated_at: float


@dataclass(frozen=True, slots=True)
class CascadeState:
    tenants: Mapping[str, TenantBaseline] = field(default_factory=dict)
    fleet_load: float | None = None  # baseline of the fleet load (e.g. requests/s)
    fleet_windows: int = 0


@dataclass(frozen=True, slots=True)
class Evictor:
    tenant: str
    pod: str
    occupancy_before: float
    occupancy_now: float


@dataclass(frozen=True, slots=True)
class CascadeSignal:
    tenant: str
    firing: bool
    unknown: bool  # no baseline yet, too few requests, or no fleet load
    hbm_share: float | None
    hbm_share_baseline: float | None
    ttft_p90: float | None
    ttft_p90_baseline: float | None
    fleet_load: float | None
    fleet_load_baseline: float | None
    evictors: tuple[Evictor, ...] = ()

    @property
    def hbm_share_drop(self) -> float | None:
        if self.hbm_share is None or self.hbm_share_baseline is None:
            return None
        return self.hbm_share_baseline - self.hbm_share

    @property
    def ttft_ratio(self) -> float | None:
        if self.ttft_p90 is None or not self.ttft_p90_baseline:
            return None
        return self.ttft_p90 / self.ttft_p90_baseline


@dataclass(frozen=True, slots=True)
class PoolWindow:
    """One pool in one window, for starvation and pressure. None = unknown."""

    pool: str
    pre_decode_ttft_share: float | None  # sum(queue+prefill+kv_transfer) / sum(ttft)
    decode_busy_ratio: float | None  # decode tok/s / (decode replicas x per-replica capacity)
    itl_p90: float | None = None
    kv_usage_max: float | None = None  # max HBM usage over the pool's decode pods
    preemption_rate: float | None = None  # preemptions/s over the pool's decode pods


@dataclass(frozen=True, slots=True)
class StarvationConfig:
    pre_decode_share_min: float = 0.5
    decode_busy_max: float = 0.5
    consecutive_windows: int = 3  # K
    itl_slo_seconds: float = 0.1
    kv_usage_max: float = 0.9
    preemption_rate_max: float = 0.0  # any preemption is pressure


@dataclass(frozen=True, slots=True)
class StarvationState:
    consecutive: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StarvationSignal:
    pool: str
    firing: bool
    unknown: bool
    consecutive: int
    pre_decode_ttft_share: float | None
    decode_busy_ratio: float | None


@dataclass(frozen=True, slots=True)
class DecodePressureSignal:
    pool: str
    firing: bool
    unknown: bool
    reasons: tuple[str, ...]  # "itl", "kv_usage", "preemptions"
    itl_p90: float | None
    itl_slo_seconds: float
    kv_usage_max: float | None
    preemption_rate: float | None


@dataclass(frozen=True, slots=True)
class PdDemand:
    pool: str
    prompt_tokens_per_s: float | None
    hit_rate: float | None
    output_tokens_per_s: float | None
    prefill_replicas: int
    decode_replicas: int


@dataclass(frozen=True, slots=True)
class BalanceConfig:
    prefill_tokens_per_s_per_replica: float = 20_000.0
    decode_tokens_per_s_per_replica: float = 2_000.0
    tolerance: float = 0.5  # imbalanced when deployed/needed is outside [1/(1+t), 1+t]


@dataclass(frozen=True, slots=True)
class BalanceSignal:
    pool: str
    unknown: bool
    imbalanced: bool
    prefill_replicas_needed: float | None
    decode_replicas_needed: float | None
    ratio_needed: float | None  # prefill:decode
    ratio_deployed: float | None
    direction: str | None  # "more_prefill" | "more_decode" | None


@dataclass(frozen=True, slots=True)
class SourceStatus:
    source: str
    last_attempt: float | None
    last_success: float | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class FreshnessConfig:
    stale_after_seconds: float = 60.0


@dataclass(frozen=True, slots=True)
class Freshness:
    source: str
    up: bool
    age_seconds: float | None  # since the last successful read
    blind: bool  # no fresh data: signals fed by this source are unknown
    error: str | None
