"""Online capacity learning and the short-horizon forecast."""

from __future__ import annotations

import random

from autoscaler.capacity import bootstrap, forecast, learn
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
    falling = [(float(t), 1000.0 - 10.0 * t) for t in range(0, 100, 10)]
    assert forecast(falling, 90.0, 1000.0) == 0.0
