"""Online capacity learning and the short-horizon forecast."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest

from autoscaler.capacity import bootstrap, forecast, learn, queueing_replicas
from autoscaler.types import CapacitySamples, PoolConfig, RoleConfig
from observer import conventions as c


def cfg() -> PoolConfig:
    return PoolConfig(
        name="p",
        roles={
            c.ROLE_PREFILL: RoleConfig(capacity_tokens_per_s=1_000.0),
            c.ROLE_DECODE: RoleConfig(capacity_tokens_per_s=500.0),
        },
        itl_target_seconds=0.1,
    )


def test_bootstrap_until_samples_arrive() -> None:
    est = learn(None, CapacitySamples(), cfg())
    assert (est.prefill_tokens_per_s, est.decode_tokens_per_s) == (1_000.0, 500.0)
    assert bootstrap(cfg()) == est


def test_learns_true_capacities_from_noisy_traces() -> None:
    rng = random.Random(7)
    # truth: prefill 0.02 s + tokens / 20k tok/s; ITL 0.02 s + 0.001 s per running sequence
    pre = tuple(
        (t, 0.02 + t / 20_000 + rng.gauss(0, 0.002)) for t in (rng.uniform(100, 8000) for _ in range(400))
    )
    dec = tuple((b, 0.02 + 0.001 * b + rng.gauss(0, 0.001)) for b in (rng.uniform(1, 64) for _ in range(400)))
    est = None
    for i in range(0, 400, 20):
        est = learn(est, CapacitySamples(pre[i : i + 20], dec[i : i + 20]), cfg())
    assert est is not None
    assert abs(est.prefill_tokens_per_s - 20_000) / 20_000 < 0.1
    # at ITL 0.1 s: batch (0.1 - 0.02) / 0.001 = 80 -> 800 tok/s
    assert abs(est.decode_tokens_per_s - 800) / 800 < 0.1


def test_nonsense_samples_keep_the_bootstrap() -> None:
    bad = CapacitySamples(prefill=((100, 1.0), (100, 2.0), (float("nan"), 1.0)), decode=((-1, 0.1),))
    est = learn(None, bad, cfg())
    assert (est.prefill_tokens_per_s, est.decode_tokens_per_s) == (1_000.0, 500.0)


def test_forecast_follows_a_ramp_and_never_goes_negative() -> None:
    ramp = [(float(t), 100.0 + 2.0 * t) for t in range(0, 300, 15)]
    assert abs((forecast(ramp, 285.0, 60.0) or 0) - (100 + 2 * 345)) < 1e-6
    assert forecast([(0.0, 5.0)], 0.0, 60.0) is None
    assert forecast([(10.0, 5.0), (10.0, 7.0)], 10.0, 60.0) == 7.0  # one time: no trend
    falling = [(float(t), 1000.0 - 10.0 * t) for t in range(0, 100, 10)]
    assert forecast(falling, 90.0, 1000.0) == 0.0


# A 300 s window of 15 s ticks (20 points), `now` at the newest; the cases least squares gets
# wrong: a spike, an old step, and how much a ramp that starts inside the window leads.
_N, _NOW = 20, 285.0


def _series(f: Callable[[int], float]) -> list[tuple[float, float]]:
    return [(15.0 * i, f(i)) for i in range(_N)]


def test_forecast_one_spiky_tick_adds_no_lead() -> None:
    for at in (_N - 1, 15, 10):  # least squares: +49, +32, +12 over the flat 100
        spiky = _series(lambda i, at=at: 300.0 if i == at else 100.0)
        assert forecast(spiky, _NOW, 60.0) == pytest.approx(100.0)


def test_forecast_does_not_extrapolate_a_settled_step() -> None:
    # 100 -> 200 with k points after the step: least squares forecasts above 200 for k = 5..19
    # (up to +57); Theil-Sen only around the middle of the window (k = 9..11)
    for k in (*range(1, 8), *range(13, _N)):
        step = _series(lambda i, k=k: 200.0 if i >= _N - k else 100.0)
        fc = forecast(step, _NOW, 60.0)
        assert fc is not None
        assert fc <= 200.0 + 1e-9, k


def test_forecast_leads_a_ramp_that_started_inside_the_window() -> None:
    # flat 100, then +10 per tick over the last k points; the lead is forecast - current
    def lead(k: int) -> float:
        s = _series(lambda i: 100.0 + (10.0 * (i - (_N - k)) if i >= _N - k else 0.0))
        return (forecast(s, _NOW, 60.0) or 0.0) - s[-1][1]

    assert lead(8) < 0  # too young to read as a trend (the current demand rules)
    assert lead(12) > 10  # least squares: +5.6
    assert lead(14) > 30  # least squares: +17
    assert lead(_N) == pytest.approx(40.0)  # a full ramp: 4 ticks ahead


def test_forecast_thins_a_long_history() -> None:
    long = [(float(t), 5.0 + 0.5 * t) for t in range(3600)]
    assert forecast(long, 3599.0, 60.0) == pytest.approx(5.0 + 0.5 * 3659)


def _simulated_mean_wait(sizes: list[float], rate: float, n: int, capacity: float, seed: int) -> float:
    """Mean FIFO queueing wait of Poisson arrivals (`rate`/s, work drawn from `sizes`) split at
    random over `n` single-server replicas serving `capacity` work/s."""
    rng = random.Random(seed)
    free = [0.0] * n  # when each replica's queue drains
    t = waited = 0.0
    count = 40_000
    for _ in range(count):
        t += rng.expovariate(rate)
        i = rng.randrange(n)
        start = max(t, free[i])
        waited += start - t
        free[i] = start + rng.choice(sizes) / capacity
    return waited / count


def test_queueing_replicas_meet_the_wait_in_a_simulated_queue_and_one_fewer_does_not() -> None:
    # heavy-tailed prompts: most short, some 20x longer; mean load only ~1.3 replicas' worth
    rng = random.Random(3)
    sizes = [rng.choice((2_000.0, 2_000.0, 2_000.0, 4_000.0, 40_000.0)) for _ in range(1_000)]
    rate, capacity, wait = 8.0, 40_000.0, 0.5
    work = rate * sum(sizes) / len(sizes)
    work_sq = rate * sum(s * s for s in sizes) / len(sizes)
    n = queueing_replicas(work, work_sq, capacity, wait, limit=20)
    assert n > math.ceil(work / (0.8 * capacity))  # more than a utilization target asks for
    assert _simulated_mean_wait(sizes, rate, n, capacity, seed=1) <= wait * 1.1
    assert _simulated_mean_wait(sizes, rate, n - 1, capacity, seed=1) > wait


def test_queueing_replicas_grow_with_the_spread_not_only_the_mean() -> None:
    rate, capacity, wait = 10.0, 40_000.0, 0.25
    even = [5_000.0] * 10
    spread = [1_000.0] * 9 + [41_000.0]  # same mean work
    assert sum(even) == sum(spread)

    def n(sizes: list[float]) -> int:
        return queueing_replicas(
            rate * sum(sizes) / len(sizes), rate * sum(s * s for s in sizes) / len(sizes), capacity, wait, 50
        )

    assert n(spread) > n(even)
    assert queueing_replicas(0.0, 0.0, capacity, wait, 10) == 1  # no work
    assert queueing_replicas(1e9, 1e15, capacity, wait, 10) == 10  # unreachable: the limit
    assert queueing_replicas(1e4, 1e9, 0.0, wait, 10) == 1  # no usable capacity: no floor
