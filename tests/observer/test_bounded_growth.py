"""Structures of a long-running service stay bounded under churn (found by benchmarks/soak.py).

Each test churns one thing for hours of simulated time (pods replaced under new names, ...) and
checks that what the component remembers follows what is live, not everything ever seen.
No mocks: the real component, time passed in.
"""

from __future__ import annotations

from dataclasses import replace

from observer import conventions as c
from observer.signals.engine import SignalEngine
from observer.signals.settings import SignalsSettings
from observer.sources.samples import FleetSnapshot, PodSample
from tests.observer.store.factories import record

T0 = 1_700_000_000.0
POOL = "pool-a"


def _snapshot(now: float, pods: list[str], *, ok: bool = True) -> FleetSnapshot:
    samples = tuple(
        PodSample(pod=p, role=c.ROLE_DECODE if i else c.ROLE_PREFILL, pool=POOL, model="m", time=now)
        for i, p in enumerate(pods)
    )
    return FleetSnapshot(
        source=c.SOURCE_SCRAPE, time=now, ok=ok, error=None if ok else "down", pods=samples if ok else ()
    )


def test_signal_engine_forgets_replaced_pods() -> None:
    """Pods replaced every 5 minutes for 12 hours (144 new names): the engine's pod -> pool memory
    holds the live pods and the recently gone ones, not every name it ever saw (it grew by one
    entry per replaced pod until `max_pods`, 4096)."""
    s = SignalsSettings()
    eng = SignalEngine(s)
    live = [f"pod-{i}" for i in range(4)]
    serial = len(live)
    every = round(300 / s.interval_seconds)  # ticks in 5 minutes
    t = T0
    most = 0
    for tick in range(1, round(12 * 3600 / s.interval_seconds) + 1):
        t = T0 + tick * s.interval_seconds
        if tick % every == 0:  # every 5 minutes the oldest pod is replaced
            live = [*live[1:], f"pod-{serial}"]
            serial += 1
        eng.observe(_snapshot(t, live))
        eng.tick(t)
        most = max(most, eng.known_pods)
    gone_in_memory = (s.window_seconds + s.stale_after_seconds) / 300 + 1
    assert serial == 4 + 144
    assert most <= len(live) + gone_in_memory


def test_signal_engine_keeps_the_pool_of_pods_while_the_source_is_blind() -> None:
    """The pruning is by absence from GOOD readings: while the source fails, the last known
    mapping stays, and the records of its pods keep their pool (not `default_pool`)."""
    s = SignalsSettings()
    eng = SignalEngine(s)
    pods = ["pf-0", "dc-0"]
    t = T0
    for _ in range(8):
        t += s.interval_seconds
        eng.observe(_snapshot(t, pods))
        eng.tick(t)
    for i in range(40):  # ten minutes of failed readings
        t += s.interval_seconds
        eng.observe(_snapshot(t, pods, ok=False))
        eng.add_records([replace(record(i, t - 1.0), prefill_pod="pf-0", decode_pod="pf-0")], t)
        eng.tick(t)
    assert eng.known_pods == 2
    latest = eng.latest
    assert latest is not None
    assert [p.pool for p in latest.pools] == [POOL]
