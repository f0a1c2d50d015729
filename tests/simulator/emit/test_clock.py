"""The paced and fast drivers (simulator/clock.py), with a tiny real simulation object."""

from __future__ import annotations

import threading
import time

import pytest

from simulator.clock import run_fast, run_paced


class TickSim:
    """Events at fixed simulated times; records the wall time each one was processed at."""

    def __init__(self, events: list[float], start: float = 0.0) -> None:
        self._events = sorted(events)
        self._now = start
        self.processed: list[tuple[float, float]] = []  # (sim time, wall time)
        self.calls = 0

    @property
    def now(self) -> float:
        return self._now

    def next_event_time(self) -> float | None:
        return self._events[0] if self._events else None

    def run_until(self, t: float) -> None:
        assert t >= self._now
        self.calls += 1
        while self._events and self._events[0] <= t:
            self.processed.append((self._events.pop(0), time.monotonic()))
        self._now = t


def test_fast_driver_runs_everything_at_once() -> None:
    sim = TickSim([1.0, 50.0, 3600.0])
    assert run_fast(sim, 7200.0) == 7200.0
    assert [e for e, _ in sim.processed] == [1.0, 50.0, 3600.0]
    assert sim.calls == 1


def test_paced_driver_keeps_n_times_real_time() -> None:
    sim = TickSim([0.5, 2.0, 4.0, 6.0])
    ticks: list[float] = []
    t0 = time.monotonic()
    res = run_paced(sim, speed=10.0, until=8.0, on_tick=ticks.append, tick_seconds=0.05)
    wall = time.monotonic() - t0
    assert res.sim_time == 8.0
    assert not res.stopped
    assert 0.75 <= wall < 1.5  # 8 simulated seconds at 10x
    for sim_t, wall_t in sim.processed:  # each event no earlier than its paced wall time
        assert wall_t - t0 >= sim_t / 10.0 - 0.02
        assert wall_t - t0 <= sim_t / 10.0 + 0.3
    assert ticks == sorted(ticks)
    assert len(ticks) >= 8  # on_tick at least every tick_seconds


def test_paced_driver_stops_promptly_on_event() -> None:
    sim = TickSim([1.0, 1000.0])
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    t0 = time.monotonic()
    res = run_paced(sim, speed=1.0, until=1000.0, stop_event=stop, tick_seconds=5.0)
    assert time.monotonic() - t0 < 1.0
    assert res.stopped
    assert res.sim_time < 1.0  # the 1.0 s event was not due yet


def test_paced_driver_reports_lag_when_the_sim_is_slow() -> None:
    class SlowSim(TickSim):
        def run_until(self, t: float) -> None:
            time.sleep(0.05)
            super().run_until(t)

    sim = SlowSim([float(i) for i in range(1, 100)])
    res = run_paced(sim, speed=1000.0, until=100.0)
    assert res.sim_time == 100.0
    assert res.max_lag_seconds > 0


def test_rejects_bad_speed() -> None:
    with pytest.raises(ValueError, match="speed"):
        run_paced(TickSim([]), speed=0.0, until=1.0)
