"""The fleet-wide GPU budget (`Config.gpu_budget`, across pools) of the pure policy."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.guardrails import gpus
from autoscaler.policy import decide
from autoscaler.types import Config, Demand, Effects, PoolObservation, ReasonCode, RoleStatus, TickInput
from observer import conventions as c
from tests.autoscaler.test_policy import pool_cfg

P, D = c.ROLE_PREFILL, c.ROLE_DECODE


def observe(
    pool: str, p: int, d: int, demand: Demand | None, *, ready: tuple[int, int] | None = None
) -> PoolObservation:
    rp, rd = ready if ready is not None else (p, d)
    return PoolObservation(pool, {P: RoleStatus(p, rp), D: RoleStatus(d, rd)}, demand)


def config(budget: int | None, pools: tuple[str, ...] = ("a", "b")) -> Config:
    return Config({name: replace(pool_cfg(gpu_budget=None), name=name) for name in pools}, gpu_budget=budget)


def used(eff: Effects, cfg: Config) -> int:
    return sum(d.desired * cfg.pools[d.pool].roles[d.role].gpus_per_replica for d in eff.decisions)


HEAVY = Demand(60_000.0, 8_000.0, 0.0, requests_per_s=10.0)  # wants 8 prefill (1 GPU), 5 decode (2 GPUs)


def test_growth_of_all_pools_is_trimmed_to_the_fleet_budget() -> None:
    cfg = config(20)
    obs = (observe("a", 2, 2, HEAVY), observe("b", 2, 2, HEAVY))
    alone = decide(TickInput(0.0, obs), config(None))
    assert used(alone, config(None)) > 20  # without the fleet budget both pools grow past it
    eff = decide(TickInput(0.0, obs), cfg)
    assert used(eff, cfg) <= 20
    assert all(d.desired >= d.current for d in eff.decisions)  # growth trimmed, nothing shrunk
    assert any(ReasonCode.BUDGET_LIMITED in d.reasons for d in eff.decisions)


def test_a_held_pool_keeps_its_gpus_and_the_others_fit_around_it() -> None:
    cfg = config(16)
    held = observe("a", 4, 3, None)  # no demand data: held at 4 + 3 x 2 = 10 GPUs
    eff = decide(TickInput(0.0, (held, observe("b", 1, 1, HEAVY))), cfg)
    a = {d.role: d for d in eff.decisions if d.pool == "a"}
    assert (a[P].desired, a[D].desired) == (4, 3)
    assert used(eff, cfg) <= 16


def test_within_budget_nothing_changes() -> None:
    obs = (observe("a", 2, 2, HEAVY), observe("b", 2, 2, HEAVY))
    assert (
        decide(TickInput(0.0, obs), config(100)).decisions
        == decide(TickInput(0.0, obs), config(None)).decisions
    )


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    budget=st.integers(6, 40),
    sizes=st.lists(st.tuples(st.integers(1, 8), st.integers(1, 8)), min_size=1, max_size=3),
    loads=st.lists(st.floats(0, 1e5), min_size=3, max_size=3),
    missing=st.lists(st.booleans(), min_size=3, max_size=3),
)
def test_never_above_the_fleet_budget_except_what_is_held(
    budget: int, sizes: list[tuple[int, int]], loads: list[float], missing: list[bool]
) -> None:
    names = tuple(f"p{i}" for i in range(len(sizes)))
    cfg = config(budget, names)
    obs = tuple(
        observe(n, p, d, None if missing[i] else Demand(loads[i], loads[i] / 10, 0.0, requests_per_s=1.0))
        for i, (n, (p, d)) in enumerate(zip(names, sizes, strict=True))
    )
    eff = decide(TickInput(0.0, obs), cfg)
    held = sum(
        gpus({P: p, D: d}, cfg.pools[n].roles)
        for i, (n, (p, d)) in enumerate(zip(names, sizes, strict=True))
        if missing[i]
    )
    mins = sum(gpus({P: 1, D: 1}, cfg.pools[n].roles) for i, n in enumerate(names) if not missing[i])
    assert used(eff, cfg) <= max(budget, held + mins)
    for d in eff.decisions:
        rc = cfg.pools[d.pool].roles[d.role]
        assert rc.min_replicas <= d.desired <= rc.max_replicas
