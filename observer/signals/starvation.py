"""Decode starvation (K consecutive windows) and decode pressure per pool. Pure."""

from __future__ import annotations

from observer.signals.types import (
    DecodePressureSignal,
    PoolWindow,
    StarvationConfig,
    StarvationSignal,
    StarvationState,
)


def starvation(
    state: StarvationState, windows: tuple[PoolWindow, ...], cfg: StarvationConfig
) -> tuple[StarvationState, tuple[StarvationSignal, ...]]:
    """Advance the per-pool streak by one window and report. An unknown window resets the streak."""
    counts = dict(state.consecutive)
    out = []
    for w in sorted(windows, key=lambda x: x.pool):
        unknown = w.pre_decode_ttft_share is None or w.decode_busy_ratio is None
        hit = (
            not unknown
            and w.pre_decode_ttft_share is not None
            and w.decode_busy_ratio is not None
            and w.pre_decode_ttft_share >= cfg.pre_decode_share_min
            and w.decode_busy_ratio <= cfg.decode_busy_max
        )
        counts[w.pool] = counts.get(w.pool, 0) + 1 if hit else 0
        out.append(
            StarvationSignal(
                pool=w.pool,
                firing=counts[w.pool] >= cfg.consecutive_windows,
                unknown=unknown,
                consecutive=counts[w.pool],
                pre_decode_ttft_share=w.pre_decode_ttft_share,
                decode_busy_ratio=w.decode_busy_ratio,
            )
        )
    return StarvationState(counts), tuple(out)


def decode_pressure(w: PoolWindow, cfg: StarvationConfig) -> DecodePressureSignal:
    reasons = []
    if w.itl_p90 is not None and w.itl_p90 > cfg.itl_slo_seconds:
        reasons.append("itl")
    if w.kv_usage_max is not None and w.kv_usage_max >= cfg.kv_usage_max:
        reasons.append("kv_usage")
    if w.preemption_rate is not None and w.preemption_rate > cfg.preemption_rate_max:
        reasons.append("preemptions")
    unknown = not reasons and None in (w.itl_p90, w.kv_usage_max, w.preemption_rate)
    return DecodePressureSignal(
        pool=w.pool,
        firing=bool(reasons),
        unknown=unknown,
        reasons=tuple(reasons),
        itl_p90=w.itl_p90,
        itl_slo_seconds=cfg.itl_slo_seconds,
        kv_usage_max=w.kv_usage_max,
        preemption_rate=w.preemption_rate,
    )
