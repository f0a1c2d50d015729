"""Guardrails: pure functions that bound what the policy may ask for.

Each takes plain values and returns the bounded value plus the reason codes that applied,
so `policy.decide` can compose them and the audit log can say which one acted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from autoscaler.types import PoolConfig, PoolState, ReasonCode, Recommendation, RoleConfig, RoleStatus


def is_stale(age_seconds: float, cfg: PoolConfig) -> bool:
    """Data older than `stale_after_seconds` (or a nonsense age) is stale."""
    return not (0.0 <= age_seconds <= cfg.stale_after_seconds)


def unstable_reason(status: RoleStatus) -> str | None:
    """Why a target is not stable enough to act on, or None when it is."""
    if not status.generation_current:
        return "observedGeneration behind generation"
    if status.rollout_in_progress:
        return "rollout in progress"
    if status.ready != status.replicas:
        return f"ready {status.ready} != desired {status.replicas}"
    return None


def scaling_up(status: RoleStatus) -> bool:
    """A scale-up still starting: generation observed, no template rollout and no surplus old
    pods, only fewer pods ready than desired (what a Deployment/LWS shows right after its
    replicas were raised). Growing further then is safe — new pods only add capacity and no
    in-flight request is touched — so the policy may scale such a role *up* (never down)."""
    return status.generation_current and not status.rollout_in_progress and status.ready < status.replicas


def replicas_for(work: float, capacity: float, utilization: float) -> int:
    """Replicas needed so each runs at most `utilization` of `capacity` (0 when no work)."""
    if work <= 0:
        return 0
    if capacity <= 0 or utilization <= 0:
        raise ValueError("capacity and utilization must be positive")
    return math.ceil(work / (capacity * utilization) - 1e-9)


def startup_remaining(last_scale_up: float | None, now: float, startup: float, *, starting: bool) -> float:
    """Seconds until capacity asked for now (or still starting) serves: the full cold start when
    nothing is starting, else what is left of the last scale-up's (never negative)."""
    if startup <= 0:
        return 0.0
    if starting and last_scale_up is not None:
        return max(0.0, startup - max(0.0, now - last_scale_up))
    return startup


def startup_backlog_rate(work: float, ready_capacity: float, remaining: float, drain: float) -> float:
    """Extra rate that drains, within `drain` seconds, the backlog that builds while `work`
    exceeds the ready capacity for the `remaining` seconds of a cold start (0 when it does not)."""
    if remaining <= 0 or drain <= 0:
        return 0.0
    return max(0.0, work - max(0.0, ready_capacity)) * remaining / drain


def n_minus_one_floor(work: float, capacity: float) -> int:
    """Fewest replicas that carry `work` without any exceeding capacity at the SLO target.

    A scale-down from N to N-1 puts load x N/(N-1) on each remaining replica; it is refused
    when that would exceed capacity, i.e. when N-1 is below this floor.
    """
    return replicas_for(work, capacity, 1.0)


def clamp_bounds(desired: int, rc: RoleConfig) -> tuple[int, tuple[ReasonCode, ...]]:
    if desired > rc.max_replicas:
        return rc.max_replicas, (ReasonCode.CLAMPED_MAX,)
    if desired < rc.min_replicas:
        return rc.min_replicas, (ReasonCode.CLAMPED_MIN,)
    return desired, ()


def clamp_step(current: int, desired: int, max_step: int) -> tuple[int, tuple[ReasonCode, ...]]:
    if desired > current + max_step:
        return current + max_step, (ReasonCode.STEP_LIMITED,)
    if desired < current - max_step:
        return current - max_step, (ReasonCode.STEP_LIMITED,)
    return desired, ()


def window_recommendations(
    history: Sequence[Recommendation], role: str, now: float, window: float
) -> list[int]:
    return [r.replicas for r in history if r.role == role and now - window <= r.at <= now]


def stabilize(
    history: Sequence[Recommendation],
    role: str,
    now: float,
    raw: int,
    current: int,
    *,
    up_window: float,
    down_window: float,
) -> tuple[int, tuple[ReasonCode, ...]]:
    """HPA-style stabilization: scale down only to the highest recommendation over the down
    window, scale up only to the lowest over the up window. `history` excludes `raw`."""
    ups = [*window_recommendations(history, role, now, up_window), raw]
    downs = [*window_recommendations(history, role, now, down_window), raw]
    up_rec, down_rec = min(ups), max(downs)
    if current < up_rec:
        return up_rec, (() if up_rec == raw else (ReasonCode.STABILIZED_UP,))
    if current > down_rec:
        return down_rec, (() if down_rec == raw else (ReasonCode.STABILIZED_DOWN,))
    if raw > current:
        return current, (ReasonCode.STABILIZED_UP,)
    if raw < current:
        return current, (ReasonCode.STABILIZED_DOWN,)
    return current, ()


def in_cooldown(state: PoolState, role: str, up: bool, now: float, cfg: PoolConfig) -> bool:
    """Scale-up: not within `scale_up_cooldown` of the last scale-up. Scale-down: not within
    `scale_down_cooldown` of any scale action on the role (never right after growing)."""
    last_up = state.last_scale_up.get(role)
    last_down = state.last_scale_down.get(role)
    if up:
        return last_up is not None and now - last_up < cfg.scale_up_cooldown_seconds
    last_any = max((t for t in (last_up, last_down) if t is not None), default=None)
    return last_any is not None and now - last_any < cfg.scale_down_cooldown_seconds


def gpus(replicas: Mapping[str, int], roles: Mapping[str, RoleConfig]) -> int:
    return sum(n * roles[r].gpus_per_replica for r, n in replicas.items())


def enforce_budget(
    desired: Mapping[str, int],
    current: Mapping[str, int],
    floors: Mapping[str, int],
    roles: Mapping[str, RoleConfig],
    budget: int | None,
) -> tuple[dict[str, int], dict[str, tuple[ReasonCode, ...]]]:
    """Bring the desired counts within the GPU budget; never above it, whatever the inputs.

    Growth is trimmed first (BUDGET_LIMITED). If the fleet is still over budget (it already
    was, or grew elsewhere), roles shrink toward their minimum, the one with the largest
    surplus over its load floor first (OVER_BUDGET). Requires sum(min x gpus) <= budget,
    which settings validate.
    """
    out = dict(desired)
    why: dict[str, list[ReasonCode]] = {r: [] for r in out}
    if budget is None:
        return out, dict.fromkeys(out, ())
    # 1. trim growth, the role growing most first
    while gpus(out, roles) > budget:
        growing = [r for r in out if out[r] > current.get(r, 0) and out[r] > roles[r].min_replicas]
        if not growing:
            break
        r = max(growing, key=lambda x: (out[x] - current.get(x, 0), x))
        out[r] -= 1
        if ReasonCode.BUDGET_LIMITED not in why[r]:
            why[r].append(ReasonCode.BUDGET_LIMITED)
    # 2. still over: shrink toward min, largest surplus over its floor first
    while gpus(out, roles) > budget:
        shrinkable = [r for r in out if out[r] > roles[r].min_replicas]
        if not shrinkable:  # pragma: no cover - settings forbid sum(min) > budget
            break
        r = max(shrinkable, key=lambda x: (out[x] - floors.get(x, 0), x))
        out[r] -= 1
        if ReasonCode.OVER_BUDGET not in why[r]:
            why[r].append(ReasonCode.OVER_BUDGET)
    return out, {r: tuple(v) for r, v in why.items()}


def clamp_weight(value: float, bounds: tuple[float, float]) -> float:
    lo, hi = bounds
    return min(hi, max(lo, value))


def weight_rate_limited(state: PoolState, now: float, cfg: PoolConfig) -> bool:
    last = state.last_weight_change
    return last is not None and now - last < cfg.weights.min_interval_seconds
