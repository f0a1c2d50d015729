"""Frozen value types of the control loop: what `policy.decide` reads and returns.

Everything here is data: no I/O, no clock. Times are float seconds (epoch or simulated),
always passed in. `None` means "unknown" (never zero-filled): the policy holds on unknown.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from observer import conventions as c

ROLES: tuple[str, ...] = c.ROLES  # (prefill, decode)


class ReasonCode(StrEnum):
    """Why a decision came out as it did (audited, exported as `reason` label)."""

    STEADY = "steady"  # nothing to do
    CAPACITY_FLOOR = "capacity_floor"  # demand / per-replica capacity asks for this many
    FORECAST = "forecast"  # the short-horizon forecast raised the floor
    CAPACITY_CORRECTED = "capacity_corrected"  # TTFT missed under the modelled capacity: lowered
    STARTUP_BACKLOG = "startup_backlog"  # backlog growing until starting pods serve raised the floor
    ZERO_TRAFFIC = "zero_traffic"  # no demand: scale down to min
    DECODE_STARVATION = "decode_starvation"  # shift capacity toward prefill
    DECODE_PRESSURE = "decode_pressure"  # add decode
    CACHE_CASCADE = "cache_cascade"  # raise the prefix-cache scorer weight
    LOAD_IMBALANCE = "load_imbalance"  # raise queue / kv-utilization weights
    CLAMPED_MIN = "clamped_min"
    CLAMPED_MAX = "clamped_max"
    STEP_LIMITED = "step_limited"
    STABILIZED_DOWN = "stabilized_down"  # scale-down held by the max-over-window rule
    STABILIZED_UP = "stabilized_up"  # scale-up held by the min-over-window rule
    COOLDOWN = "cooldown"
    BUDGET_LIMITED = "budget_limited"  # growth refused: GPU budget
    BUDGET_REBALANCE = "budget_rebalance"  # at budget: capacity moved between roles
    WARM_SHIFT = "warm_shift"  # decode held only by the warm-start seed serves as prefill
    OVER_BUDGET = "over_budget"  # current fleet above budget: brought back under it
    SCALE_DOWN_REFUSED = "scale_down_refused"  # load x N/(N-1) would break the target
    TARGET_NOT_STABLE = "target_not_stable"  # rollout / generation / readiness gating
    SCALE_UP_IN_PROGRESS = "scale_up_in_progress"  # pods still starting: only further scale-up
    MISSING_DATA = "missing_data"
    STALE_DATA = "stale_data"
    WEIGHT_RATE_LIMITED = "weight_rate_limited"
    WEIGHT_AT_BOUND = "weight_at_bound"
    WEIGHT_OUT_OF_BOUNDS = "weight_out_of_bounds"  # current weight outside bounds: brought back
    WEIGHT_RELAXED = "weight_relaxed"  # its signal quiet for relax_after_seconds: a step back down
    PREFILL_OVERFLOW = "prefill_overflow"  # ready prefill cannot carry the work: decider raised
    PREFILL_RECOVERED = "prefill_recovered"  # ready prefill carries the work again: decider restored
    DECIDER_RATE_LIMITED = "decider_rate_limited"  # decider change held: EPP restarted recently
    EPP_ROLLOUT = "epp_rollout"  # EPP config change held: the EPP's last restart is still rolling out
    DECODE_NO_HEADROOM = "decode_no_headroom"  # decode pods have no spare capacity to prefill locally
    DECIDER_BRIDGE = "decider_bridge"  # decode scale-down held: its headroom carries bridged prefill
    KV_HEADROOM = "kv_headroom"  # decode sized so its KV usage peak stays under decode_kv_target
    CACHE_RESIDENCY = "cache_residency"  # prefix hits spill to the slowest tier: grow prefill's cache
    PREFILL_QUEUEING = "prefill_queueing"  # long prompts queue behind each other: the TTFT wait budget


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RoleStatus:
    """What the actuator read from one role's target (Deployment, LWS, CR, ...)."""

    replicas: int  # spec (desired) replicas as currently set
    ready: int  # ready replicas
    generation_current: bool = True  # status.observedGeneration == metadata.generation
    rollout_in_progress: bool = False

    @property
    def stable(self) -> bool:
        return self.generation_current and not self.rollout_in_progress and self.ready == self.replicas


@dataclass(frozen=True, slots=True)
class Demand:
    """Pool demand over the observation window; `age_seconds` = now - newest data point."""

    prompt_tokens_per_s: float
    output_tokens_per_s: float
    hit_rate: float  # token-weighted prefix-cache hit rate, 0..1
    requests_per_s: float
    age_seconds: float = 0.0
    ttft_p90_seconds: float | None = None  # observed TTFT p90 over the window (None = unknown)
    # shares of prompt tokens whose prefix hit was served from DRAM / disk (part of hit_rate)
    dram_hit_share: float = 0.0
    disk_hit_share: float = 0.0
    # arrival side when the source reads it (audit only; None = unknown or not read)
    arrivals_per_s: float | None = None  # router arrival rate (EPP request counter)
    waiting_requests: int | None = None  # vLLM num_requests_waiting over the prefill pods
    # uncached prompt work by request size: (exclusive upper bound of a request's uncached
    # prompt tokens, uncached tok/s of the requests in [previous bound, bound)), bounds ascending;
    # what the P/D decider threshold splits (empty = unknown: the decider lever holds)
    uncached_by_size: tuple[tuple[int, float], ...] = ()
    # second moments of the requests' prompt tokens by how their prefill is paid, per second of
    # window (scaled like the prompt rate): what the queueing floor reads (None = unknown)
    prompt_moments: PromptMoments | None = None


@dataclass(frozen=True, slots=True)
class PromptMoments:
    """Σ over the window's requests of products of their uncached (u), DRAM-hit (d) and disk-hit
    (k) prompt tokens, divided by the window's span: uu, dd, kk, ud, uk, dk (tokens²/s). With the
    tier costs a and b, Σ w² / span of the per-request prefill work w = u + a·d + b·k is
    uu + a²dd + b²kk + 2a·ud + 2b·uk + 2ab·dk (`work_sq`)."""

    uu: float = 0.0
    dd: float = 0.0
    kk: float = 0.0
    ud: float = 0.0
    uk: float = 0.0
    dk: float = 0.0

    def work_sq(self, dram_cost: float, disk_cost: float) -> float:
        a, b = dram_cost, disk_cost
        squares = self.uu + a * a * self.dd + b * b * self.kk
        return squares + 2 * (a * self.ud + b * self.uk + a * b * self.dk)


@dataclass(frozen=True, slots=True)
class Signals:
    """Fleet signals for one pool. Each `None` = unknown (stale or not computed)."""

    starvation: bool | None = None
    decode_pressure: bool | None = None
    cascade_tenants: tuple[str, ...] | None = None
    load_imbalance: bool | None = None
    age_seconds: float = 0.0
    # the decode pods' KV in use, Σ kv_cache_usage_perc in pod-equivalents, at its highest over the
    # last scale-down window (None = unknown: the pods' gauges are not read)
    decode_kv_peak: float | None = None


@dataclass(frozen=True, slots=True)
class CapacitySamples:
    """Observations to learn per-replica capacities from (see `capacity`).

    prefill: (uncached prompt tokens, prefill seconds) per request;
    decode: (running batch size, inter-token latency seconds) per pod sample.
    """

    prefill: tuple[tuple[float, float], ...] = ()
    decode: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True, slots=True)
class PoolObservation:
    pool: str
    roles: Mapping[str, RoleStatus]  # ROLE_PREFILL / ROLE_DECODE; missing = unreadable
    demand: Demand | None
    signals: Signals = Signals()
    weights: Mapping[str, float] | None = None  # current scorer weights, None = unknown
    samples: CapacitySamples = CapacitySamples()
    # the P/D decider's nonCachedTokens as configured; None = no decider (or unreadable)
    decider_threshold: int | None = None
    # the EPP runs its configured config (its last restart has rolled out): True; still rolling
    # out: False; None = the route cannot tell (then `decider.min_interval_seconds` stands in)
    epp_rolled_out: bool | None = None


# --------------------------------------------------------------------------------------------
# State carried between ticks (returned in Effects, passed back in TickInput)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Recommendation:
    at: float
    role: str
    replicas: int
    # the warm-start seed (`service.warm_start`): the fleet's size at start, not computed from data
    seeded: bool = False


@dataclass(frozen=True, slots=True)
class CapacityEstimate:
    """Per-replica capacities at the SLO targets, and the regression state behind them."""

    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    # exponentially weighted sums for y = a + b x: (w, sx, sy, sxx, sxy)
    prefill_fit: tuple[float, float, float, float, float] = (0.0, 0.0, 0.0, 0.0, 0.0)
    decode_fit: tuple[float, float, float, float, float] = (0.0, 0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True, slots=True)
class PoolState:
    recommendations: tuple[Recommendation, ...] = ()  # bounded by the longest window
    last_scale_up: Mapping[str, float] = field(default_factory=dict)  # role -> time
    last_scale_down: Mapping[str, float] = field(default_factory=dict)
    last_weight_change: float | None = None
    demand_history: tuple[tuple[float, float, float], ...] = ()  # (t, prefill work, decode work)
    capacity: CapacityEstimate | None = None
    # SLO feedback on the prefill capacity (1 = as configured/learned; see policy._correct)
    prefill_correction: float = 1.0
    last_decider_change: float | None = None
    # when the EPP last read as rolled out (`PoolObservation.epp_rolled_out`): a decider change
    # is in effect once such a reading comes after it, whatever restarted the EPP since
    epp_rolled_out_seen: float | None = None
    decider_baseline: int | None = None  # the operator's threshold, first seen (when not configured)
    # (from, to) of the last decider change this controller decided (or recalled): a threshold
    # read that is neither was set by someone else, the operator's new baseline
    decider_written: tuple[int, int] | None = None
    # the same per scorer (policy._weights), and when its signal last asked for a raise
    weight_baseline: Mapping[str, float] = field(default_factory=dict)
    weight_written: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    weight_bumped: Mapping[str, float] = field(default_factory=dict)
    # prefill replicas whose aggregate cache keeps the spill share at its target (policy._residency)
    residency_floor: int = 0
    residency_scale: float | None = None  # EW mean of λ, replicas per e-fold of the spill share
    prefill_ready: tuple[int, float] | None = None  # (ready prefill replicas, seen since)


@dataclass(frozen=True, slots=True)
class PolicyState:
    pools: Mapping[str, PoolState] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TickInput:
    now: float
    pools: tuple[PoolObservation, ...]
    state: PolicyState = PolicyState()


# --------------------------------------------------------------------------------------------
# Config (built from settings.AutoscalerSettings.policy_config())
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RoleConfig:
    min_replicas: int = 1
    max_replicas: int = 8
    max_step: int = 2
    gpus_per_replica: int = 1
    capacity_tokens_per_s: float = 10_000.0  # bootstrap per-replica capacity at the SLO target


@dataclass(frozen=True, slots=True)
class WeightConfig:
    bounds: Mapping[str, tuple[float, float]] = field(
        default_factory=lambda: {
            c.SCORER_PREFIX_CACHE: (1.0, 5.0),
            c.SCORER_QUEUE: (1.0, 3.0),
            c.SCORER_KV_UTILIZATION: (1.0, 3.0),
        }
    )
    step: float = 1.0
    min_interval_seconds: float = 900.0  # each change costs an EPP rollout restart
    # a raised weight steps back toward the operator's once its signal has been quiet this long
    relax_after_seconds: float | None = 3600.0


@dataclass(frozen=True, slots=True)
class DeciderConfig:
    """The P/D decider lever (`prefix-based-pd-decider` `nonCachedTokens`, docs/autoscaler.md).

    When the *ready* prefill replicas cannot carry the prefill work at the target utilization
    (a burst, or while a scale-up is still cold-starting), the threshold is raised so that the
    smaller prompts are prefilled on the decode pods, as far as their spare capacity allows;
    once ready prefill carries the work at the operator's threshold again, it is restored.
    Each change restarts the EPP, so changes are at least `min_interval_seconds` apart."""

    enabled: bool = True
    # the operator's threshold to restore; None = the value first read from the config
    baseline_tokens: int | None = None
    max_tokens: int = 131_072  # never raise above this
    # share of the decode pods' spare capacity (1 - decode utilization at the ITL target) that
    # local prefill may take: local prefill stalls the decode steps it joins (ITL) and moves
    # prefixes into the decode pods' smaller caches; 0.25 measured best on the control benchmark
    # (docs/performance.md: 0.1 gives up burst attainment, 0.5 loses on conversation replay)
    max_decode_share: float = 0.25
    min_interval_seconds: float = 60.0
    # hysteresis: restore only once the remote work at the operator's threshold is within this
    # share of the ready prefill capacity (raise as soon as it exceeds all of it)
    restore_below: float = 0.8
    # decode starvation while the capacity model says prefill copes also raises the threshold
    on_starvation: bool = True
    # while the lever is raised, decode is not scaled down (its headroom is the bridge); within
    # the pool's GPU budget the prefill growth is trimmed instead
    hold_decode: bool = True
    # while bridging, a raised threshold is not lowered (unless decode pressure fires): fewer EPP
    # restarts and no work pushed back onto the backlogged prefill pods, but conversation turns
    # keep moving into the decode pods' caches (docs/performance.md: story +0.03, Mooncake
    # conversation -0.03), so off by default
    keep_raised: bool = False


@dataclass(frozen=True, slots=True)
class PoolConfig:
    name: str
    roles: Mapping[str, RoleConfig] = field(default_factory=lambda: {r: RoleConfig() for r in ROLES})
    gpu_budget: int | None = None
    ttft_target_seconds: float = 2.0
    itl_target_seconds: float = 0.1
    target_utilization: float = 0.8  # size so each replica runs at most this share of capacity
    scale_down_window_seconds: float = 300.0
    scale_up_window_seconds: float = 0.0
    scale_up_cooldown_seconds: float = 30.0
    scale_down_cooldown_seconds: float = 120.0
    stale_after_seconds: float = 120.0
    forecast_horizon_seconds: float = 60.0
    forecast_window_seconds: float = 300.0
    # a role whose scale-up is still starting may grow further when the need persists (never
    # shrink); False = classic gating, no move at all until ready == desired
    scale_up_while_starting: bool = True
    # Prefill work of a prefix hit served from a lower tier, relative to recomputing the token
    # (recompute tok/s / tier load tok/s): 8B on an H100 recomputes ~40k tok/s; at 128 KiB of KV
    # per token DRAM over PCIe (~8 GB/s) loads ~61k tok/s (0.65), local NVMe (~2 GB/s) ~15k
    # tok/s (2.6). HBM hits are free. 0 = count every hit as free (tier-unaware).
    dram_hit_cost: float = 0.65
    disk_hit_cost: float = 2.6
    # Cold-start lookahead: while demand exceeds the *ready* capacity, the backlog keeps growing
    # until new pods serve (`startup_seconds` after a scale-up: image, weights, CUDA graphs);
    # the floor adds what drains that projected backlog within `backlog_drain_seconds`.
    # 0 = off (size for the current demand only; the default until Settings expose it: the
    # control benchmark sets the twin's 90 s).
    startup_seconds: float = 0.0
    backlog_drain_seconds: float = 60.0
    # SLO feedback: when prefill starves decode (TTFT missed, pre-decode time dominating) although
    # the capacity model puts prefill below `target_utilization`, the per-replica prefill capacity
    # is too optimistic for this traffic (long prompts queue behind each other, prefix hits served
    # from slow tiers): it is scaled down to what the observation supports, never below
    # `prefill_correction_min` of the estimate, and recovers by `prefill_correction_recovery` per
    # tick while the TTFT p90 stays under half its target.
    prefill_correction_min: float = 0.25
    prefill_correction_recovery: float = 0.01
    # Cache-residency floor (reason `cache_residency`): a prefix hit loaded from disk costs more
    # than recomputing it, and more prefill *compute* does not help; more prefill *replicas* do,
    # each bringing its HBM and DRAM. From the share of hit tokens served from disk (the spill
    # share s) on n ready prefill replicas, λ = -n / ln s (capacity.spill_scale) is smoothed
    # (EW weight `cache_spill_smoothing` per reading) and the prefill floor is
    # ⌈λ · -ln cache_spill_target⌉. Read only once the ready prefill count has been unchanged for
    # `cache_settle_seconds` (a new pod's cache starts empty), and only once some spill has been
    # seen; a reading without spill then counts as a quarter of the target (a gentle step
    # down); zero traffic clears it. Before any spill, a pool that serves at least this share of
    # its hit tokens from DRAM (its caches in use beyond HBM) steps down one settled size at a
    # time (floor = ready - 1), so the spill is read before it grows. None = off.
    cache_spill_target: float | None = 0.05
    # KV headroom floor of decode (reason `kv_headroom`): decode replicas are memory- as well as
    # throughput-bound (long contexts fill the KV cache long before the output rate is reached).
    # With the decode pods' KV in use at its peak, P pod-equivalents (Signals.decode_kv_peak: Σ
    # of their vLLM kv_cache_usage_perc, highest over the last scale-down window), the floor is
    # ⌈P / decode_kv_target⌉: the count that holds that KV at the target usage. None = off.
    decode_kv_target: float | None = 0.9
    # Queueing floor of prefill (reason `prefill_queueing`): the capacity floor sizes for the mean
    # work, but prompts differ by orders of magnitude and a long one holds its replica for
    # seconds while the requests behind it wait. The floor is the fewest prefill replicas whose
    # mean queueing wait, M/G/1 per replica over the window's per-request prefill work
    # (capacity.queueing_replicas, Demand.prompt_moments), is at most this share of the TTFT
    # target. None = off.
    prefill_wait_share: float | None = 0.25
    cache_settle_seconds: float = 120.0
    cache_spill_smoothing: float = 0.3
    # Warm-start shift (reason `warm_shift`): after a (re)start the warm-start seed holds each
    # role at its start size, so decode replicas the data does not ask for sit idle until the
    # seed ages out. Instead, decode keeps its need (floors, data-driven window) plus this many
    # spare replicas, and the GPUs of the rest serve as prefill on top of prefill's own need: an
    # idle prefill replica still holds prefix cache and takes a prompt burst without a cold
    # start. Prefill records its shifted count as its recommendation, so its own scale-down
    # window decides when those replicas go. None = off (the seed holds the start split).
    warm_shift_decode_spare: int | None = 1
    capacity_learning_rate: float = 0.05  # EW weight of a new sample in the capacity fits
    capacity_min_samples: float = 20.0  # effective samples before the fit overrides the bootstrap
    weights: WeightConfig = WeightConfig()
    decider: DeciderConfig = DeciderConfig()


@dataclass(frozen=True, slots=True)
class Config:
    pools: Mapping[str, PoolConfig]
    # GPUs of every pool together (each pool's own `gpu_budget` still applies); None = no limit
    gpu_budget: int | None = None


# --------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RoleDecision:
    pool: str
    role: str
    current: int
    desired: int
    reasons: tuple[ReasonCode, ...]

    @property
    def changed(self) -> bool:
        return self.desired != self.current


@dataclass(frozen=True, slots=True)
class WeightChange:
    pool: str
    scorer: str
    current: float
    desired: float
    reasons: tuple[ReasonCode, ...]
    baseline: float | None = None  # the operator's weight (audited and recalled, as DeciderChange's)


@dataclass(frozen=True, slots=True)
class DeciderChange:
    pool: str
    current: int
    desired: int
    reasons: tuple[ReasonCode, ...]
    # the operator's threshold the change is relative to: audited, and recalled by a controller
    # that (re)takes the lead (`ports.DeciderMemory`), so a raise in effect is still restored
    baseline: int | None = None


@dataclass(frozen=True, slots=True)
class Hold:
    pool: str
    role: str | None  # None: the whole pool
    reason: ReasonCode
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Effects:
    decisions: tuple[RoleDecision, ...]
    weight_changes: tuple[WeightChange, ...]
    holds: tuple[Hold, ...]
    state: PolicyState
    decider_changes: tuple[DeciderChange, ...] = ()

    @property
    def scale_actions(self) -> tuple[RoleDecision, ...]:
        """Changed roles, scale-downs first (frees GPUs before growth claims them)."""
        changed = [d for d in self.decisions if d.changed]
        return tuple(sorted(changed, key=lambda d: (d.desired > d.current, d.pool, d.role)))
