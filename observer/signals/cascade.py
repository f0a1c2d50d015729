"""Cache partition cascade per tenant, with attribution (DESIGN §4, docs/signals.md).

Pure: `update(state, observation, now, config) -> state` keeps EWMA baselines over quiet
windows; `evaluate(state, observation, config) -> signals`. Input: `CascadeObservation` =
per-tenant `TenantWindow`s (hits by tier, by pod, TTFT p90) and the fleet load of the window.
`prune_baselines` and `note_first_seen` bound the state a long-running caller keeps (the signals
engine and the autoscaler's `RecordSignals` share them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from observer.signals.types import (
    CascadeConfig,
    CascadeSignal,
    CascadeState,
    Evictor,
    TenantBaseline,
    TenantWindow,
)

# A tenant's baseline keeps a pod it has no hits on in the window only while its decayed HBM
# occupancy there is above this (occupancies are shares, 0..1), so a gone pod (rollouts and
# scale-ups give new pod names) leaves after at most log(1e-3)/log(1 - alpha) updates of the
# baseline: 31 with alpha 0.2. Memory and time stay O(pods in use), not O(pods ever seen). A
# dropped pod counts as occupancy 0; that is 100x below `evictor_min_rise` (0.1).
POD_OCCUPANCY_EPSILON = 1e-3

# Baselines not refreshed for this many windows are forgotten (`prune_baselines`).
BASELINE_MAX_AGE_WINDOWS = 10


@dataclass(frozen=True, slots=True)
class CascadeObservation:
    tenants: tuple[TenantWindow, ...]
    fleet_load: float | None  # e.g. fleet requests/s or prompt tokens/s in the window


def pod_hbm_occupancy(tenants: tuple[TenantWindow, ...]) -> dict[str, dict[str, float]]:
    """pod -> tenant -> the tenant's share of the pod's HBM-served hit tokens."""
    totals: dict[str, int] = {}
    for t in tenants:
        for pod, hits in t.pod_hits.items():
            totals[pod] = totals.get(pod, 0) + hits.hbm
    out: dict[str, dict[str, float]] = {}
    for t in tenants:
        for pod, hits in t.pod_hits.items():
            if totals[pod]:
                out.setdefault(pod, {})[t.tenant] = hits.hbm / totals[pod]
    return out


def _flat(load: float | None, baseline: float | None, cfg: CascadeConfig) -> bool | None:
    if load is None or baseline is None or baseline <= 0:
        return None
    return abs(load / baseline - 1.0) <= cfg.load_tolerance


def evaluate(state: CascadeState, obs: CascadeObservation, cfg: CascadeConfig) -> tuple[CascadeSignal, ...]:
    occ = pod_hbm_occupancy(obs.tenants)
    flat = _flat(obs.fleet_load, state.fleet_load, cfg)
    out = []
    for t in sorted(obs.tenants, key=lambda x: x.tenant):
        base = state.tenants.get(t.tenant)
        share = t.hbm_share
        unknown = (
            base is None
            or base.windows < cfg.min_baseline_windows
            or t.requests < cfg.min_requests
            or share is None
            or t.ttft_p90 is None
            or flat is None
        )
        firing = False
        evictors: tuple[Evictor, ...] = ()
        if not unknown and base is not None and share is not None and t.ttft_p90 is not None:
            firing = bool(
                flat
                and base.hbm_share - share >= cfg.hbm_share_drop
                and t.ttft_p90 >= cfg.ttft_ratio * base.ttft_p90
            )
            if firing:
                evictors = _evictors(t, base, state, occ, cfg)
        out.append(
            CascadeSignal(
                tenant=t.tenant,
                firing=firing,
                unknown=unknown,
                hbm_share=share,
                hbm_share_baseline=base.hbm_share if base else None,
                ttft_p90=t.ttft_p90,
                ttft_p90_baseline=base.ttft_p90 if base else None,
                fleet_load=obs.fleet_load,
                fleet_load_baseline=state.fleet_load,
                evictors=evictors,
            )
        )
    return tuple(out)


def _evictors(
    victim: TenantWindow,
    base: TenantBaseline,
    state: CascadeState,
    occ: Mapping[str, Mapping[str, float]],
    cfg: CascadeConfig,
) -> tuple[Evictor, ...]:
    pods = set(base.pod_hbm_occupancy) | set(victim.pod_hits)
    found: dict[str, Evictor] = {}
    for pod in sorted(pods):
        for tenant, now_share in occ.get(pod, {}).items():
            if tenant == victim.tenant:
                continue
            other = state.tenants.get(tenant)
            before = other.pod_hbm_occupancy.get(pod, 0.0) if other else 0.0
            if now_share - before >= cfg.evictor_min_rise:
                prev = found.get(tenant)
                if prev is None or now_share - before > prev.occupancy_now - prev.occupancy_before:
                    found[tenant] = Evictor(tenant, pod, before, now_share)
    return tuple(sorted(found.values(), key=lambda e: e.occupancy_before - e.occupancy_now))


def _ewma(old: float, new: float, alpha: float) -> float:
    return (1 - alpha) * old + alpha * new


def update(state: CascadeState, obs: CascadeObservation, now: float, cfg: CascadeConfig) -> CascadeState:
    """Fold a window into the baselines. Firing tenants keep their baseline (quiet windows only)."""
    signals = {s.tenant: s for s in evaluate(state, obs, cfg)}
    occ = pod_hbm_occupancy(obs.tenants)
    tenants = dict(state.tenants)
    for t in obs.tenants:
        share = t.hbm_share
        if t.requests < cfg.min_requests or share is None or t.ttft_p90 is None or signals[t.tenant].firing:
            continue
        mine = {pod: shares[t.tenant] for pod, shares in occ.items() if t.tenant in shares}
        base = tenants.get(t.tenant)
        if base is None:
            tenants[t.tenant] = TenantBaseline(share, t.ttft_p90, mine, 1, now)
            continue
        occupancy = {p: _ewma(base.pod_hbm_occupancy.get(p, 0.0), v, cfg.alpha) for p, v in mine.items()}
        for p, old in base.pod_hbm_occupancy.items():  # pods without hits this window decay ...
            if p not in mine:
                decayed = _ewma(old, 0.0, cfg.alpha)
                if decayed > POD_OCCUPANCY_EPSILON:  # ... and leave once negligible (bounded)
                    occupancy[p] = decayed
        tenants[t.tenant] = TenantBaseline(
            hbm_share=_ewma(base.hbm_share, share, cfg.alpha),
            ttft_p90=_ewma(base.ttft_p90, t.ttft_p90, cfg.alpha),
            pod_hbm_occupancy=occupancy,
            windows=base.windows + 1,
            updated_at=now,
        )
    load = state.fleet_load
    if obs.fleet_load is not None and not any(s.firing for s in signals.values()):
        load = obs.fleet_load if load is None else _ewma(load, obs.fleet_load, cfg.alpha)
    return CascadeState(tenants=tenants, fleet_load=load, fleet_windows=state.fleet_windows + 1)


def prune_baselines(state: CascadeState, now: float, window_seconds: float, max_tenants: int) -> CascadeState:
    """Forget baselines not refreshed for `BASELINE_MAX_AGE_WINDOWS` windows of `window_seconds`,
    then keep at most `max_tenants` (the most recently refreshed). `state` itself when unchanged."""
    horizon = now - BASELINE_MAX_AGE_WINDOWS * window_seconds
    kept = {k: b for k, b in state.tenants.items() if b.updated_at >= horizon}
    if len(kept) > max_tenants:
        kept = dict(sorted(kept.items(), key=lambda kv: -kv[1].updated_at)[:max_tenants])
    if len(kept) == len(state.tenants):
        return state
    return CascadeState(tenants=kept, fleet_load=state.fleet_load, fleet_windows=state.fleet_windows)


def note_first_seen(
    known: Mapping[str, float], seen: Mapping[str, float], max_tenants: int
) -> Mapping[str, float]:
    """Tenant -> when first seen (for the fleet load's grace period of newcomers): `seen` maps the
    current window's tenants to the time to record should they be new. Bounded: once more than
    2 x `max_tenants` tenants are known, only the window's tenants are kept (a tenant that comes
    back later is a newcomer again). `known` itself (not copied) when no tenant is new."""
    new = {t: at for t, at in seen.items() if t not in known}
    if not new:
        return known
    out = {**known, **new}
    if len(out) > 2 * max_tenants:
        out = {t: v for t, v in out.items() if t in seen}
    return out
