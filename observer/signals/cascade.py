"""Cache partition cascade per tenant, with attribution (DESIGN §4, docs/signals.md).

Pure: `update(state, observation, now, config) -> state` keeps EWMA baselines over quiet
windows; `evaluate(state, observation, config) -> signals`. Input: `CascadeObservation` =
per-tenant `TenantWindow`s (hits by tier, by pod, TTFT p90) and the fleet load of the window.
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
        pods = set(base.pod_hbm_occupancy) | set(mine)
        tenants[t.tenant] = TenantBaseline(
            hbm_share=_ewma(base.hbm_share, share, cfg.alpha),
            ttft_p90=_ewma(base.ttft_p90, t.ttft_p90, cfg.alpha),
            pod_hbm_occupancy={
                p: _ewma(base.pod_hbm_occupancy.get(p, 0.0), mine.get(p, 0.0), cfg.alpha) for p in pods
            },
            windows=base.windows + 1,
            updated_at=now,
        )
    load = state.fleet_load
    if obs.fleet_load is not None and not any(s.firing for s in signals.values()):
        load = obs.fleet_load if load is None else _ewma(load, obs.fleet_load, cfg.alpha)
    return CascadeState(tenants=tenants, fleet_load=load, fleet_windows=state.fleet_windows + 1)
