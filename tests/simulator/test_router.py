import random
from dataclasses import dataclass, field

from observer import conventions as c
from simulator import router
from simulator.cache import TieredPrefixCache


@dataclass
class FakePod:
    cache: TieredPrefixCache = field(default_factory=lambda: TieredPrefixCache((2, 8, 0)))
    queue_len: int = 0
    load: int = 0
    kv_usage: float = 0.0


def test_prefix_scorer_is_tier_unaware() -> None:
    warm, cold = FakePod(), FakePod()
    cold.cache.store([1, 2, 3, 4], 0.0)  # 1 and 2 demoted to DRAM
    assert cold.cache.tier_of(1) == c.TIER_DRAM
    weights = {c.SCORER_PREFIX_CACHE: 2.0, c.SCORER_QUEUE: 1.0}
    i, matched = router.pick([warm, cold], [1, 2, 3, 4], weights, random.Random(0))
    assert (i, matched) == (1, 4)  # still picked for blocks that are no longer in HBM


def test_queue_and_kv_scorers_pick_least_loaded() -> None:
    a, b = FakePod(queue_len=5, kv_usage=0.9), FakePod(queue_len=1, kv_usage=0.2)
    weights = {c.SCORER_QUEUE: 1.0, c.SCORER_KV_UTILIZATION: 1.0}
    total, _ = router.score([a, b], [7], weights)
    assert total == [0.0 + 0.1, 1.0 + 0.8] or abs(total[0] - 0.1) < 1e-9
    assert router.pick([a, b], [7], weights, random.Random(0))[0] == 1


def test_ties_are_broken_by_the_seeded_rng() -> None:
    pods = [FakePod() for _ in range(4)]
    picks = {router.pick(pods, [1], {c.SCORER_QUEUE: 1.0}, random.Random(s))[0] for s in range(40)}
    assert len(picks) > 1
    assert router.pick(pods, [1], {}, random.Random(3)) == router.pick(pods, [1], {}, random.Random(3))
