"""The load forecast's trend on the cases that decide it: pd-observer's Theil–Sen trend
(`autoscaler.capacity.forecast`) beside ordinary least squares, the trend it replaced (kept
here only as the reference).

    python -m benchmarks.control.forecast_cases

A 300 s window of 15 s ticks (20 points), `now` at the newest, forecast 60 s ahead (the
defaults of `forecast_window_seconds` and `forecast_horizon_seconds`). Each line prints the
forecast minus the reference level: for a spike and a step, how far the forecast rises above
the load that is actually there (0 = no false lead); for a ramp, the lead over its current value
(negative = no lead: the current demand rules, the floor only takes a forecast above it).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from autoscaler.capacity import forecast

POINTS, TICK, HORIZON = 20, 15.0, 60.0
NOW = TICK * (POINTS - 1)


def least_squares(history: Sequence[tuple[float, float]], now: float, horizon: float) -> float:
    """The reference: the ordinary least-squares line through the points, at `now + horizon`."""
    n = len(history)
    mx = sum(t for t, _ in history) / n
    my = sum(v for _, v in history) / n
    sxx = sum((t - mx) ** 2 for t, _ in history)
    slope = sum((t - mx) * (v - my) for t, v in history) / sxx
    return max(0.0, my + slope * (now + horizon - mx))


def series(f: Callable[[int], float]) -> list[tuple[float, float]]:
    return [(TICK * i, f(i)) for i in range(POINTS)]


def cases() -> list[tuple[str, list[tuple[float, float]], float]]:
    """(label, series, reference level the excess is measured from)."""
    out: list[tuple[str, list[tuple[float, float]], float]] = []
    for at, where in ((POINTS - 1, "newest"), (15, "4th newest"), (10, "middle")):
        out.append(
            (
                f"flat 100, one tick of 300 ({where})",
                series(lambda i, at=at: 300.0 if i == at else 100.0),
                100.0,
            )
        )
    for k in range(1, POINTS, 2):
        out.append(
            (
                f"step 100 -> 200, {k} ticks ago",
                series(lambda i, k=k: 200.0 if i >= POINTS - k else 100.0),
                200.0,
            )
        )
    for k in range(2, POINTS + 1, 2):
        s = series(lambda i, k=k: 100.0 + (10.0 * (i - (POINTS - k)) if i >= POINTS - k else 0.0))
        out.append((f"flat, then +10 per tick over the last {k} ticks", s, s[-1][1]))
    return out


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="python -m benchmarks.control.forecast_cases",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).parse_args(argv)  # takes no options: --help, or one line naming what it refused
    print(f"{'case':48s} {'least squares':>14s} {'Theil-Sen':>10s}")
    for label, s, ref in cases():
        ts = forecast(s, NOW, HORIZON)
        assert ts is not None
        print(f"{label:48s} {least_squares(s, NOW, HORIZON) - ref:+14.1f} {ts - ref:+10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
