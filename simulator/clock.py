"""The twin's two clocks: as fast as possible, or paced at N× real time.

Both drive any object with `now`, `next_event_time()` and `run_until(t)` (the fleet model).
Only this module sleeps; the model never reads the wall clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class Steppable(Protocol):
    """What the drivers need from a simulation."""

    @property
    def now(self) -> float: ...

    def next_event_time(self) -> float | None: ...

    def run_until(self, t: float, /) -> None: ...


def run_fast(sim: Steppable, until: float) -> float:
    """Run to `until` as fast as possible (in-process delivery); returns the final sim time."""
    if until > sim.now:
        sim.run_until(until)
    return sim.now


@dataclass(frozen=True, slots=True)
class PacedResult:
    """How a paced run ended."""

    sim_time: float  # simulated time reached
    wall_seconds: float  # wall time spent
    steps: int  # run_until calls
    stopped: bool  # True when stop_event ended it before `until`
    max_lag_seconds: float  # worst wall-clock lag behind the pace (simulation slower than speed)


def run_paced(
    sim: Steppable,
    speed: float,
    until: float,
    on_tick: Callable[[float], None] | None = None,
    stop_event: threading.Event | None = None,
    *,
    tick_seconds: float = 0.1,
    resolution_seconds: float = 0.005,
    monotonic: Callable[[], float] = time.monotonic,
) -> PacedResult:
    """Advance `sim` to `until` at `speed`× real time, sleeping between steps.

    Each step runs the simulation up to the simulated time that corresponds to "now" on the
    wall clock, then waits until the next scheduled event (or at most `tick_seconds` of wall
    time, so `on_tick(sim.now)` is called at least that often for live views). A set
    `stop_event` ends the run promptly (the wait is on the event). If the simulation cannot
    keep up, it runs flat out and `max_lag_seconds` reports by how much it fell behind.
    Events closer than `resolution_seconds` of wall time share one step (at most that late).
    """
    if speed <= 0:
        raise ValueError("speed must be > 0")
    if tick_seconds <= 0:
        raise ValueError("tick_seconds must be > 0")
    stop = stop_event if stop_event is not None else threading.Event()
    wall0 = monotonic()
    sim0 = sim.now
    steps = 0
    max_lag = 0.0
    while not stop.is_set():
        elapsed = monotonic() - wall0
        target = min(until, sim0 + elapsed * speed)
        if target > sim.now:
            sim.run_until(target)
            steps += 1
        if on_tick is not None:
            on_tick(sim.now)
        if sim.now >= until:
            break
        nxt = sim.next_event_time()
        wake_sim = until if nxt is None else min(max(nxt, sim.now), until)
        # wake for the next event, but not sooner than `resolution_seconds` (events closer
        # together are processed in one step) and not later than `tick_seconds`
        wake_wall = min(max((wake_sim - sim0) / speed, elapsed + resolution_seconds), elapsed + tick_seconds)
        wait = wake_wall - (monotonic() - wall0)
        if wait > 0:
            stop.wait(wait)
        else:
            max_lag = max(max_lag, -wait)
    return PacedResult(
        sim_time=sim.now,
        wall_seconds=monotonic() - wall0,
        steps=steps,
        stopped=stop.is_set() and sim.now < until,
        max_lag_seconds=max_lag,
    )
