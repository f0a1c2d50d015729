"""Endpoint Picker emulation: weighted scorers and a max-score picker (llm-d EPP).

Scorers (weights keyed by conventions.SCORER_*), each in [0, 1]:
- prefix-cache-scorer: fraction of the request's leading blocks the pod holds. Like llm-d's
  block index it is tier-unaware: a block demoted to DRAM or disk still counts, which is what
  keeps a tenant pinned to a pod where its prefix went cold (the cache partition cascade).
- queue-scorer: (max_q - q) / (max_q - min_q) over the candidates, 1 when all equal.
- kv-cache-utilization-scorer: 1 - KV usage.
- active-request-scorer / load-aware-scorer: like queue, over running + waiting.
Other scorers score 0. Ties are broken by a seeded RNG (max-score-picker picks at random).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Protocol

from observer import conventions as c
from simulator.cache import TieredPrefixCache


class Candidate(Protocol):
    """What the picker needs to know about a pod."""

    @property
    def cache(self) -> TieredPrefixCache: ...

    @property
    def queue_len(self) -> int: ...

    @property
    def load(self) -> int: ...

    @property
    def kv_usage(self) -> float: ...


def _spread(values: Sequence[float]) -> list[float]:
    hi, lo = max(values), min(values)
    if hi == lo:
        return [1.0] * len(values)
    return [(hi - v) / (hi - lo) for v in values]


def score(
    candidates: Sequence[Candidate], blocks: Sequence[int], weights: Mapping[str, float]
) -> tuple[list[float], list[int]]:
    """Weighted scores per candidate and each candidate's matched leading block count."""
    matched = [p.cache.match_length(blocks) for p in candidates]
    n = len(candidates)
    total = [0.0] * n
    w = weights.get(c.SCORER_PREFIX_CACHE, 0.0)
    if w and blocks:
        for i in range(n):
            total[i] += w * matched[i] / len(blocks)
    w = weights.get(c.SCORER_QUEUE, 0.0)
    if w:
        for i, s in enumerate(_spread([p.queue_len for p in candidates])):
            total[i] += w * s
    w = weights.get(c.SCORER_KV_UTILIZATION, 0.0)
    if w:
        for i, p in enumerate(candidates):
            total[i] += w * (1.0 - min(1.0, p.kv_usage))
    w = weights.get(c.SCORER_ACTIVE_REQUEST, 0.0) + weights.get(c.SCORER_LOAD_AWARE, 0.0)
    if w:
        for i, s in enumerate(_spread([p.load for p in candidates])):
            total[i] += w * s
    return total, matched


def pick(
    candidates: Sequence[Candidate],
    blocks: Sequence[int],
    weights: Mapping[str, float],
    rng: random.Random,
) -> tuple[int, int]:
    """Index of the chosen candidate and its matched leading blocks. `candidates` non-empty."""
    total, matched = score(candidates, blocks, weights)
    best = max(total)
    ties = [i for i, s in enumerate(total) if s >= best - 1e-12]
    i = ties[0] if len(ties) == 1 else ties[rng.randrange(len(ties))]
    return i, matched[i]
