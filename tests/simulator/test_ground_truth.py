"""The twin's ground truth vs the observer.

Scenarios run through the twin into the real service in-process (fast clock, real OTLP
protobuf encoding by the SDK, the real `/v1/traces` receiver, P/D assembly, store and windows),
and the per-tenant answer of `GET /api/v1/tenants` is compared with the twin's own records:
token counts exactly, latency quantiles within the sketch's relative error.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

from observer import conventions as c
from observer.wiring.replay import ReplayResult, TruthSink, run_replay
from simulator import mooncake

SKETCH_REL_ERROR = 0.01


def _exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(q * len(ordered) - 1e-9)))
    return ordered[rank - 1]


def _check(result: ReplayResult, truth: TruthSink) -> None:
    assert result.rejected_spans == 0
    api = {e[c.API_TENANT]: e for e in result.tenants}
    assert set(api) == set(truth.requests), "tenants seen by the observer = tenants the twin served"
    assert sum(truth.requests.values()) == result.requests > 0
    for tenant, entry in api.items():
        assert entry[c.API_REQUESTS] == truth.requests[tenant], tenant
        assert entry[c.API_PROMPT_TOKENS] == truth.prompt[tenant], tenant
        tiers = truth.cached.get(tenant, {})
        for tier in c.KNOWN_TIERS:
            assert entry[c.API_CACHED_BY_TIER][tier] == tiers.get(tier, 0), (tenant, tier)
        assert entry[c.API_CACHED_BY_TIER][c.TIER_UNKNOWN] == 0
        cached = sum(tiers.values())
        assert entry[c.API_CACHED_TOKENS] == cached
        assert entry[c.API_PREFIX_HIT_RATE] == pytest.approx(cached / truth.prompt[tenant], abs=1e-12)
        for key, values in ((c.API_TTFT, truth.ttft[tenant]), (c.API_E2E, truth.e2e[tenant])):
            for label, q in ((c.API_P50, 0.5), (c.API_P90, 0.9), (c.API_P99, 0.99)):
                got = entry[key][label]
                want = _exact(values, q)
                assert got == pytest.approx(want, rel=SKETCH_REL_ERROR), (tenant, key, label)


@pytest.mark.parametrize(
    ("scenario", "duration"),
    [("steady", 300.0), ("prefill-burst", 300.0), ("cache-cascade", 600.0)],
)
def test_scenario_ground_truth(scenario: str, duration: float) -> None:
    truth = TruthSink()
    result = run_replay(scenario, seed=3, duration=duration, extra_sinks=(truth,))
    _check(result, truth)
    # the twin's distinctive tiers reach the API: the cascade serves hits from DRAM
    if scenario == "cache-cascade":
        assert any(e[c.API_CACHED_BY_TIER][c.TIER_DRAM] > 0 for e in result.tenants)


def test_mooncake_slice_ground_truth(tmp_path: Path) -> None:
    src = mooncake.trace_path("conversation")
    if not src.is_file():
        pytest.fail(f"Mooncake trace missing at {src}")
    sliced = tmp_path / "conversation-slice.jsonl"
    with src.open(encoding="utf-8") as fh:
        sliced.write_text("".join(itertools.islice(fh, 1500)), encoding="utf-8")
    truth = TruthSink()
    result = run_replay(str(sliced), seed=0, tenants=6, extra_sinks=(truth,))
    _check(result, truth)
    assert 1 < len(result.tenants) <= 6
    hit = sum(e[c.API_CACHED_TOKENS] for e in result.tenants) / sum(
        e[c.API_PROMPT_TOKENS] for e in result.tenants
    )
    assert 0.0 < hit <= 0.366 + 1e-9  # the conversation trace's infinite-cache ceiling


def test_same_seed_same_answer() -> None:
    a = run_replay("steady", seed=5, duration=120.0)
    b = run_replay("steady", seed=5, duration=120.0)
    assert a.tenants == b.tenants
    assert a.truth == b.truth
