"""Fanout and the bounded recorder."""

from __future__ import annotations

import pytest

from observer import conventions as c
from simulator.emit.fanout import Fanout, Recorder
from simulator.events import FleetEvent, KvEvent

from .factories import T0, local_request, pd_request, snapshot


def test_fanout_forwards_every_call_to_each_sink_in_order() -> None:
    a, b = Recorder(), Recorder()
    sink = Fanout([a, b])
    sink.request_completed(pd_request(0))
    sink.pods_sampled(T0, (snapshot("p", c.ROLE_PREFILL),))
    sink.kv_events((KvEvent("p", "m", T0, c.KV_EVENT_ALL_CLEARED),))
    sink.fleet_event(FleetEvent(T0, "scale", {"role": c.ROLE_DECODE, "replicas": 3}))
    for r in (a, b):
        assert r.total_requests == 1
        assert r.total_kv_events == 1
        assert len(r.fleet_events) == 1
        assert r.latest_pods[0].pod == "p"


def test_recorder_timeline_has_load_replicas_ttft_p90_and_hit_rate_per_tenant() -> None:
    rec = Recorder(bucket_seconds=10.0)
    rec.pods_sampled(
        T0,
        (
            snapshot("p0", c.ROLE_PREFILL, kv=0.2),
            snapshot("d0", c.ROLE_DECODE, kv=0.4),
            snapshot("d1", c.ROLE_DECODE, kv=0.6),
        ),
    )
    for i in range(10):  # 10 P/D requests for acme within the first 10 s bucket
        rec.request_completed(pd_request(i, tenant="acme"))
    for i in range(4):
        rec.request_completed(local_request(i, tenant="beta", t0=T0 + 10))
    first, second = rec.timeline()
    assert first.start == T0 - (T0 % 10)
    assert first.requests_per_second == pytest.approx(1.0)
    assert first.replicas == {c.ROLE_PREFILL: 1, c.ROLE_DECODE: 2}
    assert first.kv_usage[c.ROLE_DECODE] == pytest.approx(0.5)
    acme = first.tenants["acme"]
    assert acme.hit_rate == pytest.approx(1536 / 2000)
    assert acme.ttft_p90 == pytest.approx(pd_request(0).ttft, abs=1e-6)
    assert acme.cached_by_tier == {c.TIER_HBM: 10 * 1024, c.TIER_DRAM: 10 * 512}
    assert second.replicas == first.replicas  # carried forward without a new sample
    assert second.tenants["beta"].hit_rate == pytest.approx(256 / 300)
    totals = rec.tenant_totals()
    assert totals["acme"].requests == 10
    assert totals["beta"].prompt_tokens == 4 * 300


def test_recorder_is_bounded() -> None:
    rec = Recorder(bucket_seconds=1.0, max_requests=5, max_buckets=3)
    for i in range(40):  # 0.05 s apart -> 2 s of requests, 20 per bucket
        rec.request_completed(local_request(i))
    assert len(rec.requests) == 5
    assert rec.total_requests == 40
    assert len(rec.timeline()) <= 3
