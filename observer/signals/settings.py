"""`signals:` section of the settings: thresholds of the fleet signals and the live engine's knobs.

Every knob has a default; `SignalsSettings.model_validate(settings.signals)` parses the free-form
dict of `observer.config.Settings`. Documented in docs/signals.md ("Fleet signals").
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from observer.sections import Section
from observer.signals.types import BalanceConfig, CascadeConfig, FreshnessConfig, StarvationConfig

FleetLoadKind = Literal["established_requests", "requests", "prompt_tokens", "kv_usage"]


class CascadeSettings(Section):
    hbm_share_drop: float = Field(0.3, gt=0, le=1, description="absolute drop of the HBM share of hits")
    ttft_ratio: float = Field(2.0, gt=1, description="TTFT p90 >= ratio x baseline")
    load_tolerance: float = Field(0.25, ge=0, description="fleet load flat: |load/baseline - 1| <= this")
    evictor_min_rise: float = Field(0.1, gt=0, le=1, description="occupancy rise to name an evictor")
    alpha: float = Field(0.2, gt=0, le=1, description="EWMA weight of a quiet window")
    min_baseline_windows: int = Field(3, ge=1)
    min_requests: int = Field(5, ge=1, description="requests of the tenant in the window")
    fleet_load: FleetLoadKind = Field(
        "established_requests",
        description="what 'fleet load' means: requests/s of the tenants seen for at least "
        "new_tenant_grace_seconds (default), of all tenants, prompt tokens/s of all tenants "
        "(from the window's records), or the mean HBM usage of the pods (from metrics)",
    )
    new_tenant_grace_seconds: float = Field(
        300.0,
        ge=0,
        description="a tenant seen for less than this is not fleet load (it is who the "
        "attribution looks at); established tenants' load rising still blocks the signal",
    )
    baseline_warmup_seconds: float = Field(
        120.0,
        ge=0,
        description="after the engine starts, windows are not folded into baselines for this "
        "long (partial windows and cold caches would poison them)",
    )

    def config(self) -> CascadeConfig:
        return CascadeConfig(
            hbm_share_drop=self.hbm_share_drop,
            ttft_ratio=self.ttft_ratio,
            load_tolerance=self.load_tolerance,
            evictor_min_rise=self.evictor_min_rise,
            alpha=self.alpha,
            min_baseline_windows=self.min_baseline_windows,
            min_requests=self.min_requests,
        )


class StarvationSettings(Section):
    pre_decode_share_min: float = Field(0.5, ge=0, le=1)
    decode_busy_max: float = Field(0.5, ge=0)
    consecutive_windows: int = Field(3, ge=1, description="K ticks in a row")
    itl_slo_seconds: float = Field(0.1, gt=0, description="decode pressure: ITL p90 above this")
    kv_usage_max: float = Field(0.9, gt=0, le=1, description="decode pressure: KV usage at or above")
    preemption_rate_max: float = Field(0.0, ge=0, description="decode pressure: preemptions/s above")
    ttft_min_seconds: float = Field(
        1.0,
        ge=0,
        description="a window counts for starvation only when the pool's TTFT p90 is at least this "
        "(an idle fleet spends all of a tiny TTFT before decode: that is not starvation)",
    )

    def config(self) -> StarvationConfig:
        return StarvationConfig(
            pre_decode_share_min=self.pre_decode_share_min,
            decode_busy_max=self.decode_busy_max,
            consecutive_windows=self.consecutive_windows,
            itl_slo_seconds=self.itl_slo_seconds,
            kv_usage_max=self.kv_usage_max,
            preemption_rate_max=self.preemption_rate_max,
        )


class BalanceSettings(Section):
    prefill_tokens_per_s_per_replica: float = Field(20_000.0, gt=0)
    decode_tokens_per_s_per_replica: float = Field(2_000.0, gt=0)
    tolerance: float = Field(0.5, gt=0)

    def config(self) -> BalanceConfig:
        return BalanceConfig(
            prefill_tokens_per_s_per_replica=self.prefill_tokens_per_s_per_replica,
            decode_tokens_per_s_per_replica=self.decode_tokens_per_s_per_replica,
            tolerance=self.tolerance,
        )


class SignalsSettings(Section):
    """The live engine (observer/signals/engine.py) and the thresholds of every fleet signal."""

    enabled: bool = Field(True, description="run the fleet-signals engine in `serve`")
    interval_seconds: float = Field(15.0, gt=0, description="tick (and source read) interval")
    window_seconds: float = Field(60.0, gt=0, description="records window each tick reads")
    max_records: int = Field(200_000, ge=100, description="records kept for the window (memory bound)")
    max_tenants: int = Field(1000, ge=1, description="tenants tracked by the cascade (rest ignored)")
    max_pods: int = Field(4096, ge=1, description="pods tracked (rest ignored)")
    max_evictors: int = Field(10, ge=1, description="evictors named per firing tenant")
    stale_after_seconds: float = Field(60.0, gt=0, description="a source older than this is blind")
    default_pool: str = Field("default", description="pool of a record whose pods no source knows")
    cascade: CascadeSettings = CascadeSettings()
    starvation: StarvationSettings = StarvationSettings()
    balance: BalanceSettings = BalanceSettings()

    @model_validator(mode="after")
    def _check(self) -> SignalsSettings:
        if self.window_seconds < self.interval_seconds:
            raise ValueError("signals.window_seconds must be >= signals.interval_seconds")
        return self

    def freshness(self) -> FreshnessConfig:
        return FreshnessConfig(stale_after_seconds=self.stale_after_seconds)
