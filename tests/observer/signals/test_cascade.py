"""Cascade: fires and names the evicting tenant; silent when fleet load rises; baselines hold."""

from __future__ import annotations

import pytest

from observer.model import TierTokens
from observer.signals.cascade import CascadeObservation, evaluate, update
from observer.signals.types import CascadeConfig, CascadeState, TenantWindow

CFG = CascadeConfig()


def _tw(tenant: str, hbm: int, dram: int, ttft: float, pod: str = "p0", requests: int = 50) -> TenantWindow:
    hits = TierTokens(hbm=hbm, dram=dram)
    return TenantWindow(tenant, requests, ttft, hits, {pod: hits})


def _quiet() -> CascadeObservation:
    return CascadeObservation(
        (_tw("A", 900, 100, 0.2), _tw("B", 100, 0, 0.3), _tw("C", 500, 0, 0.2, "p1")), 10.0
    )


def _warm() -> CascadeState:
    st = CascadeState()
    for i in range(5):
        st = update(st, _quiet(), 60.0 * i, CFG)
    return st


def test_quiet_windows_never_fire_and_build_baselines() -> None:
    st = _warm()
    assert st.tenants["A"].windows == 5
    assert abs(st.tenants["A"].hbm_share - 0.9) < 1e-9
    assert not any(s.firing or s.unknown for s in evaluate(st, _quiet(), CFG))


def test_fires_and_names_the_evicting_tenant() -> None:
    st = _warm()
    onset = CascadeObservation(
        (_tw("A", 200, 800, 3.2), _tw("B", 1800, 0, 0.3), _tw("C", 500, 0, 0.2, "p1")), 10.5
    )
    sig = {s.tenant: s for s in evaluate(st, onset, CFG)}
    a = sig["A"]
    assert a.firing
    assert not a.unknown
    assert a.hbm_share_drop is not None
    assert abs(a.hbm_share_drop - 0.7) < 1e-9
    assert a.ttft_ratio is not None
    assert a.ttft_ratio == pytest.approx(16)
    assert [e.tenant for e in a.evictors] == ["B"]  # C is on another pod
    assert a.evictors[0].pod == "p0"
    assert a.evictors[0].occupancy_now > a.evictors[0].occupancy_before
    assert not sig["B"].firing
    assert not sig["C"].firing
    # the victim's baseline is not dragged down while it fires
    after = update(st, onset, 400.0, CFG)
    assert after.tenants["A"] == st.tenants["A"]


def test_no_fire_when_fleet_load_rises() -> None:
    st = _warm()
    busy = CascadeObservation((_tw("A", 200, 800, 3.2), _tw("B", 1800, 0, 0.3)), 20.0)
    a = next(s for s in evaluate(st, busy, CFG) if s.tenant == "A")
    assert not a.firing
    assert a.fleet_load == 20.0
    assert a.fleet_load_baseline == 10.0


def test_ttft_alone_or_share_alone_does_not_fire() -> None:
    st = _warm()
    only_ttft = CascadeObservation((_tw("A", 900, 100, 3.0), _tw("B", 100, 0, 0.3)), 10.0)
    only_share = CascadeObservation((_tw("A", 200, 800, 0.25), _tw("B", 1800, 0, 0.3)), 10.0)
    for obs in (only_ttft, only_share):
        assert not next(s for s in evaluate(st, obs, CFG) if s.tenant == "A").firing


def test_unknown_without_baseline() -> None:
    (a,) = evaluate(CascadeState(), CascadeObservation((_tw("A", 1, 9, 9.0),), 10.0), CFG)
    assert a.unknown
    assert not a.firing
