"""Starvation fires only after K consecutive windows; pressure names its reasons."""

from __future__ import annotations

from observer.signals.starvation import decode_pressure, starvation
from observer.signals.types import PoolWindow, StarvationConfig, StarvationState

CFG = StarvationConfig(consecutive_windows=3)
STARVED = PoolWindow("pool-a", pre_decode_ttft_share=0.8, decode_busy_ratio=0.2)
HEALTHY = PoolWindow("pool-a", pre_decode_ttft_share=0.3, decode_busy_ratio=0.7)


def test_fires_only_after_k_consecutive_windows() -> None:
    st = StarvationState()
    fired = []
    for w in (STARVED, STARVED, HEALTHY, STARVED, STARVED, STARVED, STARVED):
        st, (sig,) = starvation(st, (w,), CFG)
        fired.append(sig.firing)
    assert fired == [False, False, False, False, False, True, True]
    assert sig.consecutive == 4
    assert sig.pre_decode_ttft_share == 0.8
    assert sig.decode_busy_ratio == 0.2


def test_unknown_window_resets_and_is_reported() -> None:
    st = StarvationState({"pool-a": 2})
    st, (sig,) = starvation(st, (PoolWindow("pool-a", None, 0.1),), CFG)
    assert sig.unknown
    assert not sig.firing
    assert st.consecutive["pool-a"] == 0


def test_busy_decode_is_not_starvation() -> None:
    st = StarvationState()
    for _ in range(5):
        st, (sig,) = starvation(st, (PoolWindow("pool-a", 0.9, 0.95),), CFG)
    assert not sig.firing


def test_decode_pressure_reasons() -> None:
    p = decode_pressure(PoolWindow("p", 0.1, 0.9, itl_p90=0.25, kv_usage_max=0.95, preemption_rate=0.5), CFG)
    assert p.firing
    assert p.reasons == ("itl", "kv_usage", "preemptions")
    q = decode_pressure(PoolWindow("p", 0.1, 0.9, itl_p90=0.05, kv_usage_max=0.5, preemption_rate=0.0), CFG)
    assert not q.firing
    assert not q.unknown
    u = decode_pressure(PoolWindow("p", 0.1, 0.9), CFG)
    assert u.unknown
    assert not u.firing
