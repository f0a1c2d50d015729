"""Aggregator windows: exact counts, edges, aging out, late and future records, SLO counters."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from observer import conventions as c
from observer.aggregate import Aggregator, QuantileSketch, TenantStats
from observer.config import AggregationSettings
from observer.model import RequestRecord, SloSpec, TierTokens
from observer.slo import judge

from .records import rec

TTFT = SloSpec("ttft-2s", c.SLI_TTFT, 0.99, 2.0)
ITL = SloSpec("itl-100ms", c.SLI_ITL, 0.99, 0.1)
AVAIL = SloSpec("availability", c.SLI_ERROR, 0.999)
SLOS = (TTFT, ITL, AVAIL)
S = AggregationSettings()  # 10 s fine buckets over 300 s, 60 s coarse buckets up to 3600 s


def only(stats: tuple[TenantStats, ...], tenant: str) -> TenantStats:
    (hit,) = [s for s in stats if s.tenant == tenant]
    return hit


def test_exact_counts_hit_rates_tiers_and_api_shape() -> None:
    agg = Aggregator(S, SLOS)
    agg.add(
        [
            rec("acme", 995.0, prompt=1000, output=50, cached=TierTokens(hbm=300, dram=100), ttft=0.5),
            rec("acme", 996.0, prompt=1000, output=70, cached=TierTokens(hbm=100), ttft=2.5, itl=0.05),
            rec("beta", 997.0, prompt=0, output=5, error=True),
        ],
        now=1000.0,
    )
    (acme, beta) = agg.tenants(60, 1000.0)
    assert (acme.tenant, acme.requests, acme.prompt_tokens, acme.output_tokens) == ("acme", 2, 2000, 120)
    assert acme.cached == TierTokens(hbm=400, dram=100)
    assert acme.prefix_hit_rate == 500 / 2000
    assert acme.tier_shares == {"hbm": 0.8, "dram": 0.2, "disk": 0.0, "remote": 0.0, "unknown": 0.0}
    assert acme.quantiles["ttft"].p50 == 0.5  # rank 1 of 2 -> exact min
    assert acme.quantiles["ttft"].p99 == 2.5  # rank 2 of 2 -> exact max
    assert acme.quantiles["decode"].p50 is None
    assert acme.slo["ttft-2s"].good == 1
    assert acme.slo["ttft-2s"].total == 2
    assert acme.slo["ttft-2s"].attainment == 0.5
    assert acme.slo["ttft-2s"].burn_rate == pytest.approx(50.0)
    assert (acme.slo["itl-100ms"].good, acme.slo["itl-100ms"].total) == (1, 1)
    assert beta.prefix_hit_rate is None
    assert beta.tier_shares is None
    assert beta.errors == 1
    assert (beta.slo["availability"].good, beta.slo["availability"].total) == (0, 1)
    assert beta.slo["ttft-2s"].total == 0  # errored: excluded from latency SLOs
    assert beta.slo["ttft-2s"].attainment is None

    body = acme.as_api_dict()
    design_keys = {
        "tenant",
        "requests",
        "prompt_tokens",
        "cached_tokens",
        "prefix_hit_rate",
        "cached_tokens_by_tier",
        "ttft_seconds",
        "itl_seconds",
        "e2e_seconds",
        "slo",
    }
    assert design_keys <= body.keys()
    assert body["cached_tokens"] == 500
    assert set(body["cached_tokens_by_tier"]) == {"hbm", "dram", "disk", "remote", "unknown"}
    assert body["ttft_seconds"] == {"p50": 0.5, "p90": 2.5, "p99": 2.5}
    assert body["slo"]["ttft-2s"] == {"attainment": 0.5, "burn_rate": pytest.approx(50.0)}
    assert set(body["phases_seconds"]) == set(c.PHASES)
    assert agg.tenant("acme", 60, 1000.0) == acme
    assert agg.tenant("nobody", 60, 1000.0) is None


def test_fine_window_edges() -> None:
    agg = Aggregator(S, ())
    # now=1005, W=60: buckets whose start >= 945 -> 950..1000
    agg.add([rec("a", 949.9), rec("a", 950.0), rec("a", 1004.0)], now=1005.0)
    stats = agg.tenant("a", 60, 1005.0)
    assert stats is not None
    assert stats.requests == 2
    assert agg.tenant("a", 300, 1005.0).requests == 3  # type: ignore[union-attr]


def test_coarse_window_edges_and_fold_from_fine() -> None:
    agg = Aggregator(S, ())
    agg.add([rec("a", 419.0), rec("a", 420.0), rec("a", 3705.0)], now=4000.0)
    # W=3600 at now=4000: coarse buckets whose start >= 400 -> 420, ...; 419 is in bucket 360
    assert agg.tenant("a", 3600, 4000.0).requests == 2  # type: ignore[union-attr]
    assert agg.tenant("a", 300, 4000.0).requests == 1  # type: ignore[union-attr]
    # move on: the fine bucket 3700 passes the 300 s horizon and is merged into coarse bucket 3660
    agg.expire(4015.0)
    assert 370 not in agg._fine
    assert agg.tenant("a", 300, 4015.0) is None
    assert agg.tenant("a", 3600, 4015.0).requests == 2  # type: ignore[union-attr]
    agg.expire(4021.0)  # coarse bucket 420 now starts before now - 3600
    assert agg.tenant("a", 3600, 4021.0).requests == 1  # type: ignore[union-attr]


def test_aging_out_and_memory_release() -> None:
    agg = Aggregator(S, SLOS)
    agg.add([rec("a", 1000.0, ttft=1.0)], now=1000.0)
    agg.expire(1000.0 + 3600 + 60)
    assert agg.tenants(3600, 4660.0) == ()
    assert agg.tracked_tenants == 0
    assert agg._fine == {}
    assert agg._coarse == {}
    # totals are cumulative and survive
    tot = agg.totals()
    assert tot.by_tenant_model[("a", "m1")].requests == 1
    assert tot.by_slo_tenant[("ttft-2s", "a")] == (1, 0)


def test_late_records_and_records_older_than_the_max_window() -> None:
    agg = Aggregator(S, ())
    agg.add([rec("a", 5000.0)], now=5000.0)
    agg.add([rec("a", 4000.0), rec("a", 1000.0)], now=5001.0)  # 4000: fine already merged; 1000: too old
    assert agg.tenant("a", 300, 5001.0).requests == 1  # type: ignore[union-attr]
    assert agg.tenant("a", 3600, 5001.0).requests == 2  # type: ignore[union-attr]
    assert agg.totals().by_tenant_model[("a", "m1")].requests == 3


def test_future_end_times_count_at_now() -> None:
    agg = Aggregator(S, ())
    agg.add([rec("a", 1000.0 + 7200)], now=1000.0)
    stats = agg.tenant("a", 60, 1000.0)
    assert stats is not None
    assert stats.requests == 1
    agg.expire(1000.0 + 3600 + 60)
    assert agg.tenant("a", 3600, 4660.0) is None  # it aged from `now`, not from its claimed end


def test_model_filter() -> None:
    agg = Aggregator(S, ())
    agg.add([rec("a", 990.0, model="x"), rec("a", 991.0, model="y"), rec("b", 992.0, model="y")], 1000.0)
    assert [s.tenant for s in agg.tenants(60, 1000.0, model="x")] == ["a"]
    assert [s.requests for s in agg.tenants(60, 1000.0, model="y")] == [1, 1]
    assert agg.tenant("a", 60, 1000.0).requests == 2  # type: ignore[union-attr]


def test_bad_window_is_rejected() -> None:
    agg = Aggregator(S, ())
    for w in (0, 3601):
        with pytest.raises(ValueError, match="window"):
            agg.tenants(w, 1000.0)


def test_non_finite_latency_is_skipped() -> None:
    agg = Aggregator(S, ())
    agg.add([rec("a", 999.0, ttft=math.nan, e2e=1.0)], 1000.0)
    stats = agg.tenant("a", 60, 1000.0)
    assert stats is not None
    assert stats.quantiles["ttft"].p50 is None
    assert stats.quantiles["e2e"].p50 == 1.0


def test_set_slos_rebuilds_counters_exactly() -> None:
    agg = Aggregator(S, SLOS)
    records = [rec("a", 990.0 + i, ttft=0.5 * i) for i in range(8)]  # ttft 0 .. 3.5
    agg.add(records, 1000.0)
    assert agg.tenant("a", 60, 1000.0).slo["ttft-2s"].good == 5  # type: ignore[union-attr]
    looser = SloSpec("ttft-2s", c.SLI_TTFT, 0.99, 3.0)
    new = SloSpec("e2e-1s", c.SLI_E2E, 0.9, 1.0)
    agg.set_slos([looser, AVAIL, new], records, 1000.0)
    stats = agg.tenant("a", 60, 1000.0)
    assert stats is not None
    assert stats.requests == 8  # windows rebuilt, not doubled
    assert (stats.slo["ttft-2s"].good, stats.slo["ttft-2s"].total) == (7, 8)
    assert stats.slo["e2e-1s"].total == 0  # no e2e values
    assert "itl-100ms" not in stats.slo
    tot = agg.totals()
    assert tot.by_tenant_model[("a", "m1")].requests == 8  # totals not re-counted
    assert tot.by_slo_tenant[("availability", "a")] == (8, 0)  # unchanged SLO keeps its counter
    assert ("ttft-2s", "a") not in tot.by_slo_tenant  # changed definition: counter restarts
    assert ("itl-100ms", "a") not in tot.by_slo_tenant
    agg.add([rec("a", 999.0, ttft=2.5)], 1000.0)
    assert agg.totals().by_slo_tenant[("ttft-2s", "a")] == (1, 0)


def test_set_slos_on_a_fresh_aggregator_restores_windows() -> None:
    records = [rec("a", 990.0, ttft=1.0), rec("b", 995.0, ttft=3.0)]
    agg = Aggregator(S, ())
    agg.set_slos(SLOS, records, 1000.0)
    assert [(s.tenant, s.requests, s.slo["ttft-2s"].good) for s in agg.tenants(60, 1000.0)] == [
        ("a", 1, 1),
        ("b", 1, 0),
    ]
    assert agg.totals().by_tenant_model == {}  # counters are since process start


# ---------------------------------------------------------------------------------------------
# Property: the windowed answer equals a brute-force computation over the records.
# ---------------------------------------------------------------------------------------------
latency = st.one_of(st.none(), st.floats(min_value=0.0, max_value=50.0))
record_st = st.builds(
    lambda tenant, end, prompt, hbm, ttft, itl, error: rec(
        tenant,
        end,
        prompt=prompt,
        cached=TierTokens(hbm=min(hbm, prompt)),
        ttft=ttft,
        itl=itl,
        error=error,
    ),
    st.sampled_from(["a", "b", "c"]),
    st.floats(min_value=0.0, max_value=4000.0),
    st.integers(min_value=0, max_value=5000),
    st.integers(min_value=0, max_value=5000),
    latency,
    latency,
    st.booleans(),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(record_st, max_size=20), min_size=1, max_size=8), st.data())
def test_windows_match_brute_force(batches: list[list[RequestRecord]], data: st.DataObject) -> None:
    agg = Aggregator(S, SLOS)
    now = 3000.0
    effective: list[tuple[float, RequestRecord]] = []
    for batch in batches:
        now += data.draw(st.floats(min_value=0.0, max_value=200.0))
        agg.add(batch, now)
        effective += [(min(r.end_time, now), r) for r in batch]
    agg.expire(now)
    for window in (60, 300, 1800, 3600):
        width = S.fine_bucket_seconds if window <= S.fine_horizon_seconds else S.coarse_bucket_seconds
        inside = [r for e, r in effective if math.floor(e / width) * width >= now - window]
        got = {s.tenant: s for s in agg.tenants(window, now)}
        assert set(got) == {r.tenant for r in inside}
        for tenant, stats in got.items():
            mine = [r for r in inside if r.tenant == tenant]
            assert stats.requests == len(mine)
            assert stats.prompt_tokens == sum(r.prompt_tokens for r in mine)
            assert stats.cached.hbm == sum(r.cached.hbm for r in mine)
            assert stats.errors == sum(r.error for r in mine)
            for metric in ("ttft", "itl"):
                ref = QuantileSketch(S.sketch_relative_accuracy, S.sketch_max_bins)
                for r in mine:
                    v = getattr(r, metric)
                    if v is not None:
                        ref.add(v)
                q = stats.quantiles[metric]
                assert (q.p50, q.p90, q.p99) == ref.quantiles((0.5, 0.9, 0.99))
            for slo in SLOS:
                verdicts = [judge(r, slo) for r in mine]
                status = stats.slo[slo.name]
                assert status.total == sum(v is not None for v in verdicts)
                assert status.good == sum(v is True for v in verdicts)
    tot = agg.totals()
    assert sum(t.requests for t in tot.by_tenant_model.values()) == len(effective)
