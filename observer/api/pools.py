"""`GET /api/v1/pools`, the `signals` key of tenant entries, and the fleet-signal /metrics gauges.

Everything here reads the engine's latest `FleetSignals` snapshot (taken by the signals service
every interval); nothing is computed at request or scrape time. Each signal carries its evidence.
Gauges follow alerts/generate.py: cascade, starvation and pressure are 1 when firing, 0 when not,
and absent when unknown (an unknown signal is never reported as a zero). Pod, pool and role label
values come from the sources, made safe where they were read (observer/sources/untrusted.py) and
bounded in number by `signals.max_pods`; the sources' rewrite counts are exported here too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from observer import conventions as c
from observer.signals.engine import FleetSignals, PodSignals, PoolSignals, SignalEngine, TenantSignals
from observer.signals.types import CascadeSignal, Freshness
from observer.sources.untrusted import ValueCleaner

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric


def _status(firing: bool, unknown: bool) -> str:
    return "firing" if firing else ("unknown" if unknown else "ok")


def cascade_json(s: CascadeSignal) -> dict[str, Any]:
    return {
        "status": _status(s.firing, s.unknown),
        "firing": s.firing,
        "unknown": s.unknown,
        "evidence": {
            "hbm_share": s.hbm_share,
            "hbm_share_baseline": s.hbm_share_baseline,
            "hbm_share_drop": s.hbm_share_drop,
            "ttft_p90_seconds": s.ttft_p90,
            "ttft_p90_baseline_seconds": s.ttft_p90_baseline,
            "ttft_ratio": s.ttft_ratio,
            "fleet_load": s.fleet_load,
            "fleet_load_baseline": s.fleet_load_baseline,
            "evictors": [
                {
                    "tenant": e.tenant,
                    "pod": e.pod,
                    "hbm_occupancy_before": e.occupancy_before,
                    "hbm_occupancy_now": e.occupancy_now,
                }
                for e in s.evictors
            ],
        },
    }


def tenant_signals_json(ts: TenantSignals | None, fleet: FleetSignals | None) -> dict[str, Any]:
    """The `signals` key of a tenant entry; `cascade` is null before the engine judged the tenant."""
    return {
        "time": fleet.time if fleet is not None else None,
        "cascade": cascade_json(ts.cascade) if ts is not None else None,
        "tier_shares": dict(ts.tier_shares) if ts is not None and ts.tier_shares is not None else None,
        "observer_blind": fleet.blind if fleet is not None else True,
    }


def pod_json(p: PodSignals) -> dict[str, Any]:
    return {
        "pod": p.pod,
        "pool": p.pool,
        "role": p.role,
        "tier_usage": dict(p.tier_usage),
        "queue": p.queue,
        "running": p.running,
        "eviction_rate_by_tier": dict(p.eviction_rate_by_tier),
        "demotion_rate_by_tier": dict(p.demotion_rate_by_tier),
        "kv_blocks_by_tier": dict(p.kv_blocks_by_tier) if p.kv_blocks_by_tier is not None else None,
    }


def freshness_json(f: Freshness) -> dict[str, Any]:
    return {"source": f.source, "up": f.up, "age_seconds": f.age_seconds, "blind": f.blind, "error": f.error}


def pool_json(p: PoolSignals, pods: tuple[PodSignals, ...], ttft_min: float) -> dict[str, Any]:
    st, pr, b, d = p.starvation, p.pressure, p.balance, p.demand
    return {
        "pool": p.pool,
        "decode_starvation": {
            "status": _status(st.firing, st.unknown),
            "firing": st.firing,
            "unknown": st.unknown,
            "evidence": {
                "pre_decode_ttft_share": p.pre_decode_ttft_share,
                "decode_busy_ratio": st.decode_busy_ratio,
                "ttft_p90_seconds": p.ttft_p90,
                "ttft_min_seconds": ttft_min,
                "consecutive_windows": st.consecutive,
            },
        },
        "decode_pressure": {
            "status": _status(pr.firing, pr.unknown),
            "firing": pr.firing,
            "unknown": pr.unknown,
            "reasons": list(pr.reasons),
            "evidence": {
                "itl_p90_seconds": pr.itl_p90,
                "itl_slo_seconds": pr.itl_slo_seconds,
                "kv_usage_max": pr.kv_usage_max,
                "preemption_rate": pr.preemption_rate,
            },
        },
        "pd_balance": {
            "status": "imbalanced" if b.imbalanced else ("unknown" if b.unknown else "ok"),
            "imbalanced": b.imbalanced,
            "unknown": b.unknown,
            "direction": b.direction,
            "ratio_needed": b.ratio_needed,
            "ratio_deployed": b.ratio_deployed,
            "evidence": {
                "prefill_replicas_needed": b.prefill_replicas_needed,
                "decode_replicas_needed": b.decode_replicas_needed,
                "prefill_replicas": d.prefill_replicas,
                "decode_replicas": d.decode_replicas,
                "prompt_tokens_per_s": d.prompt_tokens_per_s,
                "hit_rate": d.hit_rate,
                "output_tokens_per_s": d.output_tokens_per_s,
            },
        },
        "pods": [pod_json(x) for x in pods if x.pool == p.pool],
    }


def pools_json(fs: FleetSignals | None, ttft_min: float) -> dict[str, Any]:
    if fs is None:
        return {"time": None, "observer_blind": True, "sources": [], "pools": []}
    return {
        "time": fs.time,
        "window_seconds": fs.window_seconds,
        "observer_blind": fs.blind,
        "sources": [freshness_json(f) for f in fs.freshness],
        "pools": [pool_json(p, fs.pods, ttft_min) for p in fs.pools],
    }


def pools_router(engine: SignalEngine) -> APIRouter:
    router = APIRouter(prefix="/api/v1")
    ttft_min = engine.settings.starvation.ttft_min_seconds

    @router.get(
        "/pools", tags=["pools"], summary="Pool signals with evidence: starvation, pressure, P/D balance"
    )
    def pools() -> dict[str, Any]:
        return pools_json(engine.latest, ttft_min)

    @router.get("/pools/{pool}", tags=["pools"], summary="One pool's signals")
    def pool(pool: str) -> dict[str, Any]:
        fs = engine.latest
        p = fs.pool(pool) if fs is not None else None
        if fs is None or p is None:
            raise HTTPException(404, f"no signals for pool {pool!r} yet")
        return {"time": fs.time, "observer_blind": fs.blind, **pool_json(p, fs.pods, ttft_min)}

    return router


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


class SignalsCollector(Collector):
    """`collect()`-time gauges from the engine's latest snapshot (names in conventions), and the
    counts of the sources' `cleaners` (exported from the start, before any snapshot)."""

    def __init__(
        self,
        engine: SignalEngine,
        cleaners: Sequence[ValueCleaner] = (),
        kv_dropped: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        self._engine = engine
        self._cleaners = tuple(cleaners)
        self._kv_dropped = kv_dropped  # the KV-event consumer's `dropped`, when one runs

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        if self._cleaners:
            rewritten = CounterMetricFamily(
                c.M_SOURCE_VALUES_REWRITTEN,
                "Strings read from a source (label values, pod names, KV topics) made safe",
                labels=[c.LABEL_SOURCE],
            )
            by_source: dict[str, int] = {}
            for cl in self._cleaners:
                by_source[cl.source] = by_source.get(cl.source, 0) + cl.count
            for source, n in sorted(by_source.items()):
                rewritten.add_metric([source], n)
            yield rewritten
        if self._kv_dropped is not None:
            dropped = CounterMetricFamily(
                c.M_KV_EVENTS_DROPPED, "KV-event batches not applied, by reason", labels=[c.LABEL_REASON]
            )
            for reason, n in sorted(self._kv_dropped().items()):
                dropped.add_metric([reason], n)
            yield dropped
        fs = self._engine.latest
        if fs is None:
            return
        T, P = [c.LABEL_TENANT], [c.LABEL_POOL]
        cascade = _gauge(c.M_CASCADE, "Cache partition cascade for the tenant (1 firing, 0 not)", T)
        drop = _gauge(c.M_HBM_SHARE_DROP, "Drop of the HBM share of the tenant's hits vs its baseline", T)
        ratio = _gauge(c.M_TTFT_RATIO, "Tenant TTFT p90 / its baseline", T)
        for t in fs.tenants:
            s = t.cascade
            if not s.unknown or s.firing:
                cascade.add_metric([s.tenant], 1.0 if s.firing else 0.0)
            if s.hbm_share_drop is not None:
                drop.add_metric([s.tenant], s.hbm_share_drop)
            if s.ttft_ratio is not None:
                ratio.add_metric([s.tenant], s.ttft_ratio)
        yield from (cascade, drop, ratio)

        starv = _gauge(c.M_DECODE_STARVATION, "Decode starvation in the pool (1 firing, 0 not)", P)
        share = _gauge(c.M_PRE_DECODE_SHARE, "Share of TTFT spent before decode starts", P)
        busy = _gauge(c.M_DECODE_BUSY_RATIO, "Decode tokens/s over decode capacity", P)
        press = _gauge(c.M_DECODE_PRESSURE, "Decode pressure in the pool (1 firing, 0 not)", P)
        needed = _gauge(c.M_PD_RATIO_NEEDED, "Prefill:decode replica ratio the demand needs", P)
        deployed = _gauge(c.M_PD_RATIO_DEPLOYED, "Prefill:decode replica ratio deployed", P)
        for p in fs.pools:
            if not p.starvation.unknown or p.starvation.firing:
                starv.add_metric([p.pool], 1.0 if p.starvation.firing else 0.0)
            if p.pre_decode_ttft_share is not None:
                share.add_metric([p.pool], p.pre_decode_ttft_share)
            if p.window.decode_busy_ratio is not None:
                busy.add_metric([p.pool], p.window.decode_busy_ratio)
            if not p.pressure.unknown or p.pressure.firing:
                press.add_metric([p.pool], 1.0 if p.pressure.firing else 0.0)
            if p.balance.ratio_needed is not None:
                needed.add_metric([p.pool], p.balance.ratio_needed)
            if p.balance.ratio_deployed is not None:
                deployed.add_metric([p.pool], p.balance.ratio_deployed)
        yield from (starv, share, busy, press, needed, deployed)

        usage = _gauge(
            c.M_POD_TIER_USAGE,
            "KV tier usage per pod (hbm, dram: fraction 0..1; disk: bytes)",
            [c.LABEL_POOL, c.LABEL_POD, c.LABEL_ROLE, c.LABEL_TIER],
        )
        evict = _gauge(
            c.M_POD_EVICTION_RATE,
            "KV blocks/s evicted from the tier",
            [c.LABEL_POOL, c.LABEL_POD, c.LABEL_TIER],
        )
        demote = _gauge(
            c.M_POD_DEMOTION_RATE,
            "KV blocks/s demoted down out of the tier",
            [c.LABEL_POOL, c.LABEL_POD, c.LABEL_TIER],
        )
        queue = _gauge(
            c.M_POD_QUEUE, "Requests waiting on the pod", [c.LABEL_POOL, c.LABEL_POD, c.LABEL_ROLE]
        )
        for pod in fs.pods:
            role = pod.role or ""
            for tier, v in pod.tier_usage.items():
                if v is not None:
                    usage.add_metric([pod.pool, pod.pod, role, tier], v)
            for tier, v in pod.eviction_rate_by_tier.items():
                evict.add_metric([pod.pool, pod.pod, tier], v)
            for tier, v in pod.demotion_rate_by_tier.items():
                demote.add_metric([pod.pool, pod.pod, tier], v)
            if pod.queue is not None:
                queue.add_metric([pod.pool, pod.pod, role], pod.queue)
        yield from (usage, evict, demote, queue)

        up = _gauge(c.M_SOURCE_UP, "1 when the source's last read succeeded", [c.LABEL_SOURCE])
        age = _gauge(c.M_SOURCE_AGE, "Seconds since the source's last successful read", [c.LABEL_SOURCE])
        for f in fs.freshness:
            up.add_metric([f.source], 1.0 if f.up else 0.0)
            if f.age_seconds is not None:
                age.add_metric([f.source], f.age_seconds)
        yield from (up, age)


def gauge_values(collector: Collector) -> Mapping[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(metric name, sorted labels) -> value; for tests and debugging."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for fam in collector.collect():
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out
