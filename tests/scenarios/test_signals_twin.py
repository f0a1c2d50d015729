"""The fleet signals on the twin: fast clock, OTLP bytes into the app, /metrics over loopback HTTP.

Onset = the scenario phase start (`Twin.phases`); detection latency = first firing tick - onset,
ticks every 15 simulated seconds (the scrape interval). Target: <= 120 s.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from multiprocessing.pool import AsyncResult

import pytest

from observer import conventions as c
from observer.api.pools import gauge_values
from observer.signals.engine import FleetSignals
from simulator.scenarios import BURST_TENANT, HEAVY, VICTIM
from tests.scenarios.twin import POOL, twin_run

TARGET_LATENCY = 120.0


def _phase(run_phases: tuple[tuple[str, float], ...], name: str) -> float:
    return dict(run_phases)[name]


def _cascade(fs: FleetSignals, tenant: str) -> bool:
    t = fs.tenant(tenant)
    return t is not None and t.cascade.firing


def _starving(fs: FleetSignals) -> bool:
    return any(p.starvation.firing for p in fs.pools)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_cache_cascade_fires_within_two_minutes_and_names_the_evictor(seed: int) -> None:
    with twin_run("cache-cascade", seed=seed) as run:
        onset = _phase(run.twin.phases, "cache-cascade")
        run.step(onset)
        before = run.history[:]
        run.step(onset + 180)
        # quiet before the onset: no cascade, no starvation
        assert not any(_cascade(fs, VICTIM) or _starving(fs) for fs in before)
        fired = run.first_firing(lambda fs: _cascade(fs, VICTIM), onset)
        assert fired is not None, "cascade never fired for the victim"
        latency = fired - onset
        print(f"\ncache-cascade seed {seed}: cascade detected {latency:.0f} s after onset")
        assert latency <= TARGET_LATENCY
        first = next(fs for fs in run.history if fs.time == fired)
        sig = first.tenant(VICTIM)
        assert sig is not None
        # evidence: the numbers that made it fire
        ev = sig.cascade
        assert ev.hbm_share_drop is not None
        assert ev.hbm_share_drop >= 0.3
        assert ev.ttft_ratio is not None
        assert ev.ttft_ratio >= 2.0
        assert ev.evictors
        assert ev.evictors[0].tenant == HEAVY
        assert ev.evictors[0].occupancy_now > ev.evictors[0].occupancy_before
        # other tenants with long prefixes are evicted too (true in the twin); no firing tenant ever
        # names anyone but the heavy tenant, the victim always names it, and it never cascades itself
        firing = [t.cascade for fs in run.history for t in fs.tenants if t.cascade.firing]
        assert all({e.tenant for e in s.evictors} <= {HEAVY} for s in firing)
        assert all([e.tenant for e in s.evictors] == [HEAVY] for s in firing if s.tenant == VICTIM)
        assert not any(s.tenant == HEAVY for s in firing)

        # the same thing through the API and /metrics
        while not _cascade(run.engine.latest, VICTIM):  # type: ignore[arg-type]
            run.step(run.twin.now + 15)
        entry = run.client.get(f"/api/v1/tenants/{VICTIM}", params={"window": 300}).json()
        casc = entry[c.API_SIGNALS]["cascade"]
        assert casc["status"] == "firing"
        assert casc["evidence"]["hbm_share_drop"] >= 0.3
        assert [e["tenant"] for e in casc["evidence"]["evictors"]] == [HEAVY]
        listing = run.client.get("/api/v1/tenants", params={"window": 300}).json()
        assert all(c.API_SIGNALS in t for t in listing["tenants"])
        g = gauge_values(run.attachment.collector)
        assert g[(c.M_CASCADE, ((c.LABEL_TENANT, VICTIM),))] == 1.0
        assert g[(c.M_CASCADE, ((c.LABEL_TENANT, "tenant-c"),))] == 0.0  # judged, quiet
        # the newcomer has no baseline yet: unknown is absent, never a zero
        assert (c.M_CASCADE, ((c.LABEL_TENANT, HEAVY),)) not in g
        assert g[(c.M_HBM_SHARE_DROP, ((c.LABEL_TENANT, VICTIM),))] >= 0.3
        text = run.client.get("/metrics").text
        assert f'{c.M_CASCADE}{{{c.LABEL_TENANT}="{VICTIM}"}} 1.0' in text


def test_prefill_burst_starves_decode_within_two_minutes() -> None:
    with twin_run("prefill-burst") as run:
        onset = _phase(run.twin.phases, "prefill-burst")
        run.step(onset)
        assert not any(_starving(fs) for fs in run.history)
        run.step(onset + 150)
        fired = run.first_firing(_starving, onset)
        assert fired is not None, "starvation never fired"
        latency = fired - onset
        print(f"\nprefill-burst: starvation detected {latency:.0f} s after onset")
        assert latency <= TARGET_LATENCY
        pool = next(fs for fs in run.history if fs.time == fired).pool(POOL)
        assert pool is not None
        assert pool.starvation.firing
        assert pool.pre_decode_ttft_share is not None
        assert pool.pre_decode_ttft_share >= 0.5
        assert pool.window.decode_busy_ratio is not None
        assert pool.window.decode_busy_ratio <= 0.5
        assert pool.starvation.consecutive >= 3
        # the burst is one tenant's documents; no cache cascade is claimed for anyone
        assert not any(
            t.cascade.firing for fs in run.history for t in fs.tenants if t.cascade.tenant == BURST_TENANT
        )
        body = run.client.get("/api/v1/pools").json()
        (p,) = [x for x in body["pools"] if x["pool"] == POOL]
        assert p["decode_starvation"]["status"] == "firing"
        assert p["decode_starvation"]["evidence"]["consecutive_windows"] >= 3
        assert p["pods"]
        assert {x["role"] for x in p["pods"]} == {c.ROLE_PREFILL, c.ROLE_DECODE}
        assert body["observer_blind"] is False
        g = gauge_values(run.attachment.collector)
        assert g[(c.M_DECODE_STARVATION, ((c.LABEL_POOL, POOL),))] == 1.0
        assert g[(c.M_SOURCE_UP, ((c.LABEL_SOURCE, c.SOURCE_SCRAPE),))] == 1.0


QUIET_SCENARIOS = ("steady", "diurnal")


def _quiet_hour(scenario: str) -> list[FleetSignals]:
    """One simulated hour of `scenario` into the live app (as every test here); its snapshots."""
    with twin_run(scenario, duration=3600.0) as run:
        run.step(run.twin.end)
        return run.history


@pytest.fixture(scope="module", autouse=True)
def quiet_hours(request: pytest.FixtureRequest) -> Iterator[dict[str, AsyncResult[list[FleetSignals]]]]:
    """Both quiet hours, each run whole in a process of its own, started when this module starts
    (when a quiet-hour test is selected) so that they run beside each other and beside the other
    tests here. Each is one Python thread's work (the twin, the app and the scrape share one GIL)
    for about 45 s: one after the other, in the test's own process, they took ~90 s of a 2-core
    machine's wall time with one core idle. Each run is exactly the in-process run the test made
    before (same `twin_run`, same hour, same ticks; the tests here run on the simulated clock,
    so sharing the cores does not change what they see); its `FleetSignals` history (frozen
    dataclasses) comes back and the test asserts on it."""
    wanted = any(
        getattr(item, "originalname", "") == "test_quiet_hour_never_fires" for item in request.session.items
    )
    if not wanted:
        yield {}
        return
    pool = multiprocessing.get_context("spawn").Pool(len(QUIET_SCENARIOS))
    try:
        yield {s: pool.apply_async(_quiet_hour, (s,)) for s in QUIET_SCENARIOS}
    finally:
        pool.terminate()  # a run still going when the module ends (a failed test) is not waited for
        pool.join()


@pytest.mark.slow
@pytest.mark.parametrize("scenario", QUIET_SCENARIOS)
def test_quiet_hour_never_fires(
    scenario: str, quiet_hours: dict[str, AsyncResult[list[FleetSignals]]]
) -> None:
    history = quiet_hours[scenario].get(timeout=240)
    assert len(history) == 240
    assert not [fs.time for fs in history if any(t.cascade.firing for t in fs.tenants)]
    assert not [fs.time for fs in history if _starving(fs)]
    # the signals were judged, not merely unknown, for most of the hour
    judged = [fs for fs in history if any(not t.cascade.unknown for t in fs.tenants)]
    assert len(judged) >= 200
    assert all(not p.starvation.unknown for fs in history[4:] for p in fs.pools)
