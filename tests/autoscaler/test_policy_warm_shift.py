"""The warm-start shift of the pure policy (`policy._warm_shift`, `PoolConfig.warm_shift_decode_spare`).

After a (re)start the warm-start seed (`service.warm_start`) holds each role at its start size.
With the shift, decode keeps its need plus a spare and the GPUs of the rest serve as prefill;
prefill's window then holds them from the tick they were added.
"""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.guardrails import gpus
from autoscaler.policy import decide
from autoscaler.types import (
    Config,
    Demand,
    Effects,
    PolicyState,
    PoolConfig,
    PoolState,
    ReasonCode,
    Recommendation,
    RoleConfig,
    TickInput,
)
from observer import conventions as c
from tests.autoscaler.test_policy import obs, pool_cfg

P, D = c.ROLE_PREFILL, c.ROLE_DECODE
R = ReasonCode
WINDOW = 300.0
LIGHT = Demand(5_000.0, 500.0, 0.0, requests_per_s=5.0)  # needs 1 prefill (10k) and 1 decode (2k)


def one_gpu(**kw: object) -> PoolConfig:
    """1 GPU per replica, steps wide enough to see each target in one tick, no budget."""
    base = pool_cfg(gpu_budget=None, **kw)
    return replace(
        base,
        roles={
            P: RoleConfig(1, 10, 10, 1, base.roles[P].capacity_tokens_per_s),
            D: RoleConfig(1, 10, 10, 1, base.roles[D].capacity_tokens_per_s),
        },
    )


def seeded(p: int, d: int, at: float = 0.0) -> PolicyState:
    """What `service.warm_start` leaves: the start size as a seeded recommendation per role."""
    recs = (Recommendation(at, P, p, seeded=True), Recommendation(at, D, d, seeded=True))
    return PolicyState({"p": PoolState(recommendations=recs)})


def tick(cfg: PoolConfig, now: float, p: int, d: int, state: PolicyState, dem: Demand = LIGHT) -> Effects:
    return decide(TickInput(now, (obs(p, d, dem),), state), Config({"p": cfg}))


def counts(eff: Effects) -> tuple[int, int]:
    by = {x.role: x.desired for x in eff.decisions}
    return by[P], by[D]


def reasons(eff: Effects, role: str) -> tuple[ReasonCode, ...]:
    return next(x.reasons for x in eff.decisions if x.role == role)


def test_decode_keeps_its_need_plus_the_spare_and_the_rest_serves_as_prefill() -> None:
    # start 2:6, need 1:1: decode keeps 1 + 1 spare, its other 4 GPUs go to prefill (1 + 4)
    eff = tick(one_gpu(), 15.0, 2, 6, seeded(2, 6))
    assert counts(eff) == (5, 2)
    assert R.WARM_SHIFT in reasons(eff, P)
    assert R.WARM_SHIFT in reasons(eff, D)
    assert gpus({P: 5, D: 2}, one_gpu().roles) <= 8  # never more GPUs than the start fleet
    # spare 0: all of decode's surplus moves
    assert counts(tick(one_gpu(warm_shift_decode_spare=0), 15.0, 2, 6, seeded(2, 6))) == (6, 1)


def test_off_the_seed_holds_the_start_split() -> None:
    eff = tick(one_gpu(warm_shift_decode_spare=None), 15.0, 2, 6, seeded(2, 6))
    assert counts(eff) == (2, 6)
    assert R.STABILIZED_DOWN in reasons(eff, D)
    assert R.WARM_SHIFT not in reasons(eff, D)


def test_only_the_seed_is_shifted_never_a_hold_computed_from_data() -> None:
    # decode was recommended 6 from data 100 s ago: its own window holds it, nothing shifts
    data = PolicyState(
        {"p": PoolState(recommendations=(Recommendation(0.0, D, 6), Recommendation(0.0, P, 2)))}
    )
    eff = tick(one_gpu(), 100.0, 2, 6, data)
    assert counts(eff) == (2, 6)
    assert R.WARM_SHIFT not in reasons(eff, P)
    # a seed no larger than decode's need + spare: nothing to shift
    assert counts(tick(one_gpu(), 15.0, 2, 2, seeded(2, 2))) == (2, 2)
    # the seed has aged out of the window: the ordinary scale-down
    assert counts(tick(one_gpu(), WINDOW + 15.0, 2, 6, seeded(2, 6))) == (1, 1)


def test_decode_need_from_its_floors_and_window_is_kept() -> None:
    # the output rate needs 3 decode replicas (6k tok/s at 2k x 0.8 per replica -> 4): keep 4 + 1
    heavy = Demand(5_000.0, 6_000.0, 0.0, requests_per_s=5.0)
    assert counts(tick(one_gpu(), 15.0, 2, 8, seeded(2, 8), heavy)) == (4, 5)


def test_the_shifted_prefill_is_held_by_its_own_window_from_the_tick_it_grew() -> None:
    cfg = one_gpu()
    state, p, d = seeded(2, 6), 2, 6
    series = []
    for t in range(15, 901, 15):
        eff = tick(cfg, float(t), p, d, state)
        state, (p, d) = eff.state, counts(eff)
        series.append((t, p, d))
    at = {t: (p, d) for t, p, d in series}
    assert at[15] == (5, 2)
    assert at[WINDOW] == (5, 2)  # the seed still in decode's window
    assert at[WINDOW + 15] == (5, 1)  # seed gone: decode to its need; prefill held since t = 15
    assert at[WINDOW + 15 + 15] == (1, 1)  # prefill's window since the growth at 15 s has passed
    assert series[-1][1:] == (1, 1)
    grew = [t for (t, p, _), (_, q, _) in pairwise(series) if q > p]
    assert grew == []  # one move up at the start, then only down: no flapping


def test_gpus_per_replica_are_converted_and_the_budget_holds() -> None:
    # decode takes 2 GPUs per replica: 3 decode replicas shifted are 6 prefill replicas
    cfg = replace(
        pool_cfg(gpu_budget=None),
        roles={P: RoleConfig(1, 10, 10, 1, 10_000.0), D: RoleConfig(1, 10, 10, 2, 2_000.0)},
    )
    assert counts(tick(cfg, 15.0, 1, 5, seeded(1, 5))) == (7, 2)
    # a budget below the start fleet (11 GPUs) trims the shifted prefill, never decode's keep
    eff = tick(replace(cfg, gpu_budget=9), 15.0, 1, 5, seeded(1, 5))
    assert gpus(dict(zip((P, D), counts(eff), strict=True)), cfg.roles) <= 9
    assert counts(eff)[1] == 2


def test_prefill_grows_only_as_far_as_decode_gives_up_gpus() -> None:
    # decode may drop 2 per tick, prefill may grow 10: the target 5:2 would be 5:4 (9 GPUs) on
    # the first tick, more than the 8 the hold keeps, so prefill takes only what decode frees
    base = one_gpu()
    cfg = replace(base, roles={P: base.roles[P], D: replace(base.roles[D], max_step=2)})
    state = seeded(2, 6)
    eff = tick(cfg, 15.0, 2, 6, state)
    assert counts(eff) == (4, 4)
    eff = tick(cfg, 30.0, 4, 4, eff.state)
    assert counts(eff) == (5, 2)  # the shift completes as decode frees its GPUs


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    start=st.tuples(st.integers(1, 10), st.integers(1, 10)),
    prompt=st.floats(0, 2e5),
    output=st.floats(0, 2e4),
    spare=st.sampled_from([None, 0, 1, 3]),
    budget=st.sampled_from([None, 8, 14]),
    step=st.integers(1, 4),
)
def test_the_shift_never_grows_the_fleet_beyond_its_start_or_its_need(
    start: tuple[int, int], prompt: float, output: float, spare: int | None, budget: int | None, step: int
) -> None:
    base = one_gpu(warm_shift_decode_spare=spare)
    cfg = replace(
        base, gpu_budget=budget, roles={r: replace(rc, max_step=step) for r, rc in base.roles.items()}
    )
    dem = Demand(prompt, output, 0.0, requests_per_s=max(prompt / 1000, 0.01))
    with_shift = tick(cfg, 15.0, *start, seeded(*start), dem)
    without = tick(replace(cfg, warm_shift_decode_spare=None), 15.0, *start, seeded(*start), dem)
    shifted, held = counts(with_shift), counts(without)
    total = sum(shifted)
    assert total <= max(sum(start), sum(held))
    within = budget is None or sum(start) <= budget  # an over-budget fleet is cut beyond the step
    if budget is not None:
        assert total <= max(budget, sum(held))
    for (n, role), cur in zip(zip(shifted, (P, D), strict=True), start, strict=True):
        rc = cfg.roles[role]
        assert rc.min_replicas <= n <= rc.max_replicas
        assert abs(n - cur) <= rc.max_step or not within
    assert shifted[1] <= held[1]  # decode never above what the plain hold keeps
