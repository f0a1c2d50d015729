"""The P/D decider lever of the pure policy (`policy._decider`, `DeciderConfig`). No mocks."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.policy import decide
from autoscaler.types import (
    Config,
    DeciderConfig,
    Demand,
    Effects,
    PolicyState,
    PoolObservation,
    PoolState,
    ReasonCode,
    RoleConfig,
    RoleStatus,
    Signals,
    TickInput,
)
from observer import conventions as c
from tests.autoscaler.test_policy import CAP_D, CAP_P, pool_cfg

P, D = c.ROLE_PREFILL, c.ROLE_DECODE
BASE = 512
_NO_SIGNALS = Signals()
_FRESH = PolicyState()


def sized(sizes: dict[int, float], output: float = 1_000.0, **kw: object) -> Demand:
    """A demand whose uncached prompt work per size class (bound -> tok/s) is `sizes`."""
    prompt = sum(sizes.values())
    return Demand(
        prompt,
        output,
        0.0,
        requests_per_s=1.0,
        uncached_by_size=tuple(sorted(sizes.items())),
        **kw,  # type: ignore[arg-type]
    )


def observe(
    demand: Demand | None,
    *,
    threshold: int | None = BASE,
    p: int = 2,
    d: int = 4,
    ready: tuple[int, int] | None = None,
    signals: Signals = _NO_SIGNALS,
) -> PoolObservation:
    rp, rd = ready if ready is not None else (p, d)
    return PoolObservation(
        "p", {P: RoleStatus(p, rp), D: RoleStatus(d, rd)}, demand, signals, None, decider_threshold=threshold
    )


def tick(o: PoolObservation, now: float = 0.0, state: PolicyState = _FRESH, **cfg: object) -> Effects:
    return decide(TickInput(now, (o,), state), Config({"p": pool_cfg(**cfg)}))


def _roles(p_max: int) -> dict[str, RoleConfig]:
    base = pool_cfg().roles
    return {P: replace(base[P], max_replicas=p_max), D: base[D]}


# 2 prefill replicas carry 2 x 10k x 0.8 = 16k tok/s at the target utilization.
BURST = {1024: 4_000.0, 8192: 10_000.0, 65536: 20_000.0}  # 34k tok/s: prefill overflows


def test_overflow_raises_threshold_to_the_lowest_bound_that_relieves_prefill() -> None:
    eff = tick(observe(sized(BURST)), decider=DeciderConfig(max_decode_share=1.0))
    (x,) = eff.decider_changes
    # moving the 1024 and 8192 classes local leaves 20k remote > 16k; 65536 moves all: only
    # bound that brings remote within 16k is 65536 — if the decode pods can take it
    spare = 4 * CAP_P * (1 - 1_000.0 / (4 * CAP_D))  # 35k tok/s at share 1.0
    assert sum(BURST.values()) <= spare
    assert (x.current, x.desired) == (BASE, 65536)
    assert x.reasons == (ReasonCode.PREFILL_OVERFLOW,)


def test_decode_headroom_caps_how_much_prefill_moves() -> None:
    # at share 0.5 decode can take 17.5k tok/s: 14k (<= 8192) fits, 34k does not
    eff = tick(observe(sized(BURST)), decider=DeciderConfig(max_decode_share=0.5))
    (x,) = eff.decider_changes
    assert x.desired == 8192
    assert ReasonCode.DECODE_NO_HEADROOM in x.reasons


def test_settled_prefill_is_not_bridged_even_when_overflowing() -> None:
    # prefill at its max (2) and ready: no replica is coming, the lever is not used
    eff = tick(observe(sized(BURST)), decider=DeciderConfig(max_decode_share=1.0), roles=_roles(p_max=2))
    assert eff.decider_changes == ()
    # and a raised threshold is restored once nothing is coming
    eff = tick(
        observe(sized(BURST), threshold=65536),
        decider=DeciderConfig(baseline_tokens=BASE),
        roles=_roles(p_max=2),
    )
    assert [(x.desired, x.reasons) for x in eff.decider_changes] == [(BASE, (ReasonCode.PREFILL_RECOVERED,))]


def test_no_headroom_at_all_keeps_the_operator_threshold() -> None:
    busy = sized(BURST, output=4 * CAP_D)  # decode fully used by output tokens
    assert tick(observe(busy)).decider_changes == ()


def test_prefill_that_copes_leaves_the_threshold_alone() -> None:
    assert tick(observe(sized({1024: 2_000.0, 8192: 10_000.0}))).decider_changes == ()


def test_restored_once_ready_prefill_carries_the_work() -> None:
    raised = observe(sized({8192: 10_000.0}), threshold=8192)
    state = PolicyState()
    eff = tick(raised, state=state, decider=DeciderConfig(baseline_tokens=BASE))
    (x,) = eff.decider_changes
    assert (x.current, x.desired, x.reasons) == (8192, BASE, (ReasonCode.PREFILL_RECOVERED,))


def test_first_seen_threshold_is_the_baseline_and_is_remembered() -> None:
    eff = tick(observe(sized(BURST)), decider=DeciderConfig(max_decode_share=1.0))
    st = eff.state.pools["p"]
    assert st.decider_baseline == BASE
    # next tick the config shows the raised value; the load is gone: back to the first-seen 512
    later = tick(observe(sized({1024: 1_000.0}), threshold=65536), now=120.0, state=eff.state)
    (x,) = later.decider_changes
    assert x.desired == BASE


def _remembering(baseline: int, written: tuple[int, int]) -> PolicyState:
    return PolicyState({"p": PoolState(decider_baseline=baseline, decider_written=written)})


CALM = {1024: 1_000.0}


def test_a_threshold_the_operator_sets_becomes_the_baseline() -> None:
    # restored to 512 earlier; the operator then sets 2048 in the EPP config. It used to be
    # "restored" to 512 on the next calm tick (an EPP restart reverting the operator's edit)
    state = _remembering(BASE, (8192, BASE))
    eff = tick(observe(sized(CALM), threshold=2048), now=600.0, state=state)
    assert eff.decider_changes == ()
    assert eff.state.pools["p"].decider_baseline == 2048
    assert eff.state.pools["p"].decider_written is None


def test_a_raise_in_effect_or_a_failed_restore_is_not_taken_for_the_operators() -> None:
    # the threshold reads 8192: the raise this controller (or, recalled, its predecessor) made,
    # or the restore to 512 that did not get through. Either way 512 stays the baseline.
    for written in ((BASE, 8192), (8192, BASE)):
        eff = tick(observe(sized(CALM), threshold=8192), now=600.0, state=_remembering(BASE, written))
        (x,) = eff.decider_changes
        assert (x.current, x.desired, x.baseline, x.reasons) == (
            8192,
            BASE,
            BASE,
            (ReasonCode.PREFILL_RECOVERED,),
        )
        assert eff.state.pools["p"].decider_written == (8192, BASE)


def test_changes_are_rate_limited_each_restarts_the_epp() -> None:
    eff = tick(observe(sized(BURST)), decider=DeciderConfig(max_decode_share=1.0, min_interval_seconds=60))
    again = tick(
        observe(sized({1024: 1_000.0}), threshold=65536),
        now=30.0,
        state=eff.state,
        decider=DeciderConfig(max_decode_share=1.0, min_interval_seconds=60),
    )
    assert again.decider_changes == ()
    assert any(h.reason is ReasonCode.DECIDER_RATE_LIMITED for h in again.holds)


def test_starting_prefill_replicas_do_not_count_as_capacity() -> None:
    # 4 prefill desired (would carry 32k) but only 2 ready (16k): the lever bridges the cold start
    eff = tick(observe(sized(BURST), p=4, ready=(2, 4)), decider=DeciderConfig(max_decode_share=1.0))
    assert [x.desired for x in eff.decider_changes] == [65536]


def test_starvation_counts_as_overflow_when_the_model_says_prefill_copes() -> None:
    calm = sized({1024: 3_000.0, 8192: 10_000.0})
    eff = tick(observe(calm, signals=Signals(starvation=True)))
    (x,) = eff.decider_changes
    assert x.desired == 1024  # moves the smallest class: remote 10k <= 0.8 x 13k
    assert ReasonCode.DECODE_STARVATION in x.reasons


def test_absent_decider_disabled_lever_and_missing_data_do_nothing() -> None:
    assert tick(observe(sized(BURST), threshold=None)).decider_changes == ()
    assert tick(observe(sized(BURST)), decider=DeciderConfig(enabled=False)).decider_changes == ()
    assert tick(observe(None)).decider_changes == ()
    stale = replace(sized(BURST), age_seconds=1e6)
    assert tick(observe(stale)).decider_changes == ()
    # no size data: unknown, so a raised threshold is held, not restored
    assert tick(observe(replace(sized(BURST), uncached_by_size=()), threshold=8192)).decider_changes == ()


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    classes=st.dictionaries(st.sampled_from([2**k for k in range(8, 21)]), st.floats(0, 1e5), max_size=8),
    output=st.floats(0, 2e4),
    threshold=st.integers(0, 2**20),
    ready=st.tuples(st.integers(0, 8), st.integers(0, 8)),
    share=st.floats(0, 1),
    starving=st.booleans(),
)
def test_threshold_stays_within_bounds_and_decode_headroom(
    classes: dict[int, float],
    output: float,
    threshold: int,
    ready: tuple[int, int],
    share: float,
    starving: bool,
) -> None:
    dc = DeciderConfig(baseline_tokens=BASE, max_tokens=65536, max_decode_share=share)
    o = observe(
        sized(classes, output=output),
        threshold=threshold,
        p=8,
        d=8,
        ready=ready,
        signals=Signals(starvation=starving),
    )
    eff = tick(o, decider=dc)
    for x in eff.decider_changes:
        assert x.current == threshold
        assert x.desired == BASE or BASE < x.desired <= dc.max_tokens
        if x.desired != BASE:
            # what moves to the decode pods never exceeds their allowed spare capacity
            moved = sum(v for b, v in classes.items() if b <= x.desired)
            spare = ready[1] * CAP_P * max(0.0, 1 - output / (ready[1] * CAP_D)) * share if ready[1] else 0.0
            assert moved <= spare + 1e-6


def _decode(eff: Effects) -> tuple[int, int, tuple[ReasonCode, ...]]:
    (d,) = [x for x in eff.decisions if x.role == D]
    return d.current, d.desired, d.reasons


def test_decode_is_not_scaled_down_while_the_lever_bridges() -> None:
    # decode (4) is far above its output-token floor; prefill overflows and a scale-up is coming
    o = observe(sized(BURST, output=100.0), p=4, d=4, ready=(2, 4))
    lever = DeciderConfig(max_decode_share=1.0)
    held = tick(o, decider=lever, scale_down_window_seconds=0.0)
    assert [x.desired for x in held.decider_changes] == [65536]
    cur, desired, why = _decode(held)
    assert (cur, desired) == (4, 4)
    assert ReasonCode.DECIDER_BRIDGE in why
    assert D not in held.state.pools["p"].last_scale_down  # no action: no cooldown started
    # without the hold (or without the lever) decode shrinks toward its floor
    free = tick(o, decider=replace(lever, hold_decode=False), scale_down_window_seconds=0.0)
    assert _decode(free)[1] < 4
    off = tick(o, decider=DeciderConfig(enabled=False), scale_down_window_seconds=0.0)
    assert _decode(off)[1] < 4


def test_decode_stays_held_until_the_restore_has_restarted_the_epp() -> None:
    # prefill is ready again and carries the work: the raised threshold is restored this tick,
    # but the EPP applies it only when it has restarted, so decode (far above its floor) stays
    lever = DeciderConfig(baseline_tokens=BASE, min_interval_seconds=60)
    calm = sized({1024: 1_000.0}, output=100.0)
    eff = tick(observe(calm, threshold=65536, p=4, d=4), decider=lever, scale_down_window_seconds=0.0)
    assert [x.desired for x in eff.decider_changes] == [BASE]
    assert _decode(eff)[1] == 4
    assert ReasonCode.DECIDER_BRIDGE in _decode(eff)[2]
    # the config now reads the restored value; within the restart interval decode is still held
    at = observe(calm, threshold=BASE, p=4, d=4)
    soon = tick(at, now=45.0, state=eff.state, decider=lever, scale_down_window_seconds=0.0)
    assert soon.decider_changes == ()
    assert _decode(soon)[1] == 4
    assert ReasonCode.DECIDER_BRIDGE in _decode(soon)[2]
    # a target that cannot read the EPP's rollout (epp_rolled_out None): once the interval has
    # passed the restore counts as in effect, decode goes to its floor
    later = tick(at, now=60.0, state=eff.state, decider=lever, scale_down_window_seconds=0.0)
    assert _decode(later)[1] < 4
    assert ReasonCode.DECIDER_BRIDGE not in _decode(later)[2]


def test_when_the_target_reports_the_epp_rollout_it_times_the_restore() -> None:
    # the same restore, with a target that reads the EPP Deployment's rollout
    lever = DeciderConfig(baseline_tokens=BASE, min_interval_seconds=60)
    calm = sized({1024: 1_000.0}, output=100.0)
    eff = tick(observe(calm, threshold=65536, p=4, d=4), decider=lever, scale_down_window_seconds=0.0)
    assert [x.desired for x in eff.decider_changes] == [BASE]
    at = observe(calm, threshold=BASE, p=4, d=4)

    def later(now: float, rolled_out: bool) -> Effects:
        o = replace(at, epp_rolled_out=rolled_out)
        return tick(o, now=now, state=eff.state, decider=lever, scale_down_window_seconds=0.0)

    # rolled out after 30 s: the restore is in effect, decode goes to its floor before 60 s
    assert _decode(later(30.0, True))[1] < 4
    # still rolling out after the interval: decode stays held
    slow = later(300.0, False)
    assert _decode(slow)[1] == 4
    assert ReasonCode.DECIDER_BRIDGE in _decode(slow)[2]


def test_a_later_restart_does_not_put_a_rolled_out_restore_back_in_flight() -> None:
    # the restore rolls out; later the EPP restarts for a scorer-weight change (rolling out
    # again): the decider has not changed since, so decode is not held for that rollout
    lever = DeciderConfig(baseline_tokens=BASE, min_interval_seconds=60)
    calm = sized({1024: 1_000.0}, output=100.0)
    cfg: dict[str, object] = {"decider": lever, "scale_down_window_seconds": 0.0}
    eff = tick(observe(calm, threshold=65536, p=4, d=4), **cfg)
    assert [x.desired for x in eff.decider_changes] == [BASE]
    at = observe(calm, threshold=BASE, p=4, d=4)
    rolling = tick(replace(at, epp_rolled_out=False), now=15.0, state=eff.state, **cfg)
    assert ReasonCode.DECIDER_BRIDGE in _decode(rolling)[2]  # the restore itself: held
    done = tick(replace(at, epp_rolled_out=True), now=30.0, state=rolling.state, **cfg)
    assert done.state.pools["p"].epp_rolled_out_seen == 30.0
    # a weight restart rolling out at 45 s (the test pool has no cooldowns)
    weight_restart = tick(replace(at, epp_rolled_out=False), now=45.0, state=done.state, **cfg)
    assert ReasonCode.DECIDER_BRIDGE not in _decode(weight_restart)[2]
    assert _decode(weight_restart)[1] < 4
    # a reading of "rolled out" from before the change does not count for it
    stale_seen = replace(eff.state.pools["p"], epp_rolled_out_seen=0.0)
    early = tick(replace(at, epp_rolled_out=False), now=15.0, state=PolicyState({"p": stale_seen}), **cfg)
    assert ReasonCode.DECIDER_BRIDGE in _decode(early)[2]


def test_no_epp_config_write_while_the_epp_rolls_out() -> None:
    # a burst that would raise the threshold, while the EPP's last restart is still rolling out
    lever = DeciderConfig(max_decode_share=1.0)
    rolling = replace(observe(sized(BURST)), epp_rolled_out=False)
    eff = tick(rolling, decider=lever)
    assert eff.decider_changes == ()
    (hold,) = [h for h in eff.holds if h.reason is ReasonCode.EPP_ROLLOUT]
    assert "nonCachedTokens 512 ->" in hold.detail
    assert tick(replace(rolling, epp_rolled_out=True), decider=lever).decider_changes
    assert tick(replace(rolling, epp_rolled_out=None), decider=lever).decider_changes


def test_bridge_hold_trims_prefill_growth_to_stay_within_the_budget() -> None:
    # twice the burst asks prefill for 4 -> 6 (max step); budget 13: held decode keeps 4 x 2 GPUs,
    # so prefill may grow only to 5
    o = observe(sized({b: 2 * v for b, v in BURST.items()}, output=100.0), p=4, d=4, ready=(2, 4))
    lever = DeciderConfig(max_decode_share=1.0)
    eff = tick(o, decider=lever, scale_down_window_seconds=0.0, gpu_budget=13)
    want = {x.role: x.desired for x in eff.decisions}
    assert eff.decider_changes
    unheld = tick(o, decider=replace(lever, hold_decode=False), scale_down_window_seconds=0.0, gpu_budget=13)
    assert {x.role: x.desired for x in unheld.decisions}[P] == 6
    assert want[D] == 4
    assert want[P] == 5
    assert ReasonCode.BUDGET_LIMITED in next(x.reasons for x in eff.decisions if x.role == P)
    assert 1 * want[P] + 2 * want[D] <= 13
    # a budget that cannot even hold decode at its current count: the decisions stand
    tight = tick(o, decider=lever, scale_down_window_seconds=0.0, gpu_budget=9)
    assert 1 * sum(x.desired for x in tight.decisions if x.role == P) + 2 * _decode(tight)[1] <= 9


def test_keep_raised_does_not_lower_mid_bridge_unless_decode_pressure() -> None:
    # raised to 65536 earlier; now decode has room only for the <= 8192 classes
    o = observe(sized(BURST), threshold=65536, p=4, ready=(2, 4))
    share = DeciderConfig(baseline_tokens=BASE, max_decode_share=0.5)
    lowered = tick(o, decider=share)
    assert [x.desired for x in lowered.decider_changes] == [8192]
    kept = tick(o, decider=replace(share, keep_raised=True))
    assert kept.decider_changes == ()
    pressed = observe(sized(BURST), threshold=65536, p=4, ready=(2, 4), signals=Signals(decode_pressure=True))
    eff = tick(pressed, decider=replace(share, keep_raised=True))
    assert [x.desired for x in eff.decider_changes] == [8192]
    # and it is still restored once the prefill carries the work
    calm = observe(sized({1024: 1_000.0}), threshold=65536, p=4, ready=(4, 4))
    assert [x.desired for x in tick(calm, decider=replace(share, keep_raised=True)).decider_changes] == [BASE]


def test_bridge_hold_never_keeps_decode_above_its_max() -> None:
    o = observe(sized(BURST, output=100.0), p=4, d=10, ready=(2, 10))  # decode max is 8
    eff = tick(o, decider=DeciderConfig(max_decode_share=1.0), scale_down_window_seconds=0.0, gpu_budget=None)
    assert eff.decider_changes
    assert _decode(eff)[1] == 8


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    scale=st.floats(0.5, 20),
    p=st.integers(0, 10),
    d=st.integers(0, 12),
    ready_p=st.integers(0, 10),
    budget=st.one_of(st.none(), st.integers(3, 30)),
    keep=st.booleans(),
    threshold=st.sampled_from([BASE, 4096, 65536]),
)
def test_bridge_hold_keeps_bounds_and_budget(
    scale: float, p: int, d: int, ready_p: int, budget: int | None, keep: bool, threshold: int
) -> None:
    # a bursty prefill with a scale-up starting (the lever engages) and decode above its floor
    o = observe(
        sized({b: scale * v for b, v in BURST.items()}, output=100.0),
        threshold=threshold,
        p=p,
        d=d,
        ready=(min(ready_p, p), d),
    )
    lever = DeciderConfig(baseline_tokens=BASE, max_decode_share=1.0, keep_raised=keep)
    eff = tick(o, decider=lever, scale_down_window_seconds=0.0, gpu_budget=budget)
    roles = pool_cfg().roles
    want = {x.role: x.desired for x in eff.decisions}
    cur = {x.role: x.current for x in eff.decisions}
    for x in eff.decisions:
        rc = roles[x.role]
        if x.changed or not rc.min_replicas <= x.current <= rc.max_replicas:
            assert rc.min_replicas <= x.desired <= rc.max_replicas
    if any(x.changed for x in eff.decisions) and budget is not None:
        assert want[P] * 1 + want[D] * 2 <= budget
    if ReasonCode.DECIDER_BRIDGE in _decode(eff)[2]:
        assert want[D] == min(cur[D], roles[D].max_replicas)
