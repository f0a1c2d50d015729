"""RecordSignals (the signals of `pd-observer autoscale` without an engine) under tenant churn: its
tenant bookkeeping is pruned as the engine's is, so after many short-lived tenants a long-running
instance judges the cascade as a fresh one does (new tenants become established, the fleet load
is not blind, a cascade is detected) and keeps bounded state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from autoscaler.observe import RecordSignals
from observer.model import RequestRecord, TierTokens
from tests.observer.store.factories import record

CAP = 20  # max_tenants, small so that churn passes it quickly (the default is 1000)
W = 60.0
T0 = 1.7e9
STEADY = [f"steady-{j}" for j in range(10)]
_n = [0]


def _rec(
    tenant: str, now: float, pod: str, *, hbm: int = 600, dram: int = 100, ttft: float = 0.2
) -> RequestRecord:
    _n[0] += 1
    base = record(_n[0], now - 1, tenant=tenant, model="m", prompt=1000, output=50)
    return replace(base, cached=TierTokens(hbm=hbm, dram=dram), ttft=ttft, decode_pod=pod)


def _window(tenants: list[str], now: float, pool: str = "p") -> list[RequestRecord]:
    return [_rec(t, now, f"{pool}-decode-0") for t in tenants for _ in range(6)]


def _cascade_of_steady_0(now: float) -> list[RequestRecord]:
    """steady-0 is the victim: HBM share of its hits 0.86 -> 0.14, TTFT 0.2 -> 1.0 s."""
    out = _window(STEADY[1:], now)
    out += [_rec("steady-0", now, "p-decode-0", hbm=100, dram=600, ttft=1.0) for _ in range(6)]
    return out


def _run(rs: RecordSignals, now: float, windows: int, tenants_of: Callable[[int], list[str]]) -> float:
    for i in range(windows):
        now += W
        rs.signals("p", now, _window(tenants_of(i), now), 4)
    return now


def _churn(i: int) -> list[str]:
    return [f"user-{(i // 3) * 10 + j}" for j in range(10)]  # cohorts of 10 tenants for 3 windows


def _new() -> RecordSignals:
    return RecordSignals(decode_tokens_per_s_per_replica=3000.0, ttft_min_seconds=2.0, max_tenants=CAP)


def test_after_tenant_churn_a_long_running_instance_judges_as_a_fresh_one() -> None:
    long_running = _new()
    now = _run(long_running, T0, 30, _churn)  # 100 distinct tenants: 5 x the cap
    now = _run(long_running, now, 30, lambda i: STEADY)
    fresh = _new()
    _run(fresh, now - 30 * W, 30, lambda i: STEADY)

    for rs in (long_running, fresh):
        state = rs._cascade["p"]
        # the steady tenants are established (seen for longer than the grace period), so the
        # fleet load counts them: 10 tenants x 6 requests per minute
        assert state.fleet_load is not None
        assert abs(state.fleet_load - 1.0) < 0.01
        assert set(state.tenants) == set(STEADY)  # the churned tenants' baselines are gone
    first_seen = long_running._first_seen["p"]
    assert all(first_seen[t] <= now - long_running.new_tenant_grace_seconds for t in STEADY)
    assert len(first_seen) <= 2 * CAP

    got = long_running.signals("p", now + W, _cascade_of_steady_0(now + W), 4)
    assert got.cascade_tenants == ("steady-0",)
    assert fresh.signals("p", now + W, _cascade_of_steady_0(now + W), 4).cascade_tenants == ("steady-0",)


def test_state_stays_bounded_under_endless_churn() -> None:
    rs = _new()
    now = T0
    sizes = []
    for i in range(80):  # 270 distinct tenants
        now += W
        rs.signals("p", now, _window(_churn(i), now), 4)
        assert "p" not in rs._cascade or len(rs._cascade["p"].tenants) <= CAP
        sizes.append(len(rs._first_seen.get("p", {})))
    assert max(sizes) <= 2 * CAP + 10  # + the window's own tenants


def test_churn_on_one_pool_does_not_make_another_pools_tenants_newcomers() -> None:
    rs = _new()
    now = T0
    for i in range(40):
        now += W
        rs.signals("q", now, _window(STEADY, now, "q"), 4)
        rs.signals("p", now, _window(_churn(i), now), 4)  # prunes p's first-seen times, not q's
    assert all(rs._first_seen["q"][t] <= T0 + W for t in STEADY)
    assert rs._cascade["q"].fleet_load is not None
    assert abs(rs._cascade["q"].fleet_load - 1.0) < 0.01
