"""The loop over in-memory adapters: retries as data, modes, leadership, audit."""

from __future__ import annotations

import sys
import time

import pytest

from autoscaler import loop
from autoscaler.loop import Controller, LeadershipLost, Mode, RetryPolicy, SystemClock, call_with_retries
from autoscaler.ports import (
    InMemoryLease,
    InMemoryScaleTarget,
    InMemoryWeightTarget,
    LeaseRecordStore,
    ManualClock,
    MemoryAuditSink,
    NotFoundError,
    PermanentError,
    StaticObservations,
    TemporaryError,
)
from autoscaler.types import Config, Demand, PoolConfig, RoleConfig, RoleStatus, Signals
from observer import conventions as c

P, D = c.ROLE_PREFILL, c.ROLE_DECODE


def config() -> Config:
    roles = {P: RoleConfig(1, 8, 2, 1, 10_000.0), D: RoleConfig(1, 8, 2, 1, 2_000.0)}
    return Config(
        {"p": PoolConfig(name="p", roles=roles, scale_up_cooldown_seconds=0, scale_down_cooldown_seconds=0)}
    )


def make(
    mode: Mode, **kw: object
) -> tuple[Controller, InMemoryScaleTarget, InMemoryWeightTarget, ManualClock, MemoryAuditSink]:
    scale = InMemoryScaleTarget({("p", P): RoleStatus(1, 1), ("p", D): RoleStatus(1, 1)})
    weights = InMemoryWeightTarget({"p": {c.SCORER_PREFIX_CACHE: 2.0, c.SCORER_QUEUE: 1.0}})
    clock = ManualClock(1000.0)
    audit = MemoryAuditSink()
    source = StaticObservations(
        demand={"p": Demand(40_000, 4_000, 0.5, 40)}, signals={"p": Signals(cascade_tenants=("t1",))}
    )
    ctl = Controller(
        config=config(),
        mode=mode,
        scale=scale,
        weights=weights,
        source=source,
        clock=clock,
        sleeper=clock,
        audit=audit,
        retry=RetryPolicy((1.0, 2.0)),
        **kw,  # type: ignore[arg-type]
    )
    return ctl, scale, weights, clock, audit


def test_retry_sequence_is_data() -> None:
    clock = ManualClock()
    calls = []

    def op() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise TemporaryError("busy")
        return "ok"

    assert call_with_retries(op, RetryPolicy((0.5, 1.5, 9.0)), clock) == ("ok", 3)
    assert clock.slept == [0.5, 1.5]


def test_permanent_error_is_not_retried() -> None:
    clock = ManualClock()

    def op() -> None:
        raise NotFoundError("gone")

    with pytest.raises(PermanentError):
        call_with_retries(op, RetryPolicy((0.5,)), clock)
    assert clock.slept == []


def test_apply_mode_scales_downs_first_and_audits() -> None:
    ctl, scale, weights, _, audit = make(Mode.APPLY)
    report = ctl.tick()
    assert scale.statuses[("p", P)].replicas == 3
    assert scale.statuses[("p", D)].replicas == 3
    assert weights.data["p"][c.SCORER_PREFIX_CACHE] == 3.0
    assert all(o.ok for o in report.outcomes)
    (entry,) = audit.entries
    assert entry.pool == "p"
    assert {o.target for o in entry.outcomes} == {P, D, "weights"}


def test_observe_mode_touches_nothing_dry_run_passes_the_flag() -> None:
    ctl, scale, weights, _, _ = make(Mode.OBSERVE)
    ctl.tick()
    assert scale.calls == []
    assert weights.calls == []
    ctl, scale, weights, _, _ = make(Mode.DRY_RUN)
    ctl.tick()
    assert {call[3] for call in scale.calls} == {True}
    assert scale.statuses[("p", P)].replicas == 1


def test_temporary_failures_are_retried_then_reported() -> None:
    ctl, scale, _, clock, _ = make(Mode.APPLY)
    scale.faults.extend([TemporaryError("409"), TemporaryError("500"), TemporaryError("timeout")])
    report = ctl.tick()
    failed = [o for o in report.outcomes if not o.ok]
    assert len(failed) == 1
    assert failed[0].attempts == 3
    assert "gave up" in failed[0].detail
    assert clock.slept == [1.0, 2.0]


def test_standby_does_nothing_and_lost_leader_raises() -> None:
    store = LeaseRecordStore()
    a, _, _, clock_a, _ = make(Mode.APPLY, lease=InMemoryLease(store, "a", 15.0))
    b, scale_b, _, _, _ = make(Mode.APPLY, lease=InMemoryLease(store, "b", 15.0))
    assert a.tick().leader
    assert not b.tick().leader
    assert scale_b.calls == []
    store.holder = "b"  # b took over while a was stalled
    store.renewed = clock_a.now() + 100
    clock_a.advance(30)
    with pytest.raises(LeadershipLost):
        a.tick()


def test_run_releases_the_lease() -> None:
    store = LeaseRecordStore()
    ctl, _, _, clock, _ = make(Mode.OBSERVE, lease=InMemoryLease(store, "a", 15.0), interval_seconds=10.0)
    reports = ctl.run(max_ticks=3)
    assert len(reports) == 3
    assert clock.slept == [10.0, 10.0]
    assert store.holder is None


def test_the_loop_inside_serve_releases_the_lease_when_the_service_stops() -> None:
    import asyncio

    from autoscaler.service import BackgroundLoop

    store = LeaseRecordStore()
    ctl, _, _, _, _ = make(Mode.OBSERVE, lease=InMemoryLease(store, "a", 15.0), interval_seconds=0.01)

    async def serve_then_stop() -> None:
        task = asyncio.create_task(BackgroundLoop(ctl).run())
        while store.holder != "a":
            await asyncio.sleep(0.005)
        task.cancel()  # what the service's shutdown does to its tasks
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(serve_then_stop())
    assert store.holder is None


def test_the_loop_inside_serve_stands_by_after_a_lost_lease_and_leads_again() -> None:
    """Another instance took the lease (or an API outage passed the renew deadline): the loop
    inside `serve` used to end for good, so autoscaling stopped until the pod restarted. It now
    stands by (acts no more, the leader gauge reads 0) and leads again once the lease is free."""
    import asyncio

    from autoscaler.metrics import AutoscalerCollector
    from autoscaler.service import BackgroundLoop

    store = LeaseRecordStore()
    ctl, scale, _, clock, _ = make(Mode.APPLY, lease=InMemoryLease(store, "a", 15.0), interval_seconds=0.01)
    gauge = AutoscalerCollector()

    def leader_gauge() -> float | None:
        found = [m for m in gauge.collect() if m.name == c.M_AUTOSCALER_LEADER]
        return found[0].samples[0].value if found else None

    async def lose_then_regain() -> None:
        loop = BackgroundLoop(ctl, on_tick=gauge.set_leader)
        task = asyncio.create_task(loop.run())

        async def until(pred: object) -> None:
            for _ in range(2000):
                if pred():  # type: ignore[operator]
                    return
                await asyncio.sleep(0.005)
            raise AssertionError("timed out")

        await until(lambda: leader_gauge() == 1.0)
        store.holder, store.renewed = "b", clock.now() + 1e6  # b holds it, renewed "now"
        await until(lambda: leader_gauge() == 0.0)
        acted = len(scale.calls)
        await asyncio.sleep(0.1)  # standing by: ticking, not acting
        assert len(scale.calls) == acted
        assert not task.done()
        store.holder = None  # b released it
        await until(lambda: leader_gauge() == 1.0 and store.holder == "a")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(lose_then_regain())


def test_a_stop_during_a_tick_retries_nothing_sends_nothing_new_and_audits_it() -> None:
    from autoscaler.loop import NOT_SENT_STOPPING

    store = LeaseRecordStore()
    ctl, scale, _, clock, audit = make(Mode.APPLY, lease=InMemoryLease(store, "a", 60.0))
    sent: list[str] = []

    def stopped_in_flight(pool: str, role: str, replicas: int, *, dry_run: bool) -> str:
        sent.append(role)
        ctl.stop()  # SIGTERM arrives while this request is in flight; it then fails
        raise TemporaryError("HTTP 503")

    scale.scale = stopped_in_flight  # type: ignore[method-assign]
    reports = ctl.run()  # one tick, then the loop ends: no retry sleep, no interval sleep
    assert len(reports) == 1
    assert clock.slept == []
    assert len(sent) == 1
    (entry,) = audit.entries
    first, *rest = entry.outcomes
    assert (first.target, first.ok, first.attempts) == (sent[0], False, 1)
    assert first.detail.startswith("gave up: not retried, the loop is stopping: HTTP 503")
    assert rest, "the tick had more to do (the other role, the scorer weights)"
    assert all((o.ok, o.detail, o.attempts) == (False, NOT_SENT_STOPPING, 0) for o in rest)
    assert store.holder is None  # released on the way out


def test_the_real_clock_sleep_ends_when_interrupted() -> None:
    import threading
    import time

    from autoscaler.loop import SystemClock

    clock = SystemClock()
    threading.Timer(0.1, clock.interrupt).start()
    t0 = time.monotonic()
    clock.sleep(30)
    clock.sleep(30)  # and every later one
    assert time.monotonic() - t0 < 5


def test_cooldown_only_follows_real_changes() -> None:
    from dataclasses import replace

    from autoscaler.types import ReasonCode

    ctl, scale, _, clock, _ = make(Mode.OBSERVE)
    ctl.config = Config({"p": replace(ctl.config.pools["p"], scale_up_cooldown_seconds=600)})
    ctl.tick()
    clock.advance(15)
    second = ctl.tick()
    assert second.effects is not None
    assert all(ReasonCode.COOLDOWN not in d.reasons for d in second.effects.decisions)
    # a failed apply does not start a cooldown either; a successful one does
    ctl.mode = Mode.APPLY
    scale.faults.extend([PermanentError("403")])
    clock.advance(15)
    third = ctl.tick()
    assert any(not o.ok for o in third.outcomes)
    clock.advance(15)
    fourth = ctl.tick()
    assert fourth.effects is not None
    prefill = next(d for d in fourth.effects.decisions if d.role == P)
    assert ReasonCode.COOLDOWN not in prefill.reasons
    assert scale.statuses[("p", P)].replicas == 3


def test_the_epp_rollout_is_read_with_the_config_and_holds_the_write() -> None:
    from autoscaler.types import ReasonCode

    ctl, _, weights, _, audit = make(Mode.APPLY)
    weights.rolled_out["p"] = False  # the EPP's last restart is still rolling out
    ctl.tick()
    (entry,) = audit.entries
    assert entry.observation.epp_rolled_out is False
    assert ReasonCode.EPP_ROLLOUT in {h.reason for h in entry.holds}
    assert weights.calls == []  # the cascade's weight change waits
    # an unreadable EPP config: its rollout is not read (nothing could be written anyway)
    del weights.data["p"]
    ctl.tick()
    assert audit.entries[-1].observation.epp_rolled_out is None


def both_levers(
    monkeypatch: pytest.MonkeyPatch, weights: InMemoryWeightTarget
) -> list[tuple[object, object]]:
    """The policy changes both EPP levers of pool p this tick; the (weights, decider) of every
    EPP write made are recorded in the list returned."""
    from autoscaler import loop
    from autoscaler.types import DeciderChange, Effects, PolicyState, ReasonCode, WeightChange

    written: list[tuple[object, object]] = []
    set_epp = weights.set_epp

    def spy(pool: str, **kw: object) -> str:
        written.append((kw.get("weights"), kw.get("decider")))
        return set_epp(pool, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(weights, "set_epp", spy)
    effects = Effects(
        decisions=(),
        weight_changes=(WeightChange("p", c.SCORER_PREFIX_CACHE, 2.0, 3.0, (ReasonCode.CACHE_CASCADE,)),),
        holds=(),
        state=PolicyState(),
        decider_changes=(DeciderChange("p", 512, 4096, (ReasonCode.PREFILL_OVERFLOW,)),),
    )
    monkeypatch.setattr(loop, "decide", lambda *_: effects)
    return written


def test_weights_and_decider_of_a_tick_are_one_write(monkeypatch: pytest.MonkeyPatch) -> None:
    # each EPP config write restarts the EPP: both levers changed in one tick go out together,
    # and the one write is the outcome of both (so both cooldowns start)
    ctl, _, weights, _, audit = make(Mode.APPLY)
    weights.deciders["p"] = 512
    written = both_levers(monkeypatch, weights)
    report = ctl.tick()
    assert written == [({c.SCORER_PREFIX_CACHE: 3.0}, 4096)]
    assert [(o.target, o.ok, o.shared) for o in report.outcomes] == [
        ("weights", True, False),
        ("decider", True, True),
    ]
    assert weights.deciders["p"] == 4096
    assert weights.data["p"][c.SCORER_PREFIX_CACHE] == 3.0
    assert len(audit.entries) == 1


def test_one_levers_permanent_error_does_not_hold_the_other(monkeypatch: pytest.MonkeyPatch) -> None:
    # the decider plugin is gone from the config: the write of both fails for good, and the
    # weights then go out on their own
    ctl, _, weights, _, _ = make(Mode.APPLY)
    written = both_levers(monkeypatch, weights)
    report = ctl.tick()
    assert written == [
        ({c.SCORER_PREFIX_CACHE: 3.0}, 4096),
        ({c.SCORER_PREFIX_CACHE: 3.0}, None),
        (None, 4096),
    ]
    assert [(o.target, o.ok) for o in report.outcomes] == [("weights", True), ("decider", False)]
    assert weights.data["p"][c.SCORER_PREFIX_CACHE] == 3.0


def test_a_failed_write_of_both_levers_is_one_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from autoscaler.metrics import AutoscalerCollector

    ctl, _, weights, _, audit = make(Mode.APPLY)
    weights.deciders["p"] = 512
    written = both_levers(monkeypatch, weights)

    def unavailable(pool: str, **kw: object) -> str:
        written.append((kw.get("weights"), kw.get("decider")))
        raise TemporaryError("503")

    monkeypatch.setattr(weights, "set_epp", unavailable)
    report = ctl.tick()
    assert len(written) == 3  # one write of both, tried 3 times (RetryPolicy((1.0, 2.0)))
    assert [(o.target, o.ok, o.shared) for o in report.outcomes] == [
        ("weights", False, False),
        ("decider", False, True),
    ]
    col = AutoscalerCollector()
    col.record(audit.entries[-1])
    (errors,) = [m for m in col.collect() if m.name == c.M_ACTUATION_ERRORS]
    assert [s.value for s in errors.samples if s.name.endswith("_total")] == [1]


@pytest.mark.skipif(sys.platform != "linux", reason="CLOCK_BOOTTIME is Linux's")
def test_system_clock_elapsed_time_counts_suspend(monkeypatch: pytest.MonkeyPatch) -> None:
    # leadership's elapsed time is read from CLOCK_BOOTTIME (it counts suspend), not from
    # CLOCK_MONOTONIC: a clock that moved on while the machine slept must be the one seen
    assert loop.ELAPSED_CLOCK_ID == time.CLOCK_BOOTTIME
    real = time.clock_gettime
    asleep = 3600.0
    monkeypatch.setattr(
        time, "clock_gettime", lambda cid: real(cid) + (asleep if cid == time.CLOCK_BOOTTIME else 0.0)
    )
    assert SystemClock().monotonic() - time.monotonic() > asleep - 1.0
    # without the clock (another OS) it is time.monotonic
    monkeypatch.setattr(loop, "ELAPSED_CLOCK_ID", None)
    assert abs(SystemClock().monotonic() - time.monotonic()) < 1.0


def test_a_new_leader_restores_what_its_predecessor_raised(tmp_path: object) -> None:
    """Leader a raised the P/D decider's threshold 512 -> 8192 to bridge a prefill cold start,
    and the prefix-cache weight 2 -> 3 for a cascade, then stopped (a rollout, a failover). Its
    successor b used to read 8192 and 3 as the operator's and keep them for good (prefilling on
    the decode pods); it now recalls a's changes from the shared audit log (SQL): it restores
    512 once prefill copes, and takes 2 as the weight to relax back to."""
    from pathlib import Path

    from autoscaler.audit import SqlAuditLog
    from autoscaler.ports import AuditEntry
    from autoscaler.types import DeciderChange, PoolObservation, ReasonCode, WeightChange
    from observer.store import Store

    url = f"sqlite:///{Path(str(tmp_path)) / 'pdo.db'}"
    Store.open(url).upgrade()
    log = SqlAuditLog.open(url)
    raised = DeciderChange("p", 512, 8192, (ReasonCode.PREFILL_OVERFLOW,), baseline=512)
    observed = PoolObservation("p", {}, None, Signals(), None, decider_threshold=512)
    bumped = WeightChange("p", c.SCORER_PREFIX_CACHE, 2.0, 3.0, (ReasonCode.CACHE_CASCADE,), baseline=2.0)
    log.record(AuditEntry(990.0, "p", "apply", observed, (), (bumped,), (), (), decider_changes=(raised,)))
    try:
        store = LeaseRecordStore()
        b, _, weights, _, _ = make(Mode.APPLY, lease=InMemoryLease(store, "b", 15.0), memory=log)
        weights.deciders["p"] = 8192  # a's raises, in effect
        weights.data["p"][c.SCORER_PREFIX_CACHE] = 3.0
        report = b.tick()
        assert report.effects is not None
        (x,) = report.effects.decider_changes
        assert (x.current, x.desired, x.baseline) == (8192, 512, 512)
        assert weights.deciders["p"] == 512
        assert log.recall("p").decider == raised  # the round trip through the SQL row
        assert log.recall("p").weights == {c.SCORER_PREFIX_CACHE: bumped}
        # the weight a raised is not taken for the operator's: it relaxes back to 2.0 later
        assert b.state.pools["p"].weight_baseline[c.SCORER_PREFIX_CACHE] == 2.0

        forgetful, _, weights2, _, _ = make(Mode.APPLY)  # no memory: the raise is kept for good
        weights2.deciders["p"] = 8192
        weights2.data["p"][c.SCORER_PREFIX_CACHE] = 3.0
        assert forgetful.tick().effects.decider_changes == ()  # type: ignore[union-attr]
        assert weights2.deciders["p"] == 8192
        assert forgetful.state.pools["p"].weight_baseline[c.SCORER_PREFIX_CACHE] == 3.0
    finally:
        log.close()
