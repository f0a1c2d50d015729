"""Online learning of per-replica capacities, and a short-horizon load forecast. Pure.

Prefill: per request, prefill seconds ~ a + b * uncached tokens, so one replica serves
1/b uncached tokens/s. Decode: per pod sample, ITL ~ a + b * running batch, so at the ITL
target a replica holds B = (target - a) / b sequences, i.e. B / target output tokens/s.
Both fits are exponentially weighted least squares over the samples seen so far; until
they hold `capacity_min_samples` effective samples the configured capacities (bootstrap)
are blended in. A fit that comes out non-physical (b <= 0, B <= 0) is ignored.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import replace

from autoscaler.types import CapacityEstimate, CapacitySamples, PoolConfig
from observer import conventions as c

Fit = tuple[float, float, float, float, float]  # (w, sx, sy, sxx, sxy)


def bootstrap(cfg: PoolConfig) -> CapacityEstimate:
    """The configured capacities, with empty fits."""
    return CapacityEstimate(
        prefill_tokens_per_s=cfg.roles[c.ROLE_PREFILL].capacity_tokens_per_s,
        decode_tokens_per_s=cfg.roles[c.ROLE_DECODE].capacity_tokens_per_s,
    )


def _update_fit(fit: Fit, samples: Iterable[tuple[float, float]], rate: float) -> Fit:
    w, sx, sy, sxx, sxy = fit
    keep = 1.0 - rate
    for x, y in samples:
        if math.isnan(x) or math.isnan(y) or x < 0 or y < 0:  # NaN or negative: drop
            continue
        w, sx, sy = keep * w + 1, keep * sx + x, keep * sy + y
        sxx, sxy = keep * sxx + x * x, keep * sxy + x * y
    return (w, sx, sy, sxx, sxy)


def _line(fit: Fit) -> tuple[float, float] | None:
    """(intercept, slope) of the weighted fit, or None when x has no spread."""
    w, sx, sy, sxx, sxy = fit
    if w <= 0:
        return None
    var = sxx / w - (sx / w) ** 2
    if var <= 1e-12 * max(1.0, sxx / w):
        return None
    slope = (sxy / w - (sx / w) * (sy / w)) / var
    return (sy / w - slope * sx / w, slope)


def _blend(learned: float | None, boot: float, weight: float, min_samples: float) -> float:
    if learned is None or learned <= 0 or math.isnan(learned):
        return boot
    alpha = min(1.0, weight / min_samples) if min_samples > 0 else 1.0
    return alpha * learned + (1 - alpha) * boot


def prefill_capacity(fit: Fit) -> float | None:
    """Uncached prompt tokens/s one prefill replica serves, from the fit; None if unknown."""
    line = _line(fit)
    if line is None or line[1] <= 0:
        return None
    return 1.0 / line[1]


def decode_capacity(fit: Fit, itl_target: float) -> float | None:
    """Output tokens/s one decode replica serves at the ITL target; None if unknown."""
    line = _line(fit)
    if line is None or line[1] <= 0:
        return None
    batch = (itl_target - line[0]) / line[1]
    if batch <= 0:
        return None
    return batch / itl_target


def learn(est: CapacityEstimate | None, samples: CapacitySamples, cfg: PoolConfig) -> CapacityEstimate:
    """New estimate after folding in `samples` (pure)."""
    boot = bootstrap(cfg)
    cur = est or boot
    rate = cfg.capacity_learning_rate
    pfit = _update_fit(cur.prefill_fit, samples.prefill, rate)
    dfit = _update_fit(cur.decode_fit, samples.decode, rate)
    return replace(
        cur,
        prefill_fit=pfit,
        decode_fit=dfit,
        prefill_tokens_per_s=_blend(
            prefill_capacity(pfit), boot.prefill_tokens_per_s, pfit[0], cfg.capacity_min_samples
        ),
        decode_tokens_per_s=_blend(
            decode_capacity(dfit, cfg.itl_target_seconds),
            boot.decode_tokens_per_s,
            dfit[0],
            cfg.capacity_min_samples,
        ),
    )


FORECAST_MAX_POINTS = 64  # the trend fit thins a longer history to this many points


def forecast(history: Sequence[tuple[float, float]], now: float, horizon: float) -> float | None:
    """Linear-trend forecast of a rate at `now + horizon` from (t, value) points; None if < 2.

    The trend is Theil–Sen: the median of the slopes between every pair of points, through the
    median intercept. On a straight line it is that line. Unlike least squares, a minority of
    odd points does not bend it (breakdown point 29 %): one spiky tick (a drained backlog) adds
    no lead, and a step in the load is not extrapolated as a trend, except while the step sits
    near the middle of the window. A ramp that starts inside the window leads once it holds a
    little over half of the window's points, as with least squares, and then by more
    (`python -m benchmarks.control.forecast_cases`). A history longer than `FORECAST_MAX_POINTS` is thinned
    evenly, oldest and newest kept, so a tick costs at most ~2k slopes. Never negative."""
    if len(history) < 2:
        return None
    pts = [(t - now, v) for t, v in history]
    if len(pts) > FORECAST_MAX_POINTS:
        step = (len(pts) - 1) / (FORECAST_MAX_POINTS - 1)
        pts = [pts[round(i * step)] for i in range(FORECAST_MAX_POINTS)]
    slopes = [(b[1] - a[1]) / (b[0] - a[0]) for i, a in enumerate(pts) for b in pts[i + 1 :] if b[0] != a[0]]
    if not slopes:  # every point at one time: no trend
        return history[-1][1]
    slope = statistics.median(slopes)
    intercept = statistics.median(v - slope * t for t, v in pts)
    return max(0.0, intercept + slope * horizon)


def spill_scale(replicas: int, spill: float) -> float:
    """λ, prefill replicas per e-fold of the spill share, from `spill` observed on `replicas`.

    Model: each replica adds the same HBM + DRAM, and the share of prefix-hit tokens whose reuse
    reaches past the pool's aggregate fast tiers (served from disk) falls geometrically with it,
    s(n) = exp(-n / λ), so one reading gives λ = -n / ln s. λ is a property of the traffic (its
    working set per replica's cache), not of the size it was read at, so readings taken at
    different sizes can be averaged. On the Mooncake synthetic trace the static splits 3:1 and
    6:1 read λ = 1.79 and 1.69 (`benchmarks.control.trace ... --tiers`). `spill` is clamped
    into (0, 1): both ends give no finite λ."""
    s = min(0.999, max(1e-6, spill))
    return -max(0, replicas) / math.log(s)


def cache_replicas(scale: float, target: float) -> int:
    """Replicas that keep the spill share at `target` (0 < target < 1): ⌈λ · -ln target⌉, ≥ 1."""
    return max(1, math.ceil(-scale * math.log(target) - 1e-9))


def queueing_replicas(work: float, work_sq: float, capacity: float, wait_seconds: float, limit: int) -> int:
    """Fewest replicas (1..`limit`) whose mean queueing wait is at most `wait_seconds`.

    Each replica is an M/G/1 queue taking 1/n of the arrivals, with service time w / capacity for
    a request of w recompute-equivalent tokens. Pollaczek–Khinchine: W(n) = λ/n · E[S²] /
    (2 (1 − ρ)), and λ E[S²] = Σ w² / span / capacity² = `work_sq` / capacity², ρ = `work` /
    (n · capacity). Unlike a utilization target this grows with the spread of the prompt sizes:
    a long prompt holds a replica for seconds at a low mean load, and what arrives behind it
    waits. `limit` when no count up to it meets the wait; 1 (no floor) without work, spread
    or a usable capacity and wait."""
    if work <= 0 or work_sq <= 0 or capacity <= 0 or wait_seconds <= 0:
        return 1
    for n in range(1, max(1, limit) + 1):
        rho = work / (n * capacity)
        if rho < 1 and work_sq / (n * capacity * capacity) / (2 * (1 - rho)) <= wait_seconds:
            return n
    return max(1, limit)
