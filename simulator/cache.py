"""Per-pod tiered prefix cache: HBM -> DRAM -> disk, LRU per tier, in hash-identified blocks.

A block lives in exactly one tier. New blocks and hits enter HBM as most recently used; an
overflowing tier demotes its least recently used block to the next tier; the last tier
evicts. A tier of capacity 0 is skipped. Lookups match the request's *leading* blocks (a
prefix cache can only reuse a prefix) and report how many matched blocks sat in each tier.

Optional vLLM-style KV events (BlockStored / BlockRemoved with a medium per tier) go to a
bounded buffer the fleet drains; past the bound they are dropped and counted.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from observer import conventions as c
from simulator.events import KvEvent

TIER_ORDER: tuple[str, str, str] = (c.TIER_HBM, c.TIER_DRAM, c.TIER_DISK)
TIER_MEDIUM: dict[str, str] = {tier: medium for medium, tier in c.KV_MEDIUM_TO_TIER.items()}


class TieredPrefixCache:
    """LRU prefix cache with demotion down the tiers. Not thread-safe; owned by one pod."""

    __slots__ = (
        "_events",
        "_first",
        "_tiers",
        "_where",
        "block_tokens",
        "capacities",
        "demotions",
        "dropped_events",
        "event_limit",
        "evictions",
        "model",
        "pod",
    )

    def __init__(
        self,
        capacities: Sequence[int],
        *,
        pod: str = "",
        model: str = "",
        block_tokens: int = 512,
        event_limit: int = 0,
    ) -> None:
        if len(capacities) != len(TIER_ORDER):
            raise ValueError("one capacity per tier (hbm, dram, disk)")
        self.capacities = tuple(max(0, int(x)) for x in capacities)
        # _first_tier(start) for every start (0..len(TIER_ORDER)): asked for every block stored,
        # touched or demoted
        self._first: tuple[int | None, ...] = tuple(
            next((i for i in range(start, len(TIER_ORDER)) if self.capacities[i] > 0), None)
            for start in range(len(TIER_ORDER) + 1)
        )
        self._tiers: tuple[OrderedDict[int, None], ...] = tuple(OrderedDict() for _ in TIER_ORDER)
        self._where: dict[int, int] = {}
        self.demotions = dict.fromkeys(TIER_ORDER, 0)
        self.evictions = dict.fromkeys(TIER_ORDER, 0)
        self.pod = pod
        self.model = model
        self.block_tokens = block_tokens
        self.event_limit = event_limit
        self._events: list[KvEvent] = []
        self.dropped_events = 0

    # -- queries -------------------------------------------------------------------------
    def __contains__(self, block: int) -> bool:
        return block in self._where

    def __len__(self) -> int:
        return len(self._where)

    def tier_of(self, block: int) -> str | None:
        idx = self._where.get(block)
        return None if idx is None else TIER_ORDER[idx]

    def used(self, tier: str) -> int:
        return len(self._tiers[TIER_ORDER.index(tier)])

    def usage(self, tier: str) -> float:
        idx = TIER_ORDER.index(tier)
        cap = self.capacities[idx]
        return len(self._tiers[idx]) / cap if cap else 0.0

    def match_length(self, blocks: Sequence[int]) -> int:
        """Leading blocks resident in ANY tier (what a tier-unaware block index sees)."""
        where = self._where
        n = 0
        for b in blocks:
            if b not in where:
                break
            n += 1
        return n

    # -- mutations -----------------------------------------------------------------------
    def lookup(self, blocks: Sequence[int], now: float) -> list[int]:
        """Match the leading blocks; return the tier index of each matched block (in order).

        Every matched block is promoted to (or refreshed in) HBM as most recently used.
        """
        where = self._where
        tiers: list[int] = []
        for b in blocks:
            idx = where.get(b)
            if idx is None:
                break
            tiers.append(idx)
        for b in blocks[: len(tiers)]:
            # Promoting one block may demote a later one: re-read where it lives now.
            idx = where.get(b)
            if idx is None:
                self._insert(b, 0, now, parent=None)
            else:
                self._touch(b, idx, now)
        return tiers

    def store(self, blocks: Sequence[int], now: float) -> None:
        """Insert (or refresh) blocks into HBM as most recently used."""
        where = self._where
        for i, b in enumerate(blocks):
            idx = where.get(b)
            if idx is None:
                self._insert(b, 0, now, parent=blocks[i - 1] if i else None)
            else:
                self._touch(b, idx, now)

    def clear(self, now: float) -> None:
        for t in self._tiers:
            t.clear()
        self._where.clear()
        self._emit(c.KV_EVENT_ALL_CLEARED, (), None, now, None)

    def drain_events(self) -> tuple[KvEvent, ...]:
        out = tuple(self._events)
        self._events.clear()
        return out

    # -- internals -----------------------------------------------------------------------
    def _first_tier(self, start: int) -> int | None:
        """The first tier at or below `start` with a capacity (None: none left)."""
        return self._first[start]

    def _touch(self, b: int, idx: int, now: float) -> None:
        top = self._first_tier(0)
        if idx == top:
            self._tiers[idx].move_to_end(b)
            return
        del self._tiers[idx][b]
        del self._where[b]
        self._emit(c.KV_EVENT_BLOCK_REMOVED, (b,), TIER_ORDER[idx], now, None)
        self._insert(b, 0, now, parent=None)

    def _insert(self, b: int, start: int, now: float, parent: int | None) -> None:
        idx = self._first_tier(start)
        if idx is None:
            if start > 0:
                self.evictions[TIER_ORDER[start - 1]] += 1
            return
        tier = self._tiers[idx]
        tier[b] = None
        self._where[b] = idx
        self._emit(c.KV_EVENT_BLOCK_STORED, (b,), TIER_ORDER[idx], now, parent)
        while len(tier) > self.capacities[idx]:
            victim, _ = tier.popitem(last=False)
            del self._where[victim]
            self._emit(c.KV_EVENT_BLOCK_REMOVED, (victim,), TIER_ORDER[idx], now, None)
            nxt = self._first_tier(idx + 1)
            if nxt is None:
                self.evictions[TIER_ORDER[idx]] += 1
            else:
                self.demotions[TIER_ORDER[idx]] += 1
                self._insert(victim, nxt, now, parent=None)

    def _emit(
        self, kind: str, blocks: tuple[int, ...], tier: str | None, now: float, parent: int | None
    ) -> None:
        if self.event_limit <= 0:
            return
        if len(self._events) >= self.event_limit:
            self.dropped_events += 1
            return
        self._events.append(
            KvEvent(
                pod=self.pod,
                model=self.model,
                time=now,
                kind=kind,
                block_hashes=blocks,
                medium=None if tier is None else TIER_MEDIUM[tier],
                parent_block_hash=parent,
                block_size=self.block_tokens,
            )
        )
