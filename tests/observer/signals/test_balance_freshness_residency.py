"""P/D balance, freshness, and residency inputs built from RequestRecords."""

from __future__ import annotations

import pytest

from observer import conventions as c
from observer.model import RequestRecord, TierTokens
from observer.signals.balance import balance
from observer.signals.freshness import freshness
from observer.signals.residency import tenant_pod_hits, tenant_windows, tier_shares
from observer.signals.types import BalanceConfig, FreshnessConfig, PdDemand, SourceStatus

BCFG = BalanceConfig(prefill_tokens_per_s_per_replica=10_000, decode_tokens_per_s_per_replica=1_000)


def test_balance_ratio_needed_vs_deployed() -> None:
    # prefill work = 100k * 0.5 / 10k = 5 replicas; decode work = 5k / 1k = 5 -> 1:1 needed
    s = balance(PdDemand("p", 100_000, 0.5, 5_000, prefill_replicas=1, decode_replicas=4), BCFG)
    assert s.ratio_needed == pytest.approx(1.0)
    assert s.ratio_deployed == 0.25
    assert s.imbalanced
    assert s.direction == "more_prefill"
    ok = balance(PdDemand("p", 100_000, 0.5, 5_000, 4, 4), BCFG)
    assert not ok.imbalanced
    assert ok.direction is None
    unknown = balance(PdDemand("p", None, 0.5, 5_000, 4, 4), BCFG)
    assert unknown.unknown
    assert unknown.ratio_needed is None
    assert unknown.ratio_deployed == 1.0


def test_freshness_blind_when_stale_or_failing() -> None:
    cfg = FreshnessConfig(stale_after_seconds=60)
    fresh = freshness(SourceStatus(c.SOURCE_PROMETHEUS, 100.0, 100.0), 110.0, cfg)
    assert fresh.up
    assert not fresh.blind
    assert fresh.age_seconds == 10.0
    failing = freshness(SourceStatus(c.SOURCE_PROMETHEUS, 200.0, 100.0, "timeout"), 210.0, cfg)
    assert not failing.up
    assert failing.blind
    assert failing.error == "timeout"
    never = freshness(SourceStatus(c.SOURCE_SCRAPE, 5.0, None), 6.0, cfg)
    assert never.blind
    assert never.age_seconds is None


def _rec(
    rid: str, tenant: str, ttft: float, hits: TierTokens, prefill: str | None, decode: str
) -> RequestRecord:
    return RequestRecord(
        rid,
        "t" + rid,
        tenant,
        "m",
        0.0,
        1.0,
        100,
        10,
        hits,
        ttft,
        0.01,
        1.0,
        0.1,
        0.2,
        0.05,
        0.5,
        prefill_pod=prefill,
        decode_pod=decode,
        disaggregated=prefill is not None,
    )


def test_inputs_from_records_use_the_prefill_pod_for_pd() -> None:
    recs = [
        _rec(str(i), "A", 0.1 * (i + 1), TierTokens(hbm=10, dram=10), "pre-0", "dec-0") for i in range(10)
    ]
    recs.append(_rec("x", "B", 1.0, TierTokens(hbm=5), None, "dec-1"))
    hits = tenant_pod_hits(recs)
    assert [(h.tenant, h.pod, h.hits.hbm) for h in hits] == [("A", "pre-0", 100), ("B", "dec-1", 5)]
    windows = {w.tenant: w for w in tenant_windows(recs)}
    assert windows["A"].requests == 10
    assert windows["A"].ttft_p90 == pytest.approx(0.9)
    assert windows["A"].hbm_share == 0.5
    assert set(windows["A"].pod_hits) == {"pre-0"}
    assert tier_shares(TierTokens(hbm=3, remote=1)) == {
        "hbm": 0.75,
        "dram": 0.0,
        "disk": 0.0,
        "remote": 0.25,
        "unknown": 0.0,
    }
    assert tier_shares(TierTokens()) is None
