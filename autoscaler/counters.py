"""Cumulative counters read from several series (per EPP, per pod), folded into one monotone
total across resets, new and vanished series, as Prometheus' `increase()` treats a reset. Pure.

Used by the arrival side (EPP request counters, `autoscaler.arrival`) and the record-based
signals (decode pods' preemptions, `autoscaler.observe.RecordSignals`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

Series = Mapping[str, float]  # series key (labels, pod) -> counter value


@dataclass(frozen=True, slots=True)
class CounterState:
    """Last raw value per series and the monotone total folded so far (None before any read)."""

    last: Mapping[str, float] = field(default_factory=dict)
    total: float | None = None


def accumulate(state: CounterState, series: Series) -> CounterState:
    """Fold one read of a pool's counter series into a monotone total.

    The first read starts the total at the sum of the values. Then each series adds its
    increase; a drop is a reset (the series restarted from 0: its new value is the increase);
    a new series starts at its value (its earlier count is not attributed to this interval);
    a vanished series adds nothing."""
    if state.total is None:
        return CounterState(dict(series), float(sum(series.values())))
    inc = 0.0
    for key, v in series.items():
        prev = state.last.get(key)
        if prev is None:
            continue
        inc += v if v < prev else v - prev
    return CounterState(dict(series), state.total + inc)
