"""autoscaler.observe (demand from records, record/engine signals) and autoscaler.simulator
(the twin actuator, ground-truth records), and the loop inside the service (attach)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pytest
from fastapi.testclient import TestClient

from autoscaler.audit import MemoryAuditLog
from autoscaler.loop import Controller, Mode
from autoscaler.observe import (
    DecodeGauges,
    EngineSignals,
    ObserverSource,
    RecordSignals,
    RecordWindow,
    demand_of,
    pool_by_model,
    pool_by_pod_prefix,
)
from autoscaler.ports import (
    InMemoryScaleTarget,
    ManualClock,
    NotFoundError,
    PermanentError,
)
from autoscaler.service import attach, warm_start
from autoscaler.simulator import SimScaleTarget, TwinRecordSink, record_of
from autoscaler.types import Config, PoolConfig, RoleStatus
from observer import conventions as c
from observer.model import RequestRecord, TierTokens
from observer.store.memory import MemoryStore
from simulator.fleet import MemorySink
from simulator.scenarios import build_scenario
from tests.autoscaler.inservice import llama_settings, observe_factory
from tests.observer.store.factories import record

P, D = c.ROLE_PREFILL, c.ROLE_DECODE


def rec(i: int, end: float, **kw: object) -> RequestRecord:
    base = replace(record(i, end), prefill_pod="llama-prefill-1", decode_pod="llama-decode-2")
    return replace(base, **kw)  # type: ignore[arg-type]


def test_demand_from_records_and_backlog_correction() -> None:
    rs = [
        rec(i, 100.0 + i, prompt_tokens=1000, output_tokens=50, cached=TierTokens(hbm=250)) for i in range(60)
    ]
    d = demand_of(rs, 60.0, backlog=False)
    assert d.prompt_tokens_per_s == pytest.approx(1000.0)
    assert d.output_tokens_per_s == pytest.approx(50.0)
    assert d.hit_rate == pytest.approx(0.25)
    assert d.requests_per_s == pytest.approx(1.0)
    queued = [replace(r, queue=30.0) for r in rs]  # each waited 30 s: half a window of backlog
    assert demand_of(queued, 60.0).prompt_tokens_per_s == pytest.approx(1500.0)
    assert demand_of([], 60.0).prompt_tokens_per_s == 0.0


def test_window_pools_bounds_and_unknown_while_warming_up() -> None:
    w = RecordWindow(pool_by_pod_prefix(["llama", "llama-big"]), window_seconds=60.0, max_records=50)
    src = ObserverSource(w)
    assert src.observe("llama", 0.0).demand is None  # nothing seen: unknown, not zero
    w.start(0.0)
    assert src.observe("llama", 20.0).demand is None  # less than half a window, nothing seen
    w.add_records([rec(i, 10.0 + i) for i in range(100)], 110.0)
    w.add_records([replace(rec(999, 100.0), prefill_pod="llama-big-prefill-0", decode_pod=None)], 110.0)
    w.add_records([replace(rec(1000, 100.0), prefill_pod="other-0", decode_pod="other-1")], 110.0)
    assert w.dropped == 1
    assert len(w.window("llama", 110.0)) == 50  # bounded; all within (50, 110]
    assert len(w.window("llama-big", 110.0)) == 1
    obs = src.observe("llama", 110.0)
    assert obs.demand is not None
    assert obs.demand.requests_per_s == pytest.approx(50 / 60)
    assert len(obs.samples.prefill) == 100  # every new record's sample, handed over once
    assert src.observe("llama", 110.0).samples.prefill == ()
    assert w.newest_end == 109.0
    assert src.observe("llama", 400.0).demand.requests_per_s == 0.0  # type: ignore[union-attr]  # live: zero traffic
    assert pool_by_model({"llama": "x"})(rec(1, 1.0)) == "x"
    dead = ObserverSource(w, live=lambda: False)
    assert dead.observe("llama", 110.0).demand is None
    stale = ObserverSource(w, data_age=lambda now: now - 110.0)
    assert stale.observe("llama", 400.0).demand.age_seconds == 290.0  # type: ignore[union-attr]
    ahead = RecordWindow(pool_by_pod_prefix(["llama"]))
    ahead.add_records([rec(1, 400.0)], 200.0)  # ends 200 s ahead of the clock it arrives with
    assert ahead.newest_end == 200.0  # the data is as fresh as its arrival, not fresher


def test_record_signals_starvation_after_three_windows_and_pressure() -> None:
    sig = RecordSignals(decode_tokens_per_s_per_replica=3000.0, ttft_min_seconds=2.0)
    slow = [rec(i, 50.0 + i, ttft=8.0, queue=6.0, prefill=1.5, kv_transfer=0.1, itl=0.2) for i in range(10)]
    got = [sig.signals("llama", 60.0 + 15 * k, slow, 6) for k in range(3)]
    assert [g.starvation for g in got] == [False, False, True]
    assert got[0].decode_pressure is True  # ITL p90 0.2 > 0.1
    fast = [replace(r, ttft=0.3) for r in slow]
    assert sig.signals("llama", 120.0, fast, 6).starvation is False  # fast TTFT: not starvation
    assert sig.signals("llama", 135.0, [], None).starvation is None  # unknown


def test_record_signals_read_the_decode_pods_kv_usage_and_preemptions() -> None:
    gauges: dict[str, dict[str, float]] = {"kv": {"d-0": 0.5, "d-1": 0.3}, "pre": {"d-0": 3.0, "d-1": 0.0}}

    def read(pool: str, now: float) -> DecodeGauges:
        return DecodeGauges(dict(gauges["kv"]), dict(gauges["pre"]))

    sig = RecordSignals(decode_tokens_per_s_per_replica=3000.0, ttft_min_seconds=2.0, decode_gauges=read)
    calm = [rec(i, 50.0 + i, ttft=0.5, queue=0.1, prefill=0.3, kv_transfer=0.05, itl=0.02) for i in range(10)]
    first = sig.signals("llama", 60.0, calm, 2)
    assert first.decode_pressure is None  # KV fine, but no preemption rate yet (first counter read)
    assert first.decode_kv_peak == pytest.approx(0.8)  # KV in use: 0.5 + 0.3 pod-equivalents
    assert sig.signals("llama", 70.0, calm, 2).decode_pressure is False  # everything known, calm
    gauges["kv"] = {"d-0": 0.95, "d-1": 0.6}  # one pod's KV usage >= 0.9 is decode pressure
    assert sig.signals("llama", 75.0, calm, 2).decode_pressure is True
    gauges["kv"] = {"d-0": 0.2, "d-1": 0.1}
    # a preemption between reads is pressure; a pod restart (counter drop) counts its new value,
    # a pod not seen before is a baseline
    gauges["pre"] = {"d-0": 3.0, "d-1": 1.0}
    assert sig.signals("llama", 90.0, calm, 2).decode_pressure is True
    gauges["pre"] = {"d-0": 0.0, "d-1": 1.0, "d-2": 0.0}
    later = sig.signals("llama", 105.0, calm, 2)
    assert later.decode_pressure is False
    assert later.decode_kv_peak == pytest.approx(1.55)  # the peak of the last 300 s
    assert sig.signals("llama", 400.0, calm, 2).decode_kv_peak == pytest.approx(0.3)  # aged out
    assert RecordSignals(3000.0, 2.0).signals("llama", 60.0, calm, 2).decode_kv_peak is None  # not read


@dataclass
class _F:
    firing: bool
    unknown: bool = False


@dataclass
class _B:
    imbalanced: bool
    unknown: bool = False


@dataclass
class _Pool:
    starvation: _F
    pressure: _F
    balance: _B


@dataclass
class _Casc:
    tenant: str
    firing: bool


@dataclass
class _Tenant:
    cascade: _Casc


@dataclass
class _Snap:
    time: float
    tenants: tuple[_Tenant, ...]
    pools: dict[str, _Pool]

    def pool(self, name: str) -> _Pool | None:
        return self.pools.get(name)


def test_engine_signals_adapter() -> None:
    snap = _Snap(
        100.0,
        (_Tenant(_Casc("a", True)), _Tenant(_Casc("b", False))),
        {"llama": _Pool(_F(True), _F(False, unknown=True), _B(True))},
    )
    es = EngineSignals(lambda: snap)
    s = es.signals("llama", 130.0, [], None)
    assert (s.starvation, s.decode_pressure, s.load_imbalance) == (True, None, True)
    assert s.cascade_tenants == ("a",)
    assert s.age_seconds == 30.0
    assert es.signals("other", 130.0, [], None).starvation is None
    assert EngineSignals(lambda: None).signals("llama", 1.0, [], None).age_seconds == math.inf
    assert s.decode_kv_peak is None  # no pod reading: the KV headroom floor is off


def test_engine_signals_carry_the_decode_kv_peak_from_the_pod_reading() -> None:
    snap = _Snap(100.0, (), {"llama": _Pool(_F(False), _F(False), _B(False))})
    kv: dict[str, DecodeGauges] = {"llama": DecodeGauges({"d1": 0.5, "d2": 0.3})}
    es = EngineSignals(lambda: snap, lambda pool, now: kv.get(pool, DecodeGauges()))
    assert es.signals("llama", 100.0, [], 2).decode_kv_peak == pytest.approx(0.8)
    kv["llama"] = DecodeGauges({"d1": 0.2, "d2": 0.1})
    assert es.signals("llama", 200.0, [], 2).decode_kv_peak == pytest.approx(0.8)  # the window's peak
    kv["llama"] = DecodeGauges()  # unknown now: the peak of the readings still in the window
    assert es.signals("llama", 420.0, [], 2).decode_kv_peak == pytest.approx(0.3)
    assert es.signals("llama", 600.0, [], 2).decode_kv_peak is None  # every reading aged out


def test_sim_target_over_the_twin() -> None:
    sink = MemorySink()
    twin = build_scenario("steady", sink=sink, duration=200.0, start=1000.0)
    t = SimScaleTarget(twin.actuator)
    pool = twin.fleet.profile.pool
    assert t.status(pool, P) == RoleStatus(2, 2, True, False)
    assert t.scale(pool, P, 4, dry_run=True).endswith("(dry run)")
    assert t.status(pool, P).replicas == 2
    t.scale(pool, P, 4, dry_run=False)
    st = t.status(pool, P)
    # starting pods: a scale-up in progress (ready < desired), not a template rollout
    assert (st.replicas, st.ready, st.rollout_in_progress, st.stable) == (4, 2, False, False)
    twin.run(100.0)  # past the cold start
    assert t.status(pool, P).stable
    assert t.actions == 1
    w = t.weights(pool)
    t.set_weights(pool, {c.SCORER_PREFIX_CACHE: w[c.SCORER_PREFIX_CACHE] + 1}, now=twin.now, dry_run=False)
    assert t.weights(pool)[c.SCORER_PREFIX_CACHE] == w[c.SCORER_PREFIX_CACHE] + 1  # pending = configured
    assert t.weights(pool)[c.SCORER_QUEUE] == w[c.SCORER_QUEUE]  # merged, others kept
    # the EPP rolls out the change in the twin's restart delay
    assert t.epp_rolled_out(pool) is False
    twin.run(twin.now + twin.fleet.profile.epp.restart_delay_s + 1.0)
    assert t.epp_rolled_out(pool) is True
    t.set_decider_threshold(pool, 4096, now=twin.now, dry_run=False)
    assert t.epp_rolled_out(pool) is False
    with pytest.raises(NotFoundError):
        t.status("nope", P)
    with pytest.raises(NotFoundError):
        t.epp_rolled_out("nope")
    with pytest.raises(PermanentError):
        t.scale(pool, D, 0, dry_run=False)


def test_record_of_matches_the_twin_truth() -> None:
    sink = MemorySink()
    twin = build_scenario("steady", sink=sink, duration=60.0, start=1000.0)
    twin.run()
    got: list[RequestRecord] = []
    tap = TwinRecordSink(lambda rs, now: got.extend(rs))
    for r in sink.requests[:50]:
        tap.request_completed(r)
        x = record_of(r)
        first = r.prefill or r.decode
        assert x.ttft == pytest.approx(r.decode.first_token - first.arrival)
        assert x.cached_tokens == r.cached_tokens
        assert x.disaggregated == r.disaggregated
        assert x.decode_pod == r.decode.pod
    assert len(got) == 50


def test_loop_inside_the_service_feeds_from_the_pipeline_and_serves_decisions() -> None:
    settings = llama_settings()
    scale = InMemoryScaleTarget({("llama", P): RoleStatus(3, 3), ("llama", D): RoleStatus(3, 3)})
    clock = ManualClock(1000.0)
    made: list[Controller] = []
    log = MemoryAuditLog()
    factory = observe_factory(scale, clock, made)

    att = attach(settings, controller_factory=factory, audit_log=log, background=False)
    from observer.api.app import create_app

    app = create_app(
        settings,
        MemoryStore(),
        extra_routers=list(att.routers),
        on_startup=list(att.on_startup),
        clock=clock.now,
    )
    with TestClient(app) as client:
        pipeline = app.state.pipeline
        assert pipeline.listeners[-1].__self__.window is att.window  # the FleetRecordFeed's
        pipeline.listeners[-1]([rec(1, 999.0)], 1000.0)
        rep = made[0].tick()
        assert rep.effects is not None
        body = client.get("/api/v1/decisions").json()["decisions"]
        assert body[0]["mode"] == "observe"
        assert body[0]["inputs"]["demand"]["requests_per_s"] > 0
        # the queueing floor's input, served with the decision (the record's uncached tokens²/s)
        moments = body[0]["inputs"]["demand"]["prompt_moments"]
        assert set(moments) == {"uu", "dd", "kk", "ud", "uk", "dk"}
        assert moments["uu"] > 0
        # warm start: prefill is held at its start size on the first tick although demand is
        # tiny; decode keeps its need + 1 and its surplus would serve as prefill on top of
        # prefill's need (1 + 1), which the held 3 already cover (the warm-start shift)
        moves = {d["role"]: (d["before"], d["after"]) for d in body[0]["replicas"]}
        assert moves == {P: (3, 3), D: (3, 2)}
        assert "warm_shift" in body[0]["reasons"]
        assert c.M_DESIRED_REPLICAS in client.get("/metrics").text
    assert not scale.calls  # observe mode


def test_warm_start_seeds_current_replicas() -> None:
    scale = InMemoryScaleTarget({("p", P): RoleStatus(4, 4)})
    clock = ManualClock(0.0)
    ctl = Controller(
        config=Config({"p": PoolConfig("p")}),
        mode=Mode.OBSERVE,
        scale=scale,
        source=ObserverSource(RecordWindow(pool_by_pod_prefix(["p"]))),
        clock=clock,
        sleeper=clock,
        audit=MemoryAuditLog(),
    )
    warm_start(ctl, scale, 5.0)
    recs = ctl.state.pools["p"].recommendations
    assert [(r.role, r.replicas, r.at) for r in recs] == [(P, 4, 5.0)]  # decode unreadable: not seeded


def test_demand_tier_shares_and_ttft_p90() -> None:
    rs = [
        rec(
            i,
            100.0 + i,
            prompt_tokens=1000,
            output_tokens=50,
            cached=TierTokens(hbm=100, dram=200, disk=300),
            ttft=float(i + 1) / 10,
        )
        for i in range(10)
    ]
    d = demand_of(rs, 60.0, backlog=False)
    assert d.hit_rate == pytest.approx(0.6)
    assert d.dram_hit_share == pytest.approx(0.2)
    assert d.disk_hit_share == pytest.approx(0.3)
    assert d.ttft_p90_seconds == pytest.approx(0.9)
    empty = demand_of([], 60.0)
    assert empty.ttft_p90_seconds is None
    assert empty.disk_hit_share == 0.0
    assert empty.prompt_moments is None


def test_prompt_moments_give_the_second_moment_of_the_per_request_prefill_work() -> None:
    # two requests: (u, d, k) = (600, 0, 400) and (100, 900, 0) tokens, over a 10 s window
    rs = [
        rec(0, 100.0, prompt_tokens=1000, cached=TierTokens(disk=400)),
        rec(1, 101.0, prompt_tokens=1000, cached=TierTokens(dram=900)),
    ]
    d = demand_of(rs, 10.0, backlog=False)
    m = d.prompt_moments
    assert m is not None
    a, b = 0.5, 2.0
    w = [600 + b * 400, 100 + a * 900]
    assert m.work_sq(a, b) == pytest.approx(sum(x * x for x in w) / 10.0)
    assert (m.uu, m.dd, m.kk) == pytest.approx((370_000 / 10, 810_000 / 10, 160_000 / 10))
    # the backlog correction scales it with the prompt rate
    queued = demand_of([replace(r, queue=5.0) for r in rs], 10.0)
    assert queued.prompt_moments is not None
    assert queued.prompt_moments.work_sq(a, b) == pytest.approx(1.5 * m.work_sq(a, b))


def test_warm_start_hold_ages_out_after_the_observation_window() -> None:
    scale = InMemoryScaleTarget({("p", P): RoleStatus(6, 6), ("p", D): RoleStatus(6, 6)})
    clock = ManualClock(0.0)
    cfg = PoolConfig("p", scale_down_window_seconds=300.0)
    ctl = Controller(
        config=Config({"p": cfg}),
        mode=Mode.OBSERVE,
        scale=scale,
        source=ObserverSource(RecordWindow(pool_by_pod_prefix(["p"]))),
        clock=clock,
        sleeper=clock,
        audit=MemoryAuditLog(),
    )
    warm_start(ctl, scale, 1000.0, hold_seconds=60.0)
    recs = ctl.state.pools["p"].recommendations
    # dated so that it leaves the 300 s window 60 s from now
    assert {(r.role, r.replicas, r.at) for r in recs} == {(P, 6, 760.0), (D, 6, 760.0)}
    assert all(r.at >= 1059.0 - 300.0 for r in recs)
    assert all(r.at < 1061.0 - 300.0 for r in recs)
