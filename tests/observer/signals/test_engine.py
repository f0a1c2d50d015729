"""The live engine: windows from records, samples from sources, freshness, bounded memory. No mocks."""

from __future__ import annotations

from observer import conventions as c
from observer.model import RequestRecord, TierTokens
from observer.signals.engine import SignalEngine
from observer.signals.settings import SignalsSettings
from observer.sources.kvevents import KvSnapshot, PodKvSample
from observer.sources.samples import FleetSnapshot, PodSample

T0 = 1_000_000.0
POOL = "pool-a"
PODS = (("pf-0", c.ROLE_PREFILL), ("dc-0", c.ROLE_DECODE), ("dc-1", c.ROLE_DECODE))
_n = [0]


def rec(
    tenant: str,
    end: float,
    *,
    hbm: int = 1000,
    dram: int = 0,
    ttft: float = 0.2,
    pod: str = "pf-0",
    queue: float | None = None,
    prefill: float | None = None,
    kv: float = 0.0,
    itl: float = 0.02,
) -> RequestRecord:
    _n[0] += 1
    q = ttft * 0.3 if queue is None else queue
    p = ttft * 0.6 if prefill is None else prefill
    return RequestRecord(
        request_id=f"r{_n[0]}",
        trace_id=f"t{_n[0]}",
        tenant=tenant,
        model="m",
        start_time=end - ttft - 1.0,
        end_time=end,
        prompt_tokens=2000,
        output_tokens=100,
        cached=TierTokens(hbm=hbm, dram=dram),
        ttft=ttft,
        itl=itl,
        e2e=ttft + 1.0,
        queue=q,
        prefill=p,
        kv_transfer=kv,
        decode=1.0,
        disaggregated=True,
        prefill_pod=pod,
        decode_pod="dc-0",
    )


def snapshot(
    now: float, *, ok: bool = True, gen_rate: float | None = 100.0, kv_usage: float = 0.3
) -> FleetSnapshot:
    pods = tuple(
        PodSample(
            pod=name,
            role=role,
            pool=POOL,
            model="m",
            time=now,
            kv_usage=kv_usage,
            cpu_offload_usage=0.1,
            disk_bytes=5e9,
            waiting=2.0,
            running=4.0,
            preemption_rate=0.0,
            prompt_tokens_rate=4000.0,
            generation_tokens_rate=gen_rate,
            prefix_queries_rate=4000.0,
            prefix_hits_rate=1000.0,
            dram_eviction_rate=0.5,
        )
        for name, role in PODS
    )
    return FleetSnapshot(
        source=c.SOURCE_SCRAPE, time=now, ok=ok, error=None if ok else "boom", pods=pods if ok else ()
    )


def settings(**kw: object) -> SignalsSettings:
    return SignalsSettings.model_validate(kw)


def feed(engine: SignalEngine, start: float, end: float, make: object, step: float = 15.0) -> list[float]:
    """Records every 2 s per tenant from `make(t)`, a tick + snapshot every `step`."""
    times = []
    t = start
    while t < end:
        batch = [r for s in range(int(step / 2)) for r in make(t + 2 * s)]  # type: ignore[operator]
        engine.add_records(batch, t + step)
        t += step
        engine.observe(snapshot(t))
        engine.tick(t)
        times.append(t)
    return times


def quiet(t: float) -> list[RequestRecord]:
    return [rec("A", t, hbm=2000), rec("C", t, hbm=1500, pod="pf-1"), rec("B", t, hbm=300)]


def test_cascade_fires_names_the_evictor_and_keeps_it_for_the_episode() -> None:
    eng = SignalEngine()
    feed(eng, T0, T0 + 600, quiet)
    latest = eng.latest
    assert latest is not None
    a = latest.tenant("A")
    assert a is not None
    assert not a.cascade.unknown
    assert not a.cascade.firing

    def cascade(t: float) -> list[RequestRecord]:  # B floods pf-0: A's prefix goes to DRAM, slow
        return [
            rec("A", t, hbm=400, dram=1600, ttft=0.9),
            rec("C", t, hbm=1500, pod="pf-1"),
            rec("B", t, hbm=3000),
        ]

    times = feed(eng, T0 + 600, T0 + 900, cascade)
    firing = [fs for fs in (eng.latest,) if fs is not None]
    sig = firing[0].tenant("A")
    assert sig is not None
    assert sig.cascade.firing
    assert [e.tenant for e in sig.cascade.evictors] == ["B"]
    assert sig.cascade.evictors[0].pod == "pf-0"
    assert len(times) == 20
    c_sig = firing[0].tenant("C")
    assert c_sig is not None
    assert not c_sig.cascade.firing


def test_new_tenant_load_is_not_fleet_load_but_established_growth_is() -> None:
    eng = SignalEngine()
    feed(eng, T0, T0 + 300, quiet)
    base = eng.latest
    assert base is not None
    assert base.fleet_load is not None
    # a newcomer triples the request rate: the established load is unchanged
    feed(eng, T0 + 300, T0 + 360, lambda t: [*quiet(t), *(rec(f"new-{i}", t) for i in range(6))])
    after = eng.latest
    assert after is not None
    assert after.fleet_load is not None
    assert abs(after.fleet_load - base.fleet_load) / base.fleet_load < 0.1
    # the same traffic counted as "requests" is 3x
    eng2 = SignalEngine(settings(cascade={"fleet_load": "requests"}))
    feed(eng2, T0, T0 + 300, quiet)
    feed(eng2, T0 + 300, T0 + 360, lambda t: [*quiet(t), *(rec(f"new-{i}", t) for i in range(6))])
    assert eng2.latest is not None
    assert eng2.latest.fleet_load is not None
    assert eng2.latest.fleet_load > 2.5 * base.fleet_load


def test_starvation_needs_k_windows_a_slow_ttft_and_idle_decode() -> None:
    eng = SignalEngine()

    def starving(t: float) -> list[RequestRecord]:
        return [rec("A", t, ttft=3.0, queue=2.0, prefill=0.9, kv=0.05)]

    times = feed(eng, T0, T0 + 45, starving)
    assert eng.latest is not None
    pool = eng.latest.pool(POOL)
    assert pool is not None
    assert len(times) == 3
    assert pool.starvation.consecutive == 3
    assert pool.starvation.firing
    assert pool.pre_decode_ttft_share is not None
    assert abs(pool.pre_decode_ttft_share - 2.95 / 3.0) < 1e-9
    assert pool.window.decode_busy_ratio == 200.0 / (2 * 2000.0)

    # an idle fleet: all of a fast TTFT is before decode, yet nothing is starving
    idle = SignalEngine()
    feed(idle, T0, T0 + 120, lambda t: [rec("A", t, ttft=0.2, queue=0.05, prefill=0.15)])
    assert idle.latest is not None
    p = idle.latest.pool(POOL)
    assert p is not None
    assert p.pre_decode_ttft_share == 1.0
    assert p.window.pre_decode_ttft_share == 0.0  # gated by ttft_min_seconds
    assert not p.starvation.firing
    assert not p.starvation.unknown


def test_pressure_balance_and_pod_evidence() -> None:
    eng = SignalEngine()
    eng.add_records([rec("A", T0 + 5, itl=0.3)], T0 + 5)
    eng.observe(snapshot(T0 + 15, kv_usage=0.95))
    kv = KvSnapshot(
        c.SOURCE_KV_EVENTS,
        T0 + 15,
        (
            PodKvSample(
                pod="dc-0",
                model="m",
                time=T0 + 15,
                blocks_by_tier={c.TIER_HBM: 10, c.TIER_DRAM: 4},
                store_rate_by_tier={c.TIER_HBM: 1.0},
                remove_rate_by_tier={c.TIER_HBM: 2.0},
                demotion_rate_by_tier={c.TIER_HBM: 1.5},
                last_event_time=T0 + 14,
                gaps=0,
                replayed=0,
                truncated=False,
            ),
        ),
    )
    eng.observe_kv(kv)
    fs = eng.tick(T0 + 15)
    pool = fs.pool(POOL)
    assert pool is not None
    assert pool.pressure.firing
    assert set(pool.pressure.reasons) == {"itl", "kv_usage"}
    # balance: prefill 4000 tok/s x (1 - 0.25) / 20000 = 0.15; decode 200 / 2000 = 0.1
    assert pool.balance.prefill_replicas_needed is not None
    assert abs(pool.balance.prefill_replicas_needed - 0.15) < 1e-9
    assert pool.balance.ratio_deployed == 0.5
    assert pool.balance.ratio_needed is not None
    assert abs(pool.balance.ratio_needed - 1.5) < 1e-9
    assert pool.balance.direction == "more_prefill"
    dc0 = next(p for p in fs.pods if p.pod == "dc-0")
    assert dc0.tier_usage[c.TIER_HBM] == 0.95
    assert dc0.eviction_rate_by_tier == {c.TIER_HBM: 2.0, c.TIER_DRAM: 0.5}
    assert dc0.demotion_rate_by_tier == {c.TIER_HBM: 1.5}
    assert dc0.kv_blocks_by_tier == {c.TIER_HBM: 10, c.TIER_DRAM: 4}
    kv_fresh = next(f for f in fs.freshness if f.source == c.SOURCE_KV_EVENTS)
    assert kv_fresh.up
    assert kv_fresh.age_seconds == 1.0


def test_a_blind_source_makes_pool_signals_unknown_never_zero() -> None:
    eng = SignalEngine()
    eng.add_records([rec("A", T0 + 5, ttft=3.0, queue=2.0, prefill=0.9)], T0 + 5)
    eng.observe(snapshot(T0 + 15))
    eng.tick(T0 + 15)
    # the source fails from now on; after stale_after_seconds (60) it is blind
    for t in (T0 + 30, T0 + 45, T0 + 60, T0 + 75, T0 + 90):
        eng.observe(snapshot(t, ok=False))
        eng.add_records([rec("A", t - 1, ttft=3.0, queue=2.0, prefill=0.9)], t)
        fs = eng.tick(t)
    fresh = next(f for f in fs.freshness if f.source == c.SOURCE_SCRAPE)
    assert not fresh.up
    assert fresh.blind
    assert fresh.error == "boom"
    assert fs.blind
    pool = fs.pool(POOL)
    assert pool is not None
    assert pool.window.decode_busy_ratio is None
    assert pool.starvation.unknown
    assert not pool.starvation.firing
    assert fs.pods == ()


def test_memory_is_bounded() -> None:
    eng = SignalEngine(settings(max_records=100, max_tenants=5))
    eng.add_records([rec(f"t{i % 50}", T0 + i * 0.01) for i in range(1000)], T0 + 10)
    assert len(eng._records) == 100
    assert eng.records_dropped == 900
    fs = eng.tick(T0 + 10)
    assert len(fs.tenants) <= 5
    # records leave with the window
    eng.tick(T0 + 200)
    assert len(eng._records) == 0
