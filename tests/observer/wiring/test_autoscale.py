"""The autoscaler on the twin (`observer.wiring.autoscale`) through `pd-observer replay`: the
controller in apply mode acts on the twin, fed by the in-process service's committed records."""

from __future__ import annotations

from observer import conventions as c
from observer.config import load_settings
from observer.wiring.autoscale import twin_autoscaler_settings, twin_pool_settings
from observer.wiring.replay import run_replay
from observer.wiring.twin import build_twin
from simulator.emit.fanout import Recorder

POOL = "llama-8b"


def test_pool_settings_bound_the_twins_replicas_and_configured_pools_win() -> None:
    twin = build_twin("prefill-burst", sink=Recorder(), seed=1)
    state = twin.actuator.get_state().pools[POOL].replicas
    (pool,) = twin_pool_settings(twin)
    assert pool["name"] == POOL
    for role in c.ROLES:
        now = state[role].desired
        assert pool[role]["min"] <= now <= pool[role]["max"]
        assert pool[role]["max"] > now  # room to scale up
    auto = twin_autoscaler_settings(load_settings(None, env={}), twin)
    assert auto.mode == "apply"
    assert auto.enabled
    assert not auto.lease.enabled
    assert [p.name for p in auto.pools] == [POOL]
    mine = dict(pool, prefill={**pool["prefill"], "max": 3})
    configured = load_settings(None, overrides={"autoscaler": {"pools": [mine], "mode": "observe"}}, env={})
    auto = twin_autoscaler_settings(configured, twin)
    assert auto.mode == "apply"  # the twin is always driven in apply mode
    assert auto.pools[0].prefill.max == 3


def test_replay_with_the_autoscaler_scales_prefill_for_the_burst() -> None:
    res = run_replay("prefill-burst", seed=1, duration=600, autoscaler=True)
    assert res.decisions is not None
    assert res.rejected_spans == 0
    prefill_ups = [d for d in res.decisions if d["ok"] and d["text"].startswith(f"{c.ROLE_PREFILL} ")]
    assert prefill_ups, res.decisions
    burst = next(e["time"] for e in res.events if e.get("phase") == "prefill-burst") - res.sim_start
    assert any(d["elapsed"] >= burst for d in prefill_ups)  # it reacts to the burst, not only to boot
    # the twin obeyed: scale events from the fleet itself, not just the controller's intent
    scaled = [e for e in res.events if e["kind"] == "scale" and e.get("role") == c.ROLE_PREFILL]
    assert any(int(e["after"]) > int(e["before"]) for e in scaled)
    assert "autoscaler_decisions" in res.as_json()


def test_replay_without_the_autoscaler_leaves_the_fleet_alone() -> None:
    res = run_replay("prefill-burst", seed=1, duration=120)
    assert res.decisions is None
    assert not [e for e in res.events if e["kind"] == "scale"]
    assert "autoscaler_decisions" not in res.as_json()
