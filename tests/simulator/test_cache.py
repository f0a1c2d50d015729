from observer import conventions as c
from simulator.cache import TieredPrefixCache


def test_lru_demotes_down_the_tiers_then_evicts() -> None:
    cache = TieredPrefixCache((2, 2, 1))
    cache.store([1, 2], 0.0)
    cache.store([3], 1.0)  # 1 is LRU in HBM -> DRAM
    assert cache.tier_of(1) == c.TIER_DRAM
    assert cache.tier_of(3) == c.TIER_HBM
    cache.store([4, 5], 2.0)  # 2,3 -> DRAM; DRAM overflows: 1 -> disk
    assert cache.tier_of(1) == c.TIER_DISK
    cache.store([6, 7], 3.0)  # 4,5 -> DRAM; 2,3 -> disk, 1 then 2 evicted
    assert 1 not in cache
    assert cache.demotions[c.TIER_HBM] == 5
    assert cache.evictions[c.TIER_DISK] == 2
    assert len(cache) == 5


def test_lookup_matches_leading_blocks_only_and_promotes_hits() -> None:
    cache = TieredPrefixCache((2, 4, 0))
    cache.store([1, 2, 3], 0.0)  # 1 demoted to DRAM
    assert cache.tier_of(1) == c.TIER_DRAM
    assert cache.match_length([1, 2, 9, 3]) == 2  # stops at the first miss
    tiers = cache.lookup([1, 2, 9, 3], 1.0)
    assert tiers == [1, 0]  # tier index per matched block, as found
    assert cache.tier_of(1) == c.TIER_HBM  # promoted back
    assert cache.tier_of(2) == c.TIER_HBM
    assert cache.tier_of(3) == c.TIER_DRAM  # demoted to make room


def test_zero_capacity_tier_is_skipped() -> None:
    cache = TieredPrefixCache((1, 0, 1))
    cache.store([1, 2], 0.0)
    assert cache.tier_of(1) == c.TIER_DISK
    assert cache.demotions[c.TIER_HBM] == 1


def test_kv_events_carry_medium_and_are_bounded() -> None:
    cache = TieredPrefixCache((1, 1, 0), pod="p", model="m", event_limit=3)
    cache.store([10, 11], 5.0)
    events = cache.drain_events()
    kinds = [(e.kind, e.block_hashes, e.medium) for e in events]
    assert kinds == [
        (c.KV_EVENT_BLOCK_STORED, (10,), "GPU"),
        (c.KV_EVENT_BLOCK_STORED, (11,), "GPU"),
        (c.KV_EVENT_BLOCK_REMOVED, (10,), "GPU"),
    ]
    assert cache.dropped_events == 1  # the CPU store of block 10 did not fit
    assert events[1].parent_block_hash == 10
    assert cache.drain_events() == ()
    off = TieredPrefixCache((1, 1, 0))
    off.store([1, 2], 0.0)
    assert off.drain_events() == ()
