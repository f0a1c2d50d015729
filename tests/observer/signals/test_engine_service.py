"""SignalService.from_settings: static discovery + direct scrape over HTTP + KV events over real ZMQ
sockets, all from the `sources:` / `signals:` settings, against the twin's emitters."""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError

from observer import conventions as c
from observer.config import Settings
from observer.signals.service import SignalService
from observer.signals.settings import SignalsSettings
from observer.sources.settings import SourcesSettings
from simulator.emit.fanout import Fanout
from simulator.emit.kvevents import KvEventPublisher
from simulator.emit.metrics import MetricsEmitter
from simulator.scenarios import build_scenario

T0 = 1_767_225_600.0


def test_from_settings_scrapes_and_consumes_kv_events() -> None:
    metrics = MetricsEmitter()
    kv = KvEventPublisher()
    twin = build_scenario("cache-cascade", sink=Fanout([metrics, kv]), seed=1, start=T0, kv_events=True)
    twin.run_until(T0 + 20)  # pods sampled: sockets exist
    with metrics.serve() as server:
        latest = metrics.latest()
        assert len(latest) == 8
        pods = [
            {
                "pod": name,
                "role": snap.role,
                "pool": snap.pool,
                "metrics_url": f"{server.url}/metrics/{name}",
                "kv_events_endpoint": kv.endpoints()[name].pub,
                "kv_replay_endpoint": kv.endpoints()[name].replay,
            }
            for name, snap in latest.items()
        ]
        settings = Settings(
            sources={"static": {"pods": pods}, "kv_events": {"enabled": True}},
            signals={"interval_seconds": 15},
        )
        svc = SignalService.from_settings(settings)
        assert svc.kv_consumer is not None
        assert len(svc.kv_consumer.publishers) == len(pods)
        svc.start()
        try:
            time.sleep(0.3)  # ZMQ subscriptions propagate
            svc.run_once(time.time())
            twin.run_until(T0 + 140)
            deadline = time.monotonic() + 10
            assert svc.kv_index is not None
            while time.monotonic() < deadline:
                snap = svc.kv_index.snapshot(time.time())
                if sum(p.blocks_by_tier.get(c.TIER_HBM, 0) for p in snap.pods) > 0:
                    break
                time.sleep(0.05)
            fs = svc.run_once(time.time() + 1)
        finally:
            svc.stop()
        kv.close()
    assert {f.source for f in fs.freshness} == {c.SOURCE_SCRAPE, c.SOURCE_KV_EVENTS}
    assert all(f.up and not f.blind for f in fs.freshness)
    assert {p.pod for p in fs.pods} == set(latest)
    with_blocks = [p for p in fs.pods if p.kv_blocks_by_tier and p.kv_blocks_by_tier.get(c.TIER_HBM, 0) > 0]
    assert with_blocks
    # scrape rates are known from the second read on: the balance has its inputs
    pool = fs.pools[0]
    assert pool.demand.output_tokens_per_s is not None
    assert pool.demand.prefill_replicas == sum(1 for p in pods if p["role"] == c.ROLE_PREFILL)


def test_settings_validate_and_document_defaults() -> None:
    s = SignalsSettings()
    assert (s.interval_seconds, s.window_seconds, s.cascade.fleet_load) == (
        15.0,
        60.0,
        "established_requests",
    )
    assert s.cascade.config().hbm_share_drop == 0.3
    assert s.starvation.config().consecutive_windows == 3
    with pytest.raises(ValidationError):
        SignalsSettings.model_validate({"window_seconds": 5, "interval_seconds": 15})
    with pytest.raises(ValidationError):
        SignalsSettings.model_validate({"cascade": {"nope": 1}})
    src = SourcesSettings()
    assert (src.metrics, src.discovery, src.kv_events.enabled) == ("scrape", "static", False)
    with pytest.raises(ValidationError, match="metrics_url"):
        SourcesSettings.model_validate({"static": {"pods": [{"pod": "p0", "role": "decode"}]}})
    prom = SourcesSettings.model_validate({"metrics": "prometheus", "prometheus": {"url": "http://x:9090"}})
    assert prom.prometheus.config().url == "http://x:9090"
    assert prom.kubernetes.config().label_selector == f"{c.K8S_LABEL_SERVING}=true"
