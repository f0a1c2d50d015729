"""The cache-residency floor of the pure policy (`policy._residency`, `capacity.spill_scale`).

Prefix hits served from disk cost more than recomputing them; the floor sizes prefill so that
its aggregate HBM + DRAM keeps that spill share at `PoolConfig.cache_spill_target`. No mocks:
the closed-loop cases feed the policy a spill share that responds to the replicas it chose.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler import capacity as cap
from autoscaler.policy import decide
from autoscaler.types import (
    Config,
    Demand,
    Effects,
    PolicyState,
    PoolConfig,
    PoolObservation,
    PoolState,
    PromptMoments,
    ReasonCode,
    Recommendation,
    RoleConfig,
    Signals,
    TickInput,
)
from observer import conventions as c
from tests.autoscaler.test_policy import obs, pool_cfg

P, D = c.ROLE_PREFILL, c.ROLE_DECODE
HIT = 0.8


def spilling(spill: float, prompt: float = 4_000.0) -> Demand:
    """Light traffic (the demand floor is 1 prefill replica) whose hits spill `spill` to disk."""
    return Demand(prompt, 100.0, HIT, requests_per_s=1.0, disk_hit_share=HIT * spill)


def prefill(eff: Effects) -> tuple[int, tuple[ReasonCode, ...]]:
    d = next(x for x in eff.decisions if x.role == P)
    return d.desired, d.reasons


def ticks(
    cfg: PoolConfig, seq: list[tuple[float, PoolObservation]], state: PolicyState | None = None
) -> list[Effects]:
    """Decide each (time, observation) in turn, carrying the state (replica counts as given)."""
    state = state or PolicyState()
    out = []
    for now, o in seq:
        eff = decide(TickInput(now, (o,), state), Config({"p": cfg}))
        state = eff.state
        out.append(eff)
    return out


def test_one_reading_gives_the_same_lambda_at_every_size() -> None:
    for n in range(1, 9):
        assert cap.spill_scale(n, math.exp(-n / 1.8)) == pytest.approx(1.8)
    assert cap.cache_replicas(1.8, 0.05) == 6  # ⌈1.8 x 3.0⌉
    assert cap.cache_replicas(0.01, 0.05) == 1  # never below one replica
    # the ends of (0, 1) are clamped: finite, and every hit from disk asks for a large pool
    assert math.isfinite(cap.spill_scale(3, 0.0))
    assert math.isfinite(cap.spill_scale(3, 1.0))
    assert cap.cache_replicas(cap.spill_scale(3, 1.0), 0.05) > 1000


def test_a_settled_spilling_prefill_grows_for_its_cache() -> None:
    # 3 prefill replicas, 20 % of the hits from disk: λ = 3 / -ln 0.2 = 1.86 -> ⌈1.86 x 3.0⌉ = 6
    cfg = pool_cfg()
    o = obs(3, 1, spilling(0.2))
    effs = ticks(cfg, [(0.0, o), (60.0, o), (119.0, o), (120.0, o)])
    for eff in effs[:3]:  # the ready count is first seen at 0 s: not settled for 120 s
        assert ReasonCode.CACHE_RESIDENCY not in prefill(eff)[1]
    desired, why = prefill(effs[3])
    assert desired == 5  # 6, step-limited (max_step 2)
    assert ReasonCode.CACHE_RESIDENCY in why
    assert ReasonCode.STEP_LIMITED in why
    assert effs[3].state.pools["p"].residency_floor == 6
    # the same traffic without spill has no residency floor, and `None` turns it off
    dry = ticks(cfg, [(0.0, obs(3, 1, spilling(0.0))), (120.0, obs(3, 1, spilling(0.0)))])
    assert ReasonCode.CACHE_RESIDENCY not in prefill(dry[-1])[1]
    off = ticks(replace(cfg, cache_spill_target=None), [(0.0, o), (120.0, o)])
    assert ReasonCode.CACHE_RESIDENCY not in prefill(off[-1])[1]
    assert off[-1].state.pools["p"].residency_floor == 0


def test_before_any_spill_a_pool_serving_hits_from_dram_steps_down_one_settled_size() -> None:
    # 6 settled prefill replicas, light traffic (its floor is 1), no disk spill yet: with 10 % of
    # the hit tokens from DRAM (>= the 5 % target) each pod's DRAM is in use, so the floor is one
    # below the ready count and the pool shrinks one settled size at a time; from HBM only, or
    # with the floor off, it drops at once
    cfg = pool_cfg()

    def dram(share: float) -> Demand:
        return replace(spilling(0.0), dram_hit_share=HIT * share)

    seed = PolicyState({"p": PoolState(recommendations=(Recommendation(-1.0, P, 6),))})
    effs = ticks(cfg, [(0.0, obs(6, 1, dram(0.1))), (120.0, obs(6, 1, dram(0.1)))], seed)
    assert effs[-1].state.pools["p"].residency_floor == 5
    assert effs[-1].state.pools["p"].residency_scale is None  # nothing learned: no spill seen
    later = ticks(cfg, [(400.0, obs(6, 1, dram(0.1)))], effs[-1].state)[-1]
    assert prefill(later)[0] == 5
    assert ReasonCode.CACHE_RESIDENCY in prefill(later)[1]
    for share, c_ in ((0.02, cfg), (0.1, replace(cfg, cache_spill_target=None))):
        effs = ticks(c_, [(0.0, obs(6, 1, dram(share))), (120.0, obs(6, 1, dram(share)))], seed)
        assert effs[-1].state.pools["p"].residency_floor == 0
        assert prefill(ticks(c_, [(400.0, obs(6, 1, dram(share)))], effs[-1].state)[-1])[0] == 4  # step 2


def test_a_carried_floor_holds_the_pool_but_only_its_readings_enter_the_window() -> None:
    # closed loop from 6 settled replicas serving 10 % of their hits from DRAM, no spill, light
    # traffic: the floor steps down one settled size at a time. Each step is read 120 s after the
    # pool resized; the floor carried until then holds the pool without being a recommendation,
    # so the next step comes one scale-down window (300 s) after the reading that asked for the
    # last one, not settle + window (420 s) after it (both a 15 s tick later: the window is closed)
    cfg = pool_cfg()
    demand = replace(spilling(0.0), dram_hit_share=HIT * 0.1)
    state = PolicyState({"p": PoolState(recommendations=(Recommendation(-1.0, P, 6),))})
    n, steps = 6, []
    for t in range(0, 1800, 15):
        eff = decide(TickInput(float(t), (obs(n, 1, demand),), state), Config({"p": cfg}))
        state, was, (n, _) = eff.state, n, prefill(eff)
        if n != was:
            steps.append((t, n))
    sizes = [x for _, x in steps]
    assert sizes == list(range(5, 5 - len(sizes), -1))  # one size at a time, never back up
    times = [t for t, _ in steps]
    assert len(times) >= 4
    assert {b - a for a, b in itertools.pairwise(times[1:])} == {315}


def test_not_learned_from_a_prefill_that_starts_or_just_resized() -> None:
    cfg = pool_cfg()
    starting = obs(4, 1, spilling(0.2), ready=(3, 1))  # a scale-up in flight: caches still cold
    effs = ticks(cfg, [(0.0, starting), (200.0, starting)])
    assert effs[-1].state.pools["p"].residency_scale is None
    # the ready count changes at 100 s: the settle time starts again from there
    effs = ticks(
        cfg,
        [
            (0.0, obs(3, 1, spilling(0.2))),
            (100.0, obs(4, 1, spilling(0.2))),
            (200.0, obs(4, 1, spilling(0.2))),
        ],
    )
    assert effs[-1].state.pools["p"].residency_scale is None
    effs = ticks(cfg, [(220.0, obs(4, 1, spilling(0.2)))], effs[-1].state)
    assert effs[-1].state.pools["p"].residency_scale == pytest.approx(4 / -math.log(0.2))


def test_no_spill_steps_the_floor_down_one_settled_size_at_a_time_and_zero_traffic_clears_it() -> None:
    cfg = pool_cfg()
    learned = ticks(cfg, [(0.0, obs(6, 1, spilling(0.2))), (120.0, obs(6, 1, spilling(0.2)))])[-1].state
    assert learned.pools["p"].residency_floor == 8  # ⌈6 / 1.609 x 3.0⌉ = 12, capped at max 8
    dry = ticks(cfg, [(135.0, obs(6, 1, spilling(0.0)))], learned)[-1]
    assert dry.state.pools["p"].residency_floor == 5  # one below the 6 ready, not gone
    before, after = learned.pools["p"].residency_scale, dry.state.pools["p"].residency_scale
    assert before is not None
    assert after is not None
    assert after < before  # λ pulled down
    idle = ticks(cfg, [(150.0, obs(6, 1, spilling(0.0, prompt=0.0)))], learned)[-1]
    assert (idle.state.pools["p"].residency_floor, idle.state.pools["p"].residency_scale) == (0, None)


def _closed_loop(lam: float, target: float, start: int, seconds: float = 3600.0) -> list[int]:
    """Prefill over time when the disk spill share the pool sees is exp(-ready / λ), from a warm
    start (the controller's `service.warm_start` seed: no scale-down before the first window)."""
    base = pool_cfg(gpu_budget=None, cache_spill_target=target)
    cfg = replace(base, roles={**base.roles, P: RoleConfig(1, 12, 2, 1, 10_000.0)})
    seed = (Recommendation(-1.0, P, start), Recommendation(-1.0, D, 1))
    state, n, series = PolicyState({"p": PoolState(recommendations=seed)}), start, []
    for t in range(0, int(seconds), 15):
        o = obs(n, 1, spilling(math.exp(-n / lam)))
        eff = decide(TickInput(float(t), (o,), state), Config({"p": cfg}))
        state, n = eff.state, prefill(eff)[0]
        series.append(n)
    return series


def test_closed_loop_reaches_the_size_that_holds_the_spill_at_target() -> None:
    # λ = 1.8 (what the Mooncake synthetic trace reads): 3 replicas spill 19 %; 6 hold it under 5 %
    series = _closed_loop(1.8, 0.05, start=3)
    assert series[-1] == 6
    assert math.exp(-6 / 1.8) <= 0.05
    assert series == sorted(series)  # straight up, no overshoot


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    lam=st.floats(0.5, 4.0),
    target=st.sampled_from([0.02, 0.05, 0.1]),
    start=st.integers(1, 12),
)
def test_closed_loop_settles_without_oscillation(lam: float, target: float, start: int) -> None:
    series = _closed_loop(lam, target, start)
    changes = sum(1 for a, b, x in zip(series, series[1:], series[2:], strict=False) if (b - a) * (x - b) < 0)
    assert changes == 0, series
    assert series[-1] == series[-2] == series[-3]
    want = min(12, max(1, math.ceil(lam * -math.log(target) - 1e-9)))
    assert series[-1] == want, series


def test_kv_headroom_floor_sizes_decode_for_its_kv_peak() -> None:
    # the decode pods' KV in use peaked at 1.0 pod-equivalents: ⌈1.0 / 0.9⌉ = 2 decode replicas,
    # although the output rate (100 tok/s) needs one; 1.7 on 3 replicas keeps 2 (⌈1.89⌉)
    cfg = pool_cfg()
    full = replace(obs(1, 1, spilling(0.0)), signals=Signals(False, False, decode_kv_peak=1.0))
    eff = ticks(cfg, [(0.0, full)])[-1]
    d = next(x for x in eff.decisions if x.role == D)
    assert d.desired == 2
    assert ReasonCode.KV_HEADROOM in d.reasons
    spread = replace(obs(1, 3, spilling(0.0)), signals=Signals(False, False, decode_kv_peak=1.7))
    seed = PolicyState({"p": PoolState(recommendations=(Recommendation(-1.0, D, 1),))})
    eff = ticks(cfg, [(600.0, spread)], seed)[-1]
    assert next(x for x in eff.decisions if x.role == D).desired == 2
    for sig in (Signals(False, False), Signals(False, False, decode_kv_peak=1.0, age_seconds=1e9)):
        eff = ticks(cfg, [(0.0, replace(obs(1, 1, spilling(0.0)), signals=sig))])[-1]
        assert next(x for x in eff.decisions if x.role == D).desired == 1  # unknown or stale
    off = ticks(replace(cfg, decode_kv_target=None), [(0.0, full)])[-1]
    assert next(x for x in off.decisions if x.role == D).desired == 1


def test_queueing_floor_grows_prefill_for_a_spread_of_prompt_sizes_at_the_same_mean() -> None:
    # 4 000 uncached tok/s either way (capacity floor: 1 replica of 10k at 0.8), per 10 s:
    # ten 4k prompts, or nine 1k prompts and one 31k prompt (it holds a replica for 3.1 s)
    even = PromptMoments(uu=10 * 4_000.0**2 / 10)
    spread = PromptMoments(uu=(9 * 1_000.0**2 + 31_000.0**2) / 10)

    def first(m: PromptMoments | None, cfg: PoolConfig) -> tuple[int, tuple[ReasonCode, ...]]:
        dem = Demand(4_000.0, 100.0, 0.0, requests_per_s=1.0, prompt_moments=m)
        return prefill(ticks(cfg, [(0.0, obs(1, 1, dem))])[0])

    cfg = pool_cfg()
    n, why = first(spread, cfg)
    # M/G/1 per replica: 1 replica waits 0.81 s on average (> 0.25 x 2 s), 2 replicas 0.30 s
    assert n == 2
    assert ReasonCode.PREFILL_QUEUEING in why
    n, why = first(even, cfg)
    assert n == 1
    assert ReasonCode.PREFILL_QUEUEING not in why
    assert first(spread, replace(cfg, prefill_wait_share=None))[0] == 1  # off
    assert first(None, cfg)[0] == 1  # sizes unknown: the floor does not act
    assert first(spread, replace(cfg, prefill_wait_share=0.5))[0] == 1  # a 1 s budget: 0.81 s is fine
