"""AutoscalerSettings: the `autoscaler:` section of the pd-observer config, validated.

Parsed from the free-form `observer.config.Settings.autoscaler` dict with `from_settings`.
`policy_config()` turns it into the frozen `types.Config` the pure policy reads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from autoscaler.loop import RetryPolicy
from autoscaler.types import Config, DeciderConfig, PoolConfig, RoleConfig, WeightConfig
from observer import conventions as c
from observer.config import ConfigError, Settings
from observer.k8snames import ConfigKey, Namespace, ObjectName
from observer.sections import Section

TargetKind = Literal["Deployment", "StatefulSet", "LeaderWorkerSet", "CustomResource", "LLMInferenceService"]


# a (re)started controller's warm-start hold (service.warm_start); see docs/autoscaler.md
WARM_START_HOLD_SECONDS = 120.0


class TargetSettings(Section):
    """Where one role's replica count lives.

    Deployment / StatefulSet / LeaderWorkerSet / CustomResource: the `/scale` subresource.
    LLMInferenceService: merge patch of the owner (`spec.replicas` decode,
    `spec.prefill.replicas` prefill).
    """

    kind: TargetKind = "Deployment"
    name: ObjectName
    namespace: Namespace | None = None  # default: the pool's namespace
    group: str | None = None  # CustomResource only
    version: str | None = None  # CustomResource; LLMInferenceService: pin (default: discovery)
    plural: str | None = None

    @model_validator(mode="after")
    def _check(self) -> TargetSettings:
        if self.kind == "CustomResource" and not (self.group and self.version and self.plural):
            raise ValueError(f"target {self.name!r}: kind CustomResource needs group, version and plural")
        return self


class RoleSettings(Section):
    target: TargetSettings
    min: int = Field(1, ge=0)
    max: int = Field(8, ge=0)
    max_step: int = Field(2, ge=1)
    gpus_per_replica: int = Field(1, ge=1)
    capacity_tokens_per_s: float = Field(
        10_000.0,
        gt=0,
        description="bootstrap per-replica capacity at the SLO target (uncached prompt or output tok/s)",
    )

    @model_validator(mode="after")
    def _check(self) -> RoleSettings:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) > max ({self.max})")
        return self


EppSource = Literal["configmap", "llminferenceservice"]


class EppSettings(Section):
    """Where the pool's EndpointPickerConfig (scorer weights, P/D decider threshold) lives.

    configmap: key `key` of ConfigMap `config_map`; every change is followed by a rollout
    restart of Deployment `deployment` (both required).
    llminferenceservice: the KServe LLMInferenceService's `spec.router.scheduler.config`
    (`inline` edited by merge patch of the owner; a `ref` is followed to its ConfigMap); KServe
    re-renders and rolls the EPP itself. The service is `llm_inference_service`, default the
    pool's LLMInferenceService target.
    """

    source: EppSource = "configmap"
    config_map: ObjectName | None = Field(None, description="source configmap: the ConfigMap")
    key: ConfigKey = Field("config.yaml", description="source configmap: the key holding the YAML")
    deployment: ObjectName | None = Field(
        None, description="source configmap: EPP Deployment restarted after a change"
    )
    llm_inference_service: ObjectName | None = Field(
        None, description="source llminferenceservice: its name (default: the pool's target)"
    )
    profile: str | None = Field(None, description="only edit this scheduling profile (default: all)")

    @model_validator(mode="after")
    def _check(self) -> EppSettings:
        if self.source == "configmap":
            missing = [f for f in ("config_map", "deployment") if getattr(self, f) is None]
            if missing:
                raise ValueError(f"source configmap needs {' and '.join(missing)}")
            if self.llm_inference_service is not None:
                raise ValueError("llm_inference_service applies only to source llminferenceservice")
        else:
            extra = [f for f in ("config_map", "deployment") if getattr(self, f) is not None]
            if extra or "key" in self.model_fields_set:
                names = " and ".join([*extra, *(["key"] if "key" in self.model_fields_set else [])])
                raise ValueError(
                    f"{names}: only for source configmap (the LLMInferenceService names its config)"
                )
        return self


class WeightSettings(Section):
    bounds: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: {
            c.SCORER_PREFIX_CACHE: (1.0, 5.0),
            c.SCORER_QUEUE: (1.0, 3.0),
            c.SCORER_KV_UTILIZATION: (1.0, 3.0),
        }
    )
    step: float = Field(1.0, gt=0)
    min_interval_seconds: float = Field(900.0, ge=0, description="each change costs an EPP restart")
    relax_after_seconds: float | None = Field(
        3600.0,
        gt=0,
        description=(
            "a weight raised by the policy steps back toward the operator's (one step per change) "
            "once its signal has been quiet this long; null: raised weights stay"
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> WeightSettings:
        for scorer, (lo, hi) in self.bounds.items():
            if not 0 <= lo <= hi:
                raise ValueError(f"weight bounds of {scorer}: need 0 <= low <= high")
        return self


class DeciderSettings(Section):
    """The P/D decider lever (`prefix-based-pd-decider` `nonCachedTokens`; docs/autoscaler.md).
    Acts only when the pool's EPP config declares that decider with an explicit threshold."""

    enabled: bool = Field(True, description="raise the threshold to bridge a prefill cold start")
    baseline_tokens: int | None = Field(
        None,
        ge=1,
        description=(
            "the threshold to restore; null = the operator's: the value first read from the EPP config, "
            "or set there since by someone else, recalled from the audit log by a new leader"
        ),
    )
    max_tokens: int = Field(131_072, ge=1, description="never raise the threshold above this")
    max_decode_share: float = Field(
        0.25, ge=0, le=1, description="share of the decode pods' spare capacity local prefill may take"
    )
    min_interval_seconds: float = Field(60.0, ge=0, description="each change restarts the EPP")
    restore_below: float = Field(
        0.8, gt=0, le=1, description="restore once remote prefill work fits this share of ready prefill"
    )
    on_starvation: bool = Field(True, description="decode starvation also raises it (while bridging)")
    hold_decode: bool = Field(
        True, description="no decode scale-down while the lever is raised (its headroom is the bridge)"
    )
    keep_raised: bool = Field(
        False, description="while bridging, never lower a raised threshold (unless decode pressure)"
    )

    def to_config(self) -> DeciderConfig:
        return DeciderConfig(**self.model_dump())


class PoolSettings(Section):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    namespace: Namespace = "default"
    prefill: RoleSettings
    decode: RoleSettings
    gpu_budget: int | None = Field(None, ge=0)
    ttft_target_seconds: float = Field(2.0, gt=0)
    itl_target_seconds: float = Field(0.1, gt=0)
    target_utilization: float = Field(0.8, gt=0, le=1)
    scale_down_window_seconds: float = Field(300.0, ge=0)
    scale_up_window_seconds: float = Field(0.0, ge=0)
    scale_up_cooldown_seconds: float = Field(30.0, ge=0)
    scale_down_cooldown_seconds: float = Field(120.0, ge=0)
    stale_after_seconds: float = Field(120.0, gt=0)
    forecast_horizon_seconds: float = Field(60.0, ge=0)
    forecast_window_seconds: float = Field(300.0, gt=0)
    scale_up_while_starting: bool = True  # grow a role whose scale-up is still starting (never shrink it)
    cache_spill_target: float | None = Field(
        0.05,
        gt=0,
        lt=1,
        description="cache-residency floor: size prefill so at most this share of prefix hits "
        "comes from disk; null = off",
    )
    decode_kv_target: float | None = Field(
        0.9,
        gt=0,
        le=1,
        description="KV headroom floor: size decode so its KV usage peak stays at this; null = off",
    )
    prefill_wait_share: float | None = Field(
        0.25,
        gt=0,
        le=1,
        description="queueing floor: size prefill so the mean prefill queue wait (M/G/1 per "
        "replica over the prompts' sizes) is at most this share of the TTFT target; null = off",
    )
    cache_settle_seconds: float = Field(
        120.0, ge=0, description="learn the spill share only after ready prefill is unchanged this long"
    )
    cache_spill_smoothing: float = Field(
        0.3, gt=0, le=1, description="EW weight of a new spill reading in the cache-residency floor"
    )
    warm_shift_decode_spare: int | None = Field(
        1,
        ge=0,
        description="warm-start shift: while the warm-start hold keeps decode above its need, decode "
        "keeps its need plus this many replicas and the GPUs of the rest serve as prefill; null = "
        "off (the hold keeps the start split)",
    )
    weights: WeightSettings = WeightSettings()
    decider: DeciderSettings = DeciderSettings()
    epp: EppSettings | None = None

    @model_validator(mode="after")
    def _check(self) -> PoolSettings:
        if self.gpu_budget is not None:
            floor = (
                self.prefill.min * self.prefill.gpus_per_replica
                + self.decode.min * self.decode.gpus_per_replica
            )
            if floor > self.gpu_budget:
                raise ValueError(f"pool {self.name!r}: the minimum replicas need {floor} GPUs > gpu_budget")
        kinds = {self.prefill.target.kind, self.decode.target.kind}
        if "LLMInferenceService" in kinds and len(kinds) > 1:
            raise ValueError(f"pool {self.name!r}: an LLMInferenceService owns both roles")
        if (
            self.epp is not None
            and self.epp.source == "llminferenceservice"
            and self.epp.llm_inference_service is None
            and "LLMInferenceService" not in kinds
        ):
            raise ValueError(
                f"pool {self.name!r}: epp source llminferenceservice needs epp.llm_inference_service "
                "or LLMInferenceService targets"
            )
        return self

    def role(self, role: str) -> RoleSettings:
        return self.prefill if role == c.ROLE_PREFILL else self.decode

    def to_config(self) -> PoolConfig:
        return PoolConfig(
            name=self.name,
            roles={
                r: RoleConfig(
                    min_replicas=s.min,
                    max_replicas=s.max,
                    max_step=s.max_step,
                    gpus_per_replica=s.gpus_per_replica,
                    capacity_tokens_per_s=s.capacity_tokens_per_s,
                )
                for r, s in ((c.ROLE_PREFILL, self.prefill), (c.ROLE_DECODE, self.decode))
            },
            gpu_budget=self.gpu_budget,
            ttft_target_seconds=self.ttft_target_seconds,
            itl_target_seconds=self.itl_target_seconds,
            target_utilization=self.target_utilization,
            scale_down_window_seconds=self.scale_down_window_seconds,
            scale_up_window_seconds=self.scale_up_window_seconds,
            scale_up_cooldown_seconds=self.scale_up_cooldown_seconds,
            scale_down_cooldown_seconds=self.scale_down_cooldown_seconds,
            stale_after_seconds=self.stale_after_seconds,
            forecast_horizon_seconds=self.forecast_horizon_seconds,
            forecast_window_seconds=self.forecast_window_seconds,
            scale_up_while_starting=self.scale_up_while_starting,
            cache_spill_target=self.cache_spill_target,
            decode_kv_target=self.decode_kv_target,
            prefill_wait_share=self.prefill_wait_share,
            cache_settle_seconds=self.cache_settle_seconds,
            cache_spill_smoothing=self.cache_spill_smoothing,
            warm_shift_decode_spare=self.warm_shift_decode_spare,
            weights=WeightConfig(
                bounds=dict(self.weights.bounds),
                step=self.weights.step,
                min_interval_seconds=self.weights.min_interval_seconds,
                relax_after_seconds=self.weights.relax_after_seconds,
            ),
            decider=self.decider.to_config(),
        )


LEASE_INTERVALS = 4.0  # the default lease duration, in ticks


class LeaseSettings(Section):
    enabled: bool = True
    name: ObjectName = "pd-observer-autoscaler"
    namespace: Namespace | None = None  # default: the first pool's namespace
    identity: str | None = Field(None, description="default: the hostname (the pod name), read at runtime")
    duration_seconds: float | None = Field(
        None,
        gt=0,
        description="how long a record unchanged on a standby's clock stays the holder's; "
        f"null = {LEASE_INTERVALS:g} x interval_seconds (60 s with the default interval). At "
        "least 2 x interval_seconds: the leader renews once per tick",
    )


class RetrySettings(Section):
    backoff_seconds: tuple[float, ...] = Field(
        (0.5, 1.0, 2.0, 4.0), description="delays between attempts on temporary errors (attempts = len + 1)"
    )
    request_timeout_seconds: float = Field(10.0, gt=0)
    max_retry_after_seconds: float = Field(
        30.0, ge=0, description="a server's Retry-After lengthens a delay up to this (e.g. a 429)"
    )

    @model_validator(mode="after")
    def _check(self) -> RetrySettings:
        if any(d < 0 for d in self.backoff_seconds):
            raise ValueError("backoff_seconds must be >= 0")
        return self


class AutoscalerSettings(Section):
    enabled: bool = Field(False, description="run the control loop inside `serve`")
    mode: Literal["observe", "dry-run", "apply"] = "observe"
    interval_seconds: float = Field(15.0, gt=0)
    warm_start_hold_seconds: float | None = Field(
        WARM_START_HOLD_SECONDS,
        ge=0,
        description="a (re)started controller keeps the current replicas as a scale-down "
        "recommendation this long (two observation windows); null = the whole scale-down window",
    )
    field_manager: str = Field(c.K8S_FIELD_MANAGER, min_length=1, max_length=128)
    gpu_budget: int | None = Field(
        None,
        ge=0,
        description="GPUs of all pools together (each pool's gpu_budget still applies); null = none",
    )
    pools: tuple[PoolSettings, ...] = ()
    lease: LeaseSettings = LeaseSettings()
    retry: RetrySettings = RetrySettings()

    @model_validator(mode="after")
    def _check(self) -> AutoscalerSettings:
        names = [p.name for p in self.pools]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate pool names: {', '.join(dupes)}")
        if (
            self.lease.duration_seconds is not None
            and self.lease.duration_seconds < 2 * self.interval_seconds
        ):
            raise ValueError(
                f"lease.duration_seconds ({self.lease.duration_seconds:g}) must be at least 2 x "
                f"interval_seconds ({self.interval_seconds:g}): the leader renews the lease once "
                "per tick, and a standby takes over after the duration without a renewal"
            )
        if not math.isfinite(self.lease_duration_seconds):
            raise ValueError(
                f"interval_seconds ({self.interval_seconds:g}) is too large: the lease lasts "
                f"{LEASE_INTERVALS:g} x interval_seconds (or set lease.duration_seconds)"
            )
        if self.gpu_budget is not None:
            floor = sum(
                p.prefill.min * p.prefill.gpus_per_replica + p.decode.min * p.decode.gpus_per_replica
                for p in self.pools
            )
            if floor > self.gpu_budget:
                raise ValueError(
                    f"the pools' minimum replicas need {floor} GPUs > gpu_budget {self.gpu_budget}"
                )
        return self

    @property
    def lease_duration_seconds(self) -> float:
        """`lease.duration_seconds`, or its default from the interval."""
        d = self.lease.duration_seconds
        return d if d is not None else LEASE_INTERVALS * self.interval_seconds

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(self.retry.backoff_seconds, self.retry.max_retry_after_seconds)

    def policy_config(self) -> Config:
        return Config({p.name: p.to_config() for p in self.pools}, gpu_budget=self.gpu_budget)

    def pool(self, name: str) -> PoolSettings:
        for p in self.pools:
            if p.name == name:
                return p
        raise KeyError(name)


def parse(raw: Mapping[str, Any]) -> AutoscalerSettings:
    """Validate an `autoscaler:` mapping; ConfigError with one line naming the bad field."""
    try:
        return AutoscalerSettings.model_validate(dict(raw))
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in ("autoscaler", *first["loc"]))
        msg = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"invalid configuration: {loc}: {msg}") from exc


def from_settings(settings: Settings) -> AutoscalerSettings:
    return parse(settings.autoscaler)
