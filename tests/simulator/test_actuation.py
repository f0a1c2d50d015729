"""The actuation interface obeys cold start, drain and EPP restart delay."""

from __future__ import annotations

import pytest

from observer import conventions as c
from simulator.fleet import EVENT_POD_READY, EVENT_POD_REMOVED, EVENT_WEIGHTS_APPLIED, MemorySink
from simulator.scenarios import Twin, build_scenario


def _twin(duration: float = 300.0) -> tuple[Twin, MemorySink]:
    sink = MemorySink()
    return build_scenario("steady", sink=sink, seed=5, duration=duration), sink


def test_scale_up_pods_ready_after_cold_start_then_take_work() -> None:
    twin, sink = _twin()
    pool = twin.fleet.profile.pool
    cold = twin.fleet.profile.cold_start_s
    twin.run_until(20.0)
    twin.actuator.set_replicas(pool, c.ROLE_DECODE, 8)
    reps = twin.actuator.get_state().pools[pool].replicas[c.ROLE_DECODE]
    assert (reps.desired, reps.ready, reps.starting, reps.draining) == (8, 6, 2, 0)
    twin.run_until(20.0 + cold - 1.0)
    assert twin.actuator.get_state().pools[pool].replicas[c.ROLE_DECODE].ready == 6
    twin.run_until(20.0 + cold + 1.0)
    assert twin.actuator.get_state().pools[pool].replicas[c.ROLE_DECODE].ready == 8
    ready = [e for e in sink.events if e.kind == EVENT_POD_READY]
    assert [e.time for e in ready] == [pytest.approx(20.0 + cold)] * 2
    new = {str(e.detail["pod"]) for e in ready}
    twin.run()
    served = [r for r in sink.requests if r.decode.pod in new]
    assert served
    assert min(r.decode.arrival for r in served) >= 20.0 + cold


def test_scale_down_drains_without_losing_requests() -> None:
    twin, sink = _twin()
    pool = twin.fleet.profile.pool
    twin.run_until(100.0)
    before = {p.name for p in twin.fleet.all_pods()}
    twin.actuator.set_replicas(pool, c.ROLE_PREFILL, 1)
    twin.actuator.set_replicas(pool, c.ROLE_DECODE, 3)
    state = twin.actuator.get_state().pools[pool].replicas
    assert state[c.ROLE_DECODE].desired == 3
    assert state[c.ROLE_DECODE].ready == 3
    assert state[c.ROLE_DECODE].draining + len([e for e in sink.events if e.kind == EVENT_POD_REMOVED]) >= 3
    twin.run()
    twin.run_until(twin.end + 300.0)  # let everything finish
    fleet = twin.fleet
    assert fleet.arrived == fleet.completed == len(sink.requests)
    removed = {str(e.detail["pod"]) for e in sink.events if e.kind == EVENT_POD_REMOVED}
    assert len(removed) == 4
    assert removed <= before
    # drained pods finished their in-flight work and took nothing new
    late = [r for r in sink.requests if r.arrival > 100.0]
    assert late
    assert not any(r.decode.pod in removed for r in late)
    assert not any(r.prefill is not None and r.prefill.pod in removed for r in late)
    assert any(r.decode.pod in removed and r.decode.finished > 100.0 for r in sink.requests)
    state = twin.actuator.get_state().pools[pool].replicas
    assert (state[c.ROLE_PREFILL].ready, state[c.ROLE_DECODE].ready) == (1, 3)
    assert state[c.ROLE_DECODE].draining == 0


def test_weight_change_applies_after_restart_delay_and_latest_wins() -> None:
    twin, sink = _twin()
    pool = twin.fleet.profile.pool
    delay = twin.fleet.profile.epp.restart_delay_s
    original = dict(twin.actuator.get_state().pools[pool].weights_active)
    twin.run_until(50.0)
    first = {c.SCORER_QUEUE: 1.0}
    assert twin.actuator.set_scorer_weights(pool, first) == pytest.approx(50.0 + delay)
    twin.run_until(60.0)
    second = {c.SCORER_PREFIX_CACHE: 5.0, c.SCORER_QUEUE: 1.0}
    twin.actuator.set_scorer_weights(pool, second)
    state = twin.actuator.get_state().pools[pool]
    assert state.weights_active == original
    assert state.weights_pending == second
    assert state.weights_effective_at == pytest.approx(60.0 + delay)
    twin.run_until(50.0 + delay + 1.0)
    assert twin.actuator.get_state().pools[pool].weights_active == original  # first was superseded
    twin.run_until(60.0 + delay + 1.0)
    state = twin.actuator.get_state().pools[pool]
    assert state.weights_active == second
    assert state.weights_pending is None
    applied = [e for e in sink.events if e.kind == EVENT_WEIGHTS_APPLIED]
    assert [e.time for e in applied] == [pytest.approx(60.0 + delay)]


def test_bad_actuation_is_rejected() -> None:
    twin, _ = _twin(60.0)
    pool = twin.fleet.profile.pool
    with pytest.raises(ValueError, match="unknown pool"):
        twin.actuator.set_replicas("nope", c.ROLE_DECODE, 1)
    with pytest.raises(ValueError, match="unknown role"):
        twin.actuator.set_replicas(pool, "router", 1)
    with pytest.raises(ValueError, match=">= 0"):
        twin.actuator.set_replicas(pool, c.ROLE_PREFILL, -1)
    with pytest.raises(ValueError, match=">= 0"):
        twin.actuator.set_scorer_weights(pool, {c.SCORER_QUEUE: -1.0})
