"""Discrete-event core: a simulated clock and a heap of timed callbacks.

Pure and single-threaded: nothing here reads the wall clock or sleeps. The paced real-time
driver (simulator.emit) asks `next_event_time()` and calls `run_until(t)`; tests, replays and
benchmarks call `run(duration)` to go as fast as possible.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

Action = Callable[[], None]


class Simulation:
    """A heap-based event queue over simulated epoch seconds.

    Events at the same time run in the order they were scheduled (a sequence number breaks
    ties), so a run is a deterministic function of the inputs.
    """

    __slots__ = ("_counter", "_heap", "_now", "start", "steps")

    def __init__(self, start: float = 0.0) -> None:
        self.start = start
        self._now = start
        self._heap: list[tuple[float, int, Action]] = []
        self._counter = itertools.count()
        self.steps = 0

    @property
    def now(self) -> float:
        """Current simulated time (epoch seconds)."""
        return self._now

    @property
    def elapsed(self) -> float:
        """Simulated seconds since `start`."""
        return self._now - self.start

    def __len__(self) -> int:
        return len(self._heap)

    def at(self, time: float, action: Action) -> None:
        """Run `action` at simulated `time` (never in the past: clamped to `now`)."""
        heapq.heappush(self._heap, (max(time, self._now), next(self._counter), action))

    def after(self, delay: float, action: Action) -> None:
        """Run `action` `delay` simulated seconds from now."""
        now = self._now  # `self.at(now + max(delay, 0.0), action)`, inlined: every decode step
        heapq.heappush(self._heap, (max(now + max(delay, 0.0), now), next(self._counter), action))

    def next_event_time(self) -> float | None:
        """Time of the next pending event, or None when the queue is empty."""
        return self._heap[0][0] if self._heap else None

    def step(self) -> bool:
        """Run the next event; False when there is none."""
        if not self._heap:
            return False
        time, _, action = heapq.heappop(self._heap)
        self._now = time
        self.steps += 1
        action()
        return True

    def run_until(self, time: float) -> None:
        """Run every event scheduled at or before `time`, then set the clock to `time`."""
        heap = self._heap
        pop = heapq.heappop
        while heap and heap[0][0] <= time:
            t, _, action = pop(heap)
            self._now = t
            self.steps += 1
            action()
        self._now = max(self._now, time)

    def run(self, duration: float) -> None:
        """Run `duration` simulated seconds from now, as fast as possible."""
        self.run_until(self._now + duration)
