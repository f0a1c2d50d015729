"""P/D balance: the prefill:decode replica ratio the demand needs vs the one deployed. Pure."""

from __future__ import annotations

from observer.signals.types import BalanceConfig, BalanceSignal, PdDemand


def balance(d: PdDemand, cfg: BalanceConfig) -> BalanceSignal:
    """prefill work = prompt tok/s x (1 - hit rate) / per-replica prefill capacity;
    decode work = output tok/s / per-replica decode capacity."""
    deployed = d.prefill_replicas / d.decode_replicas if d.decode_replicas > 0 else None
    if d.prompt_tokens_per_s is None or d.hit_rate is None or d.output_tokens_per_s is None:
        return BalanceSignal(d.pool, True, False, None, None, None, deployed, None)
    p = d.prompt_tokens_per_s * (1.0 - min(max(d.hit_rate, 0.0), 1.0)) / cfg.prefill_tokens_per_s_per_replica
    dec = d.output_tokens_per_s / cfg.decode_tokens_per_s_per_replica
    needed = p / dec if dec > 0 else None
    imbalanced, direction = False, None
    if needed is not None and needed > 0 and deployed is not None:
        r = deployed / needed
        if r < 1 / (1 + cfg.tolerance):
            imbalanced, direction = True, "more_prefill"
        elif r > 1 + cfg.tolerance:
            imbalanced, direction = True, "more_decode"
    return BalanceSignal(d.pool, needed is None, imbalanced, p, dec, needed, deployed, direction)
