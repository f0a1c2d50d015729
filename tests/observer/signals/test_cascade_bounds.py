"""Cascade state stays bounded on a long-running fleet: pods that are gone (rollouts, scale-ups give
new pod names) leave a tenant's baseline, old baselines and first-seen times are pruned."""

from __future__ import annotations

import math

import pytest

from observer.model import TierTokens
from observer.signals.cascade import (
    BASELINE_MAX_AGE_WINDOWS,
    POD_OCCUPANCY_EPSILON,
    CascadeObservation,
    evaluate,
    note_first_seen,
    prune_baselines,
    update,
)
from observer.signals.types import CascadeConfig, CascadeState, TenantBaseline, TenantWindow

CFG = CascadeConfig()
W = 60.0
LIVE_PODS = 4
# updates a gone pod can stay: its occupancy (<= 1) decays by (1 - alpha) per update
DECAY_WINDOWS = math.ceil(math.log(POD_OCCUPANCY_EPSILON) / math.log(1 - CFG.alpha))


def _tw(tenant: str, pod_hits: dict[str, TierTokens], ttft: float = 0.2) -> TenantWindow:
    total = TierTokens()
    for h in pod_hits.values():
        total = total + h
    return TenantWindow(tenant, 50, ttft, total, pod_hits)


def _window(gen: int) -> CascadeObservation:
    """Three tenants spread over the LIVE_PODS pods of generation `gen`."""
    pods = [f"decode-g{gen}-{i}" for i in range(LIVE_PODS)]
    return CascadeObservation(
        (
            _tw("A", {p: TierTokens(hbm=900, dram=100) for p in pods}),
            _tw("B", {p: TierTokens(hbm=300) for p in pods[:2]}),
            _tw("C", {pods[-1]: TierTokens(hbm=500)}),
        ),
        10.0,
    )


def test_gone_pods_leave_the_baselines_after_a_bounded_number_of_windows() -> None:
    st = CascadeState()
    per_gen = 5  # pods replaced every 5 windows: 60 generations over the run
    for i in range(300):
        st = update(st, _window(i // per_gen), W * i, CFG)
        live = {f"decode-g{i // per_gen}-{k}" for k in range(LIVE_PODS)}
        for name, base in st.tenants.items():
            gone = set(base.pod_hbm_occupancy) - live
            # a pod without hits is kept only while its decayed occupancy is not negligible
            assert all(base.pod_hbm_occupancy[p] > POD_OCCUPANCY_EPSILON for p in gone), name
            # ... i.e. only pods of the generations of the last DECAY_WINDOWS windows
            gens = range((i - DECAY_WINDOWS) // per_gen, i // per_gen)
            recent = {f"decode-g{g}-{k}" for g in gens for k in range(LIVE_PODS)}
            assert gone <= recent, name
            assert len(base.pod_hbm_occupancy) <= LIVE_PODS * (1 + math.ceil(DECAY_WINDOWS / per_gen) + 1)
    total = sum(len(b.pod_hbm_occupancy) for b in st.tenants.values())
    assert total < 100  # without pruning: every pod of 60 generations (A alone: 240)


def test_a_pod_without_hits_decays_as_before_then_leaves() -> None:
    st = update(CascadeState(), _window(0), 0.0, CFG)
    start = st.tenants["C"].pod_hbm_occupancy["decode-g0-3"]
    assert start == pytest.approx(500 / (900 + 500))  # C's share of the pod's HBM hits (with A)
    for i in range(1, DECAY_WINDOWS + 1):
        st = update(st, _window(1), W * i, CFG)
        left = st.tenants["C"].pod_hbm_occupancy.get("decode-g0-3")
        expected = start * (1 - CFG.alpha) ** i
        if expected > POD_OCCUPANCY_EPSILON:
            assert left == pytest.approx(expected)  # the EWMA towards 0, unchanged
        else:
            assert left is None
    assert "decode-g0-3" not in st.tenants["C"].pod_hbm_occupancy
    assert set(st.tenants["C"].pod_hbm_occupancy) == {"decode-g1-3"}  # only the live pod


def test_an_evictor_is_still_named_on_a_pod_it_left_recently() -> None:
    # B leaves p0 for a few windows (its baseline there decays but stays), then comes back big
    def obs(b_on_p0: bool, a_hbm: int, a_ttft: float, b_hbm: int) -> CascadeObservation:
        b = {"p0": TierTokens(hbm=b_hbm)} if b_on_p0 else {"p1": TierTokens(hbm=b_hbm)}
        return CascadeObservation(
            (_tw("A", {"p0": TierTokens(hbm=a_hbm, dram=1000 - a_hbm)}, a_ttft), _tw("B", b)), 10.0
        )

    st = CascadeState()
    for i in range(5):
        st = update(st, obs(True, 900, 0.2, 100), W * i, CFG)
    for i in range(5, 8):
        st = update(st, obs(False, 900, 0.2, 100), W * i, CFG)
    before = st.tenants["B"].pod_hbm_occupancy["p0"]
    assert 0 < before < 0.1
    (a, _) = evaluate(st, obs(True, 200, 3.2, 1800), CFG)
    assert a.firing
    assert [(e.tenant, e.pod) for e in a.evictors] == [("B", "p0")]
    assert a.evictors[0].occupancy_before == pytest.approx(before)


def _base(updated_at: float) -> TenantBaseline:
    return TenantBaseline(0.9, 0.2, {}, 5, updated_at)


def test_prune_baselines_drops_stale_ones_and_caps_the_rest() -> None:
    now = 10_000.0
    st = CascadeState(
        {
            "fresh": _base(now),
            "older": _base(now - BASELINE_MAX_AGE_WINDOWS * W),  # just inside
            "stale": _base(now - BASELINE_MAX_AGE_WINDOWS * W - 1),
        },
        fleet_load=3.0,
        fleet_windows=7,
    )
    pruned = prune_baselines(st, now, W, 10)
    assert set(pruned.tenants) == {"fresh", "older"}
    assert (pruned.fleet_load, pruned.fleet_windows) == (3.0, 7)
    assert set(prune_baselines(st, now, W, 1).tenants) == {"fresh"}  # the most recently refreshed
    assert prune_baselines(pruned, now, W, 10) is pruned  # unchanged: the same state


def test_note_first_seen_keeps_the_first_time_and_prunes_to_the_window_past_twice_the_cap() -> None:
    known = note_first_seen({}, {"a": 1.0, "b": 2.0}, 2)
    assert known == {"a": 1.0, "b": 2.0}
    assert note_first_seen(known, {"a": 9.0}, 2) is known  # nobody new: not copied, time kept
    known = note_first_seen(known, {"c": 3.0, "d": 4.0}, 2)
    assert known == {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}  # 2 x cap: all kept
    known = note_first_seen(known, {"d": 5.0, "e": 5.0}, 2)
    assert known == {"d": 4.0, "e": 5.0}  # over 2 x cap: the window's tenants, first times kept
