"""The pure policy: `decide(TickInput, Config) -> Effects`. No I/O, no clock.

Per pool, two timescales:
1. a capacity floor from demand — prefill work = prompt tok/s x (1 - hit rate) against the
   per-replica prefill capacity, decode work = output tok/s against the per-replica decode
   capacity (capacities learned online, see `capacity`), led by a short-horizon forecast;
2. reactive moves from the signals — decode starvation adds prefill (and, at the GPU
   budget, takes it from decode), decode pressure adds decode, a cache-partition cascade
   raises the prefix-cache scorer weight, load imbalance raises the queue and
   kv-utilization weights.
After a (re)start, the warm-start shift moves the decode replicas only the warm-start seed
holds to prefill (`_warm_shift`). Then the guardrails (see `guardrails` and
docs/autoscaler.md) in a fixed order: stabilization → cooldown → N/(N-1) refusal → max step →
min/max → GPU budget (+ rebalance).
Missing/stale data or an unstable target holds the pool's replicas unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import TypeVar

from autoscaler import capacity as cap
from autoscaler import guardrails as g
from autoscaler.types import (
    ROLES,
    Config,
    DeciderChange,
    Demand,
    Effects,
    Hold,
    PolicyState,
    PoolConfig,
    PoolObservation,
    PoolState,
    ReasonCode,
    Recommendation,
    RoleDecision,
    Signals,
    TickInput,
    WeightChange,
)
from observer import conventions as c

R = ReasonCode
V = TypeVar("V", int, float)  # a lever value: the decider threshold, a scorer weight


def decide(inp: TickInput, cfg: Config) -> Effects:
    """One control tick over every observed pool."""
    decisions: list[RoleDecision] = []
    weights: list[WeightChange] = []
    deciders: list[DeciderChange] = []
    holds: list[Hold] = []
    new_pools: dict[str, PoolState] = dict(inp.state.pools)
    for obs in inp.pools:
        pcfg = cfg.pools.get(obs.pool)
        if pcfg is None:
            holds.append(Hold(obs.pool, None, R.MISSING_DATA, "pool not configured"))
            continue
        st = inp.state.pools.get(obs.pool, PoolState())
        d, w, x, h, new_st = _decide_pool(obs, pcfg, st, inp.now)
        decisions.extend(d)
        weights.extend(w)
        deciders.extend(x)
        holds.extend(h)
        new_pools[obs.pool] = new_st
    if cfg.gpu_budget is not None:
        decisions = _global_budget(decisions, cfg, cfg.gpu_budget)
    return Effects(tuple(decisions), tuple(weights), tuple(holds), PolicyState(new_pools), tuple(deciders))


def _global_budget(decisions: list[RoleDecision], cfg: Config, budget: int) -> list[RoleDecision]:
    """Keep every pool together within `budget` GPUs: growth is trimmed first (the role growing
    most first), then roles shrink toward their minimum (`guardrails.enforce_budget` over
    pool/role keys). Roles the policy held this tick (missing data, unstable target) are left
    as they are and their GPUs counted; so are pools without a config."""

    def key(d: RoleDecision) -> str:
        return f"{d.pool}/{d.role}"

    def held(d: RoleDecision) -> bool:
        return d.pool not in cfg.pools or any(r in _HELD for r in d.reasons)

    roles = {key(d): cfg.pools[d.pool].roles[d.role] for d in decisions if d.pool in cfg.pools}
    free = {key(d): d for d in decisions if not held(d)}
    fixed = g.gpus({key(d): d.current for d in decisions if held(d) and d.pool in cfg.pools}, roles)
    want = {k: d.desired for k, d in free.items()}
    if g.gpus(want, roles) + fixed <= budget:
        return decisions
    current = {k: d.current for k, d in free.items()}
    out, why = g.enforce_budget(want, current, {}, roles, max(0, budget - fixed))
    return [
        replace(d, desired=out[key(d)], reasons=tuple(dict.fromkeys((*d.reasons, *why[key(d)]))))
        if key(d) in free
        else d
        for d in decisions
    ]


def _decide_pool(
    obs: PoolObservation, cfg: PoolConfig, st: PoolState, now: float
) -> tuple[list[RoleDecision], list[WeightChange], list[DeciderChange], list[Hold], PoolState]:
    pool = obs.pool
    holds: list[Hold] = []
    est = cap.learn(st.capacity, obs.samples, cfg)
    st = replace(st, capacity=est)
    if obs.epp_rolled_out:
        st = replace(st, epp_rolled_out_seen=now)
    current = {r: obs.roles[r].replicas for r in ROLES if r in obs.roles}

    # ---- can we act on replicas at all?
    missing_roles = [r for r in ROLES if r not in obs.roles]
    for r in missing_roles:
        holds.append(Hold(pool, r, R.MISSING_DATA, "target status unknown"))
    up_only: set[str] = set()
    for r, status in obs.roles.items():
        why = g.unstable_reason(status)
        if why is not None and cfg.scale_up_while_starting and g.scaling_up(status):
            up_only.add(r)  # a scale-up still starting: may grow further, never shrink
        elif why is not None:
            holds.append(Hold(pool, r, R.TARGET_NOT_STABLE, why))
    if obs.demand is None:
        holds.append(Hold(pool, None, R.MISSING_DATA, "no demand data"))
    elif g.is_stale(obs.demand.age_seconds, cfg):
        age = obs.demand.age_seconds
        what = f"demand data {age:.0f} s old" if math.isfinite(age) else "no record seen yet"
        holds.append(Hold(pool, None, R.STALE_DATA, what))
    signals_known = not g.is_stale(obs.signals.age_seconds, cfg)

    decisions: list[RoleDecision]
    decider_changes: list[DeciderChange] = []
    if holds or obs.demand is None:
        reason = holds[0].reason if holds else R.MISSING_DATA
        decisions = [RoleDecision(pool, r, n, n, (reason,)) for r, n in current.items()]
    else:
        before = st
        decisions, st = _scale(
            obs, cfg, st, now, current=current, signals_known=signals_known, up_only=frozenset(up_only)
        )
        prefill_target = next(d.desired for d in decisions if d.role == c.ROLE_PREFILL)
        decider_changes, dhold, engaged, st = _decider(
            obs, cfg, st, now, current=current, signals_known=signals_known, prefill_target=prefill_target
        )
        holds.extend(dhold)
        if engaged and cfg.decider.hold_decode:
            decisions, st = _bridge_hold(decisions, cfg, st, before)

    weight_changes, whold, st = _weights(obs, cfg, st, now, signals_known)
    holds.extend(whold)
    return decisions, weight_changes, decider_changes, holds, st


def _prefill_work(demand: Demand, cfg: PoolConfig) -> float:
    """Prefill work in recompute-equivalent tok/s: misses, plus hits loaded from slow tiers."""
    hit = min(1.0, max(0.0, demand.hit_rate))
    tiers = cfg.dram_hit_cost * max(0.0, demand.dram_hit_share) + cfg.disk_hit_cost * max(
        0.0, demand.disk_hit_share
    )
    return max(0.0, demand.prompt_tokens_per_s) * (1.0 - hit + tiers)


def _scale(
    obs: PoolObservation,
    cfg: PoolConfig,
    st: PoolState,
    now: float,
    *,
    current: Mapping[str, int],
    signals_known: bool,
    up_only: frozenset[str] = frozenset(),
) -> tuple[list[RoleDecision], PoolState]:
    assert obs.demand is not None
    assert st.capacity is not None
    demand = obs.demand
    work = {
        c.ROLE_PREFILL: _prefill_work(demand, cfg),
        c.ROLE_DECODE: max(0.0, demand.output_tokens_per_s),
    }
    corr, corrected = _correct(
        obs, cfg, st, current, work=work[c.ROLE_PREFILL], signals_known=signals_known, up_only=up_only
    )
    capacity = {
        c.ROLE_PREFILL: st.capacity.prefill_tokens_per_s * corr,
        c.ROLE_DECODE: st.capacity.decode_tokens_per_s,
    }
    st = replace(st, prefill_correction=corr)
    # demand history for the forecast (bounded by the forecast window)
    kept = tuple(h for h in st.demand_history if now - cfg.forecast_window_seconds <= h[0] < now)
    hist = (*kept, (now, work[c.ROLE_PREFILL], work[c.ROLE_DECODE]))
    st = replace(st, demand_history=hist)

    reasons: dict[str, list[ReasonCode]] = {r: [] for r in ROLES}
    if corrected:
        reasons[c.ROLE_PREFILL].append(R.CAPACITY_CORRECTED)
    raw: dict[str, int] = {}
    floors: dict[str, int] = {}
    for i, r in enumerate(ROLES, start=1):
        lead = work[r]
        fc = cap.forecast([(h[0], h[i]) for h in hist], now, cfg.forecast_horizon_seconds)
        base = g.replicas_for(work[r], capacity[r], cfg.target_utilization)
        if fc is not None and fc > lead:
            lead = fc
        need = g.replicas_for(lead, capacity[r], cfg.target_utilization)
        startup = g.startup_backlog_rate(
            work[r],
            _ready(obs, r, current) * capacity[r],
            g.startup_remaining(st.last_scale_up.get(r), now, cfg.startup_seconds, starting=r in up_only),
            cfg.backlog_drain_seconds,
        )
        with_backlog = g.replicas_for(lead + startup, capacity[r], cfg.target_utilization)
        floors[r] = g.n_minus_one_floor(work[r], capacity[r])
        if r in up_only:  # never shrink a role whose scale-up is still starting
            floors[r] = max(floors[r], current[r])
        raw[r] = max(need, with_backlog)
        if all(v <= 0 for v in work.values()):
            reasons[r].append(R.ZERO_TRAFFIC)
        else:
            reasons[r].append(R.FORECAST if need > base else R.CAPACITY_FLOOR)
            if with_backlog > need:
                reasons[r].append(R.STARTUP_BACKLOG)

    queue_floor = _queue_floor(demand, cfg, work[c.ROLE_PREFILL], capacity[c.ROLE_PREFILL])
    if queue_floor > raw[c.ROLE_PREFILL]:
        raw[c.ROLE_PREFILL] = queue_floor
        reasons[c.ROLE_PREFILL].append(R.PREFILL_QUEUEING)

    # reactive moves (signals unknown/stale: no reactive move, the floor still applies)
    sig = obs.signals
    # Each reaction is one replica beyond what is *ready*: while a scale-up is still starting,
    # the symptom is expected to persist until those pods serve, so it does not stack another
    # replica per tick (the floor still grows with the demand, backlog included).
    if signals_known and sig.starvation:
        raw[c.ROLE_PREFILL] = max(raw[c.ROLE_PREFILL], _ready(obs, c.ROLE_PREFILL, current) + 1)
        reasons[c.ROLE_PREFILL].append(R.DECODE_STARVATION)
    if signals_known and sig.decode_pressure:
        raw[c.ROLE_DECODE] = max(raw[c.ROLE_DECODE], _ready(obs, c.ROLE_DECODE, current) + 1)
        reasons[c.ROLE_DECODE].append(R.DECODE_PRESSURE)
    kv_floor = _kv_floor(obs, cfg) if signals_known else 0
    if kv_floor > raw[c.ROLE_DECODE]:
        raw[c.ROLE_DECODE] = kv_floor
        reasons[c.ROLE_DECODE].append(R.KV_HEADROOM)
    unread = dict(raw)  # without the cache-residency floor
    st = _residency(obs, cfg, st, now, current)
    if st.residency_floor > raw[c.ROLE_PREFILL]:
        raw[c.ROLE_PREFILL] = st.residency_floor
        reasons[c.ROLE_PREFILL].append(R.CACHE_RESIDENCY)
    # a raw recommendation never leaves the configured bounds (keeps the windows honest)
    for r in ROLES:
        raw[r] = _within(cfg, r, raw[r])
    history = st.recommendations
    base_prefill = raw[c.ROLE_PREFILL]
    recorded = dict(raw)  # this tick's recommendations as the windows will remember them
    if not _prefill_settled(obs, cfg, st, now, current):
        # the residency floor is carried from its last reading until the resized pool settles:
        # it holds the pool meanwhile, but only a reading enters the scale-down window (else a
        # step down would wait for its settle time and then the whole window again)
        recorded[c.ROLE_PREFILL] = _within(cfg, c.ROLE_PREFILL, unread[c.ROLE_PREFILL])
    shift = _warm_shift(raw, floors, st, now=now, cfg=cfg, up_only=up_only)
    if shift is not None:
        keep, raw[c.ROLE_PREFILL], held_gpus = shift
        if raw[c.ROLE_PREFILL] > current[c.ROLE_PREFILL]:
            # the tick that grows prefill with shifted GPUs: its window holds them from here
            recorded[c.ROLE_PREFILL] = raw[c.ROLE_PREFILL]
        history = tuple(
            replace(x, replicas=min(x.replicas, keep)) if x.seeded and x.role == c.ROLE_DECODE else x
            for x in history
        )
        for r in ROLES:
            reasons[r].append(R.WARM_SHIFT)

    desired: dict[str, int] = {}
    for r in ROLES:
        rc = cfg.roles[r]
        cur = current[r]
        val, why = g.stabilize(
            history,
            r,
            now,
            raw[r],
            cur,
            up_window=cfg.scale_up_window_seconds,
            down_window=cfg.scale_down_window_seconds,
        )
        reasons[r].extend(why)
        if val > cur and g.in_cooldown(st, r, True, now, cfg):
            val = cur
            reasons[r].append(R.COOLDOWN)
        if val < cur and g.in_cooldown(st, r, False, now, cfg):
            val = cur
            reasons[r].append(R.COOLDOWN)
        if r in up_only:
            reasons[r].append(R.SCALE_UP_IN_PROGRESS)
            val = max(val, cur)
        if val < cur and val < floors[r]:
            val = min(cur, floors[r])
            reasons[r].append(R.SCALE_DOWN_REFUSED)
        val, why = g.clamp_step(cur, val, rc.max_step)
        reasons[r].extend(why)
        val, why = g.clamp_bounds(val, rc)
        reasons[r].extend(why)
        desired[r] = val

    if shift is not None:  # the shift moves GPUs: never more than the plain hold would keep
        least = max(current[c.ROLE_PREFILL], base_prefill)
        while g.gpus(desired, cfg.roles) > held_gpus and desired[c.ROLE_PREFILL] > least:
            desired[c.ROLE_PREFILL] -= 1

    # GPU budget; at the budget, move capacity between roles instead of growing
    wanted = dict(desired)
    desired, bwhy = g.enforce_budget(desired, current, floors, cfg.roles, cfg.gpu_budget)
    for r in ROLES:
        reasons[r].extend(bwhy[r])
    if cfg.gpu_budget is not None:
        desired = _rebalance(
            desired,
            wanted,
            current,
            floors=floors,
            cfg=cfg,
            reasons=reasons,
            sig=sig if signals_known else None,
        )

    recs = tuple(
        x
        for x in st.recommendations
        if now - max(cfg.scale_down_window_seconds, cfg.scale_up_window_seconds) <= x.at < now
    ) + tuple(Recommendation(now, r, recorded[r]) for r in ROLES)
    ups = dict(st.last_scale_up)
    downs = dict(st.last_scale_down)
    out: list[RoleDecision] = []
    for r in ROLES:
        if desired[r] > current[r]:
            ups[r] = now
        elif desired[r] < current[r]:
            downs[r] = now
        rs = reasons[r] or [R.STEADY]
        if desired[r] == current[r] and not any(x in _HOLDING for x in rs):
            rs = [*rs, R.STEADY] if R.STEADY not in rs else rs
        out.append(RoleDecision(obs.pool, r, current[r], desired[r], tuple(dict.fromkeys(rs))))
    return out, replace(st, recommendations=recs, last_scale_up=ups, last_scale_down=downs)


def _warm_shift(
    raw: Mapping[str, int],
    floors: Mapping[str, int],
    st: PoolState,
    *,
    now: float,
    cfg: PoolConfig,
    up_only: frozenset[str],
) -> tuple[int, int, int] | None:
    """The warm-start shift (see `PoolConfig.warm_shift_decode_spare`): while the warm-start
    seed is in decode's scale-down window and holds more decode than its need (floors, data
    recommendations over the window) plus the spare, returns (the decode count the seed may
    still hold, prefill's recommendation with the GPUs of the rest on top of its need, the GPUs
    the plain hold would keep: the seeds', prefill at least at its need). None when there is
    nothing to shift."""
    spare = cfg.warm_shift_decode_spare
    if spare is None or c.ROLE_DECODE in up_only:
        return None
    pc, dc = cfg.roles[c.ROLE_PREFILL], cfg.roles[c.ROLE_DECODE]
    recent = [x for x in st.recommendations if now - cfg.scale_down_window_seconds <= x.at <= now]
    seeds = {r: max((x.replicas for x in recent if x.seeded and x.role == r), default=0) for r in ROLES}
    seed = seeds[c.ROLE_DECODE]
    need = max(
        raw[c.ROLE_DECODE],
        floors[c.ROLE_DECODE],
        dc.min_replicas,
        *(x.replicas for x in recent if x.role == c.ROLE_DECODE and not x.seeded),
    )
    keep = min(seed, need + spare)
    moved = (seed - keep) * dc.gpus_per_replica // pc.gpus_per_replica
    if moved <= 0:
        return None
    held = g.gpus(
        {c.ROLE_PREFILL: max(seeds[c.ROLE_PREFILL], raw[c.ROLE_PREFILL]), c.ROLE_DECODE: seed}, cfg.roles
    )
    return keep, min(pc.max_replicas, raw[c.ROLE_PREFILL] + moved), held


def _correct(
    obs: PoolObservation,
    cfg: PoolConfig,
    st: PoolState,
    current: Mapping[str, int],
    *,
    work: float,
    signals_known: bool,
    up_only: frozenset[str],
) -> tuple[float, bool]:
    """SLO feedback on the prefill capacity (see `PoolConfig.prefill_correction_min`).

    Lowered when decode starvation fires on a *settled* prefill role (nothing starting: a
    scale-up in flight explains the symptom) whose modelled utilization u is below the target:
    the observation says those replicas are at least full, so the capacity is scaled by
    u / target (and a further 0.8, so a persisting miss keeps lowering it). Recovers slowly
    while the TTFT p90 is under half its target. Returns (correction, lowered this tick)."""
    assert obs.demand is not None
    assert st.capacity is not None
    corr = min(1.0, max(cfg.prefill_correction_min, st.prefill_correction))
    p90 = obs.demand.ttft_p90_seconds
    ready = _ready(obs, c.ROLE_PREFILL, current)
    if p90 is None or work <= 0 or ready <= 0:
        return corr, False
    util = work / (ready * st.capacity.prefill_tokens_per_s * corr)
    settled = c.ROLE_PREFILL not in up_only and ready == current[c.ROLE_PREFILL]
    if signals_known and obs.signals.starvation and settled and util < cfg.target_utilization:
        lowered = max(cfg.prefill_correction_min, corr * 0.8 * util / cfg.target_utilization)
        return lowered, lowered < corr
    if p90 <= cfg.ttft_target_seconds / 2:
        return min(1.0, corr * (1.0 + cfg.prefill_correction_recovery)), False
    return corr, False


def _queue_floor(demand: Demand, cfg: PoolConfig, work: float, capacity: float) -> int:
    """Prefill replicas that keep the mean queueing wait within `prefill_wait_share` of the TTFT
    target (0 = off or unknown)."""
    share, m = cfg.prefill_wait_share, demand.prompt_moments
    if share is None or m is None or work <= 0:
        return 0
    return cap.queueing_replicas(
        work,
        m.work_sq(cfg.dram_hit_cost, cfg.disk_hit_cost),
        capacity,
        share * cfg.ttft_target_seconds,
        cfg.roles[c.ROLE_PREFILL].max_replicas,
    )


def _kv_floor(obs: PoolObservation, cfg: PoolConfig) -> int:
    """Decode replicas that hold the decode pods' peak KV in use at `decode_kv_target` usage."""
    peak, target = obs.signals.decode_kv_peak, cfg.decode_kv_target
    if peak is None or target is None or peak <= 0:
        return 0
    return math.ceil(peak / target - 1e-9)


# a settled reading without any spill counts as this share of the target (see _residency)
_NO_SPILL_READING = 0.25


def _residency(
    obs: PoolObservation, cfg: PoolConfig, st: PoolState, now: float, current: Mapping[str, int]
) -> PoolState:
    """The cache-residency floor of prefill (see `PoolConfig.cache_spill_target`).

    Learns only from a *settled* prefill role: ready == desired and the ready count unchanged
    for `cache_settle_seconds` (new pods start with empty caches, so the tier split lags a
    resize). Until some spill has been seen, the floor is one below the ready count when at
    least `cache_spill_target` of the hit tokens come from DRAM (the caches are in use beyond
    HBM), else there is none. After that, a reading without spill counts as `_NO_SPILL_READING`
    of the target (λ is pulled down, so the pool does not bounce back into the spill it just
    left) and puts the floor at most one below the ready count: the floor steps down one
    settled size at a time."""
    target = cfg.cache_spill_target
    demand = obs.demand
    if target is None or demand is None or demand.prompt_tokens_per_s <= 0:
        return replace(st, residency_floor=0, residency_scale=None)
    role = c.ROLE_PREFILL
    ready = _ready(obs, role, current)
    if st.prefill_ready is None or st.prefill_ready[0] != ready:
        return replace(st, prefill_ready=(ready, now))
    if ready <= 0 or not _prefill_settled(obs, cfg, st, now, current):
        return st
    spill = demand.disk_hit_share / demand.hit_rate if demand.hit_rate > 0 else 0.0
    if spill <= 0 and st.residency_scale is None:
        dram = demand.dram_hit_share / demand.hit_rate if demand.hit_rate > 0 else 0.0
        # hits served from DRAM: the working set is past HBM, and every pod removed takes its
        # DRAM with it; step down one settled size at a time so a spill is read before it grows
        return replace(st, residency_floor=ready - 1 if dram >= target else 0)
    lam = cap.spill_scale(ready, spill if spill > 0 else target * _NO_SPILL_READING)
    a = cfg.cache_spill_smoothing
    scale = lam if st.residency_scale is None else (1 - a) * st.residency_scale + a * lam
    floor = min(cap.cache_replicas(scale, target), cfg.roles[role].max_replicas)
    if spill <= 0:  # nothing spills at this size: at most one below it (a probe, never a stall)
        floor = min(floor, ready - 1)
    return replace(st, residency_floor=floor, residency_scale=scale)


def _prefill_settled(
    obs: PoolObservation, cfg: PoolConfig, st: PoolState, now: float, current: Mapping[str, int]
) -> bool:
    """Prefill is ready at its desired count, unchanged for `cache_settle_seconds` (its pods'
    caches hold the traffic's prefixes again, so the tier split can be read)."""
    ready = _ready(obs, c.ROLE_PREFILL, current)
    return (
        st.prefill_ready is not None
        and st.prefill_ready[0] == ready == current[c.ROLE_PREFILL]
        and now - st.prefill_ready[1] >= cfg.cache_settle_seconds
    )


def _within(cfg: PoolConfig, role: str, n: int) -> int:
    """`n` within the role's configured bounds."""
    return min(cfg.roles[role].max_replicas, max(cfg.roles[role].min_replicas, n))


def _ready(obs: PoolObservation, role: str, current: Mapping[str, int]) -> int:
    """Ready replicas of `role` (never above the desired count)."""
    status = obs.roles.get(role)
    return current[role] if status is None else min(current[role], max(0, status.ready))


_HELD = frozenset({R.MISSING_DATA, R.STALE_DATA, R.TARGET_NOT_STABLE})

_HOLDING = frozenset(
    {
        R.SCALE_UP_IN_PROGRESS,
        R.STABILIZED_DOWN,
        R.STABILIZED_UP,
        R.COOLDOWN,
        R.SCALE_DOWN_REFUSED,
        R.BUDGET_LIMITED,
        R.STEP_LIMITED,
    }
)


def _rebalance(
    desired: dict[str, int],
    wanted: Mapping[str, int],
    current: Mapping[str, int],
    *,
    floors: Mapping[str, int],
    cfg: PoolConfig,
    reasons: dict[str, list[ReasonCode]],
    sig: Signals | None,
) -> dict[str, int]:
    """A role refused growth by the budget takes replicas from the other role's surplus
    (above its N/(N-1) floor and min, and not itself under pressure). Stays within budget."""
    signals = sig
    under_pressure = {
        c.ROLE_PREFILL: bool(signals and signals.starvation),
        c.ROLE_DECODE: bool(signals and signals.decode_pressure),
    }
    budget = cfg.gpu_budget
    assert budget is not None
    out = dict(desired)
    for r in ROLES:
        other = c.ROLE_DECODE if r == c.ROLE_PREFILL else c.ROLE_PREFILL
        if under_pressure[other] and not under_pressure[r]:
            continue
        rc, oc = cfg.roles[r], cfg.roles[other]
        moved = False
        while (
            out[r] < wanted[r]
            and out[r] - current[r] < rc.max_step
            and out[other] > max(oc.min_replicas, floors[other])
            and current[other] - out[other] < oc.max_step
        ):
            trial = {**out, other: out[other] - 1}
            # take from the other role until this role's next replica fits
            if g.gpus({**trial, r: trial[r] + 1}, cfg.roles) <= budget:
                trial[r] += 1
                out = trial
                moved = True
            elif g.gpus(trial, cfg.roles) <= budget and trial[other] > max(oc.min_replicas, floors[other]):
                out = trial  # free more GPUs (roles with different GPUs per replica)
            else:
                break
        if moved:
            for x in (r, other):
                if R.BUDGET_REBALANCE not in reasons[x]:
                    reasons[x].append(R.BUDGET_REBALANCE)
    # a partial free-up that did not end in growth is undone
    if g.gpus(out, cfg.roles) < g.gpus(desired, cfg.roles) and all(out[r] <= desired[r] for r in ROLES):
        return desired
    return out


def _bridge_hold(
    decisions: list[RoleDecision], cfg: PoolConfig, st: PoolState, before: PoolState
) -> tuple[list[RoleDecision], PoolState]:
    """While the decider lever is raised, the decode pods' headroom carries the bridged prefill
    work, so decode is not scaled down (this tick's decode reduction is undone, reason
    `decider_bridge`; a count above max is still brought to max). Within the pool's GPU budget
    the prefill growth is trimmed to make room (never below its current count); if even that
    does not fit, the decisions stand. `before`: the pool state before this tick's scale
    decisions (to undo their action times)."""
    by = {d.role: d for d in decisions}
    dec, pre = by.get(c.ROLE_DECODE), by.get(c.ROLE_PREFILL)
    if dec is None or pre is None:
        return decisions, st
    keep = min(dec.current, cfg.roles[c.ROLE_DECODE].max_replicas)  # never held above max
    if dec.desired >= keep:
        return decisions, st
    want = {c.ROLE_PREFILL: pre.desired, c.ROLE_DECODE: keep}
    if cfg.gpu_budget is not None:
        while g.gpus(want, cfg.roles) > cfg.gpu_budget and want[c.ROLE_PREFILL] > pre.current:
            want[c.ROLE_PREFILL] -= 1
        if g.gpus(want, cfg.roles) > cfg.gpu_budget:
            return decisions, st
    ups, downs = dict(st.last_scale_up), dict(st.last_scale_down)
    for role, times, old in (
        (c.ROLE_DECODE, downs, before.last_scale_down),
        (c.ROLE_PREFILL, ups, before.last_scale_up),
    ):
        if want[role] == by[role].current:  # no longer a change: no action time
            if role in old:
                times[role] = old[role]
            else:
                times.pop(role, None)

    def held(d: RoleDecision) -> RoleDecision:
        n = want[d.role]
        if n == d.desired:
            return d
        extra = R.DECIDER_BRIDGE if d.role == c.ROLE_DECODE else R.BUDGET_LIMITED
        kept = (x for x in d.reasons if x != R.BUDGET_REBALANCE)
        return replace(d, desired=n, reasons=tuple(dict.fromkeys((*kept, extra))))

    return [held(d) for d in decisions], replace(st, last_scale_up=ups, last_scale_down=downs)


def _decider(
    obs: PoolObservation,
    cfg: PoolConfig,
    st: PoolState,
    now: float,
    *,
    current: Mapping[str, int],
    signals_known: bool,
    prefill_target: int,
) -> tuple[list[DeciderChange], list[Hold], bool, PoolState]:
    """The P/D decider lever (see `DeciderConfig`) bridges a prefill cold start: while prefill
    replicas are still to come (`prefill_target`, this tick's decision, above the ready count)
    and the ready ones cannot carry the prefill work at the operator's threshold, raise
    `nonCachedTokens` so the smallest prompts are prefilled on the decode pods — the lowest
    size-class bound that brings the remote work within the ready prefill capacity, or, when the
    decode pods' spare capacity cannot take that much, the highest bound they can take. Restore
    the operator's threshold once the ready prefill carries the work again, or once no prefill
    replica is still to come (at the settled size, or at max, more local prefill moves conversation
    prefixes into the decode pods' smaller caches: replay measured it to lose attainment). Decode
    starvation while the model says prefill copes also counts as an overflow (of a fifth of the
    remote work). Rate-limited, and held while the EPP rolls out: each change restarts the EPP.
    Also returns whether the lever is engaged after this tick: raised, to be raised, or restored
    and not yet in effect (the EPP applies a restore only when its restart has rolled out; where
    the target cannot tell, `min_interval_seconds` after the restore stands in)."""
    dc = cfg.decider
    cur = obs.decider_threshold
    if not dc.enabled or cur is None or cur <= 0:  # no decider, or 0 = P/D switched off
        return [], [], False, st
    pool = obs.pool
    baseline = dc.baseline_tokens
    if baseline is None:
        baseline, written = _operators(st.decider_baseline, st.decider_written, cur)
        st = replace(st, decider_baseline=baseline, decider_written=written)
    demand = obs.demand
    assert demand is not None
    assert st.capacity is not None
    sizes = demand.uncached_by_size
    total = sum(v for _, v in sizes)
    if total <= 0:
        if cur == baseline:
            return [], [], False, st
        sizes, total = ((0, 0.0),), 0.0  # no prefill work at all: recovered
    work = _prefill_work(demand, cfg)
    factor = work / total if total > 0 else 1.0  # size classes in recompute-equivalent work

    def local(t: int) -> float:
        return sum(v for b, v in sizes if b <= t) * factor

    cap = st.capacity
    ready_p = _ready(obs, c.ROLE_PREFILL, current)
    ready_d = _ready(obs, c.ROLE_DECODE, current)
    carry = ready_p * cap.prefill_tokens_per_s * st.prefill_correction * cfg.target_utilization
    remote_at_base = work - local(baseline)
    bridging = prefill_target > ready_p
    starving = dc.on_starvation and signals_known and bool(obs.signals.starvation)
    # hysteresis: once raised, stay raised until the remote work fits `restore_below` of carry
    overflow = bridging and remote_at_base > (carry if cur == baseline else carry * dc.restore_below)
    if bridging and starving and not overflow and remote_at_base > 0:
        carry, overflow = min(carry, 0.8 * remote_at_base), True
    reasons: tuple[ReasonCode, ...]
    if overflow:
        decode_util = demand.output_tokens_per_s / (ready_d * cap.decode_tokens_per_s) if ready_d > 0 else 1.0
        spare = ready_d * cap.prefill_tokens_per_s * max(0.0, 1.0 - decode_util) * dc.max_decode_share
        bounds = sorted({b for b, _ in sizes if baseline < b <= dc.max_tokens})
        fits = [b for b in bounds if local(b) <= spare]
        relief = [b for b in fits if work - local(b) <= carry]
        if relief:
            desired, reasons = relief[0], (R.PREFILL_OVERFLOW,)
        elif fits:
            desired, reasons = fits[-1], (R.PREFILL_OVERFLOW, R.DECODE_NO_HEADROOM)
        else:
            desired, reasons = baseline, (R.PREFILL_OVERFLOW, R.DECODE_NO_HEADROOM)
        if starving:
            reasons = (*reasons, R.DECODE_STARVATION)
        pressure = signals_known and bool(obs.signals.decode_pressure)
        if dc.keep_raised and baseline < desired < cur and not pressure:
            desired = cur  # keep the raised threshold for the rest of the bridge
    else:
        desired, reasons = baseline, (R.PREFILL_RECOVERED,)
    last = st.last_decider_change
    recent = last is not None and now - last < dc.min_interval_seconds
    # a restore stays in flight until the EPP reads as rolled out after it: the raised threshold
    # still sends prompts to the decode pods until then. A later restart (a scorer-weight change)
    # does not put a restore that has rolled out back in flight.
    seen = st.epp_rolled_out_seen
    settled = last is not None and seen is not None and seen > last
    in_flight = recent if obs.epp_rolled_out is None else not settled
    restoring = cur == baseline and last is not None and in_flight
    if desired == cur:
        return [], [], cur > baseline or restoring, st
    held = (R.DECIDER_RATE_LIMITED if recent else None) or _epp_rolling(obs)
    if held is not None:
        why = f"nonCachedTokens {cur} -> {desired} ({','.join(reasons)})"
        return [], [Hold(pool, None, held, why)], max(cur, desired) > baseline or restoring, st
    change = DeciderChange(pool, cur, desired, reasons, baseline)
    st = replace(st, last_decider_change=now, decider_written=(cur, desired))
    return [change], [], desired > baseline or cur > baseline, st


def _epp_rolling(obs: PoolObservation) -> ReasonCode | None:
    """`epp_rollout` while the EPP's last restart is rolling out: a config write now would
    restart it again before the previous change is in effect."""
    return R.EPP_ROLLOUT if obs.epp_rolled_out is False else None


def _weights(
    obs: PoolObservation, cfg: PoolConfig, st: PoolState, now: float, signals_known: bool
) -> tuple[list[WeightChange], list[Hold], PoolState]:
    """Raise a scorer's weight by `step` while its signal fires (cascade → prefix-cache;
    imbalance → queue and kv-utilization); once it has been quiet `relax_after_seconds`, step
    it back toward the operator's weight (first read, or set since by someone else: see
    `_operators`). Within bounds, rate-limited, and held while the EPP rolls out."""
    pool = obs.pool
    wc = cfg.weights
    sig = obs.signals
    if obs.weights is None:
        return [], [Hold(pool, None, R.MISSING_DATA, "scorer weights unknown")], st
    bumps: dict[str, list[ReasonCode]] = {}
    if signals_known and sig.cascade_tenants:
        bumps.setdefault(c.SCORER_PREFIX_CACHE, []).append(R.CACHE_CASCADE)
    if signals_known and sig.load_imbalance:
        for s in (c.SCORER_QUEUE, c.SCORER_KV_UTILIZATION):
            bumps.setdefault(s, []).append(R.LOAD_IMBALANCE)
    baselines, written, bumped = dict(st.weight_baseline), dict(st.weight_written), dict(st.weight_bumped)
    targets: dict[str, tuple[float, tuple[ReasonCode, ...]]] = {}
    for scorer, bounds in wc.bounds.items():
        if scorer not in obs.weights:
            continue
        cur = obs.weights[scorer]
        baselines[scorer], last = _operators(baselines.get(scorer), written.get(scorer), cur)
        if last is None:
            written.pop(scorer, None)
        rest = g.clamp_weight(baselines[scorer], bounds)
        why = tuple(bumps.get(scorer, ()))
        new = cur
        if scorer in bumps:
            new, bumped[scorer] = cur + wc.step, now
        elif signals_known and wc.relax_after_seconds is not None and cur > rest:
            quiet_since = bumped.setdefault(scorer, now)  # a raise found on taking the lead: from now
            if now - quiet_since >= wc.relax_after_seconds:
                new, why = max(rest, cur - wc.step), (R.WEIGHT_RELAXED,)
        clamped = g.clamp_weight(new, bounds)
        if clamped != new and cur == g.clamp_weight(cur, bounds) and scorer in bumps:
            why = (*why, R.WEIGHT_AT_BOUND)
        elif cur != g.clamp_weight(cur, bounds):
            why = (*why, R.WEIGHT_OUT_OF_BOUNDS)
        if clamped != cur or scorer in bumps:
            targets[scorer] = (clamped, why)
    st = replace(st, weight_baseline=baselines, weight_written=dict(written), weight_bumped=bumped)
    holds: list[Hold] = []
    if not signals_known:
        holds.append(Hold(pool, None, R.STALE_DATA, "signals stale: no reactive moves"))
    changes = [
        WeightChange(pool, s, obs.weights[s], v, why, baselines[s])
        for s, (v, why) in targets.items()
        if v != obs.weights[s]
    ]
    for s, (v, why) in targets.items():
        if v == obs.weights[s]:
            holds.append(Hold(pool, None, R.WEIGHT_AT_BOUND, f"{s} at {v}: {','.join(why)}"))
    held = (R.WEIGHT_RATE_LIMITED if g.weight_rate_limited(st, now, cfg) else None) or _epp_rolling(obs)
    if changes and held is not None:
        holds.append(Hold(pool, None, held, ", ".join(x.scorer for x in changes)))
        return [], holds, st
    if changes:
        written.update({x.scorer: (x.current, x.desired) for x in changes})
        st = replace(st, last_weight_change=now, weight_written=written)
    return changes, holds, st


def _operators(known: V | None, written: tuple[V, V] | None, cur: V) -> tuple[V, tuple[V, V] | None]:
    """A lever's value to come back to (the operator's) and (from, to) of the last change this
    controller decided or recalled, after reading `cur`. The first reading is the operator's; so
    is a value set since by someone else — neither side of the last change (a change not applied
    leaves its `from`, one applied its `to`). Pure."""
    if known is None or (cur != known and (written is None or cur not in written)):
        return cur, None
    return known, written
