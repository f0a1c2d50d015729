"""GET /api/v1/pools, the tenant `signals` key and the fleet-signal gauges, through the real app
(lifespan, startup hook, background loop on the wall clock) with an in-memory metric source, and
with a Prometheus-compatible API answering hostile label values."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from observer import conventions as c
from observer.api.app import create_app
from observer.config import Settings
from observer.signals.engine import SignalEngine
from observer.signals.service import SignalService, attach
from observer.signals.settings import SignalsSettings
from observer.sources.ports import InMemorySource
from observer.sources.samples import FleetSnapshot, PodSample
from observer.sources.untrusted import clean_value
from observer.store.memory import MemoryStore
from tests.support.httpstub import Seen, serve_http
from tests.support.otel import Req, VllmSpans, encode

POOL = "pool-a"


def _snapshot(now: float, ok: bool = True) -> FleetSnapshot:
    pods = (
        PodSample(
            "pf-0", c.ROLE_PREFILL, POOL, "m", now, kv_usage=0.5, waiting=7.0, generation_tokens_rate=0.0
        ),
        PodSample(
            "vllm-0",
            c.ROLE_DECODE,
            POOL,
            "m",
            now,
            kv_usage=0.95,
            cpu_offload_usage=0.2,
            waiting=1.0,
            running=3.0,
            preemption_rate=0.0,
            generation_tokens_rate=100.0,
            prompt_tokens_rate=1000.0,
            prefix_queries_rate=1000.0,
            prefix_hits_rate=500.0,
            dram_eviction_rate=0.25,
        ),
    )
    return FleetSnapshot(
        c.SOURCE_SCRAPE, now, ok, None if ok else "connection refused", pods=pods if ok else ()
    )


def _metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_background_loop_serves_pools_tenant_signals_and_gauges() -> None:
    settings = Settings(signals={"interval_seconds": 0.05, "window_seconds": 60})
    source = InMemorySource(c.SOURCE_SCRAPE, _snapshot(time.time()))
    engine = SignalEngine(SignalsSettings.model_validate(settings.signals))
    att = attach(settings, service=SignalService(engine, source))
    app = create_app(settings, MemoryStore(), extra_routers=att.routers, on_startup=att.on_startup)
    with TestClient(app) as client:
        assert client.get("/api/v1/pools/nope").status_code == 404
        sp = VllmSpans()
        t0 = time.time() - 2
        for _ in range(3):
            sp.aggregated(Req("tenant-a", prompt=1000, output=50, cached={"hbm": 600}, start=t0))
        r = client.post(
            c.OTLP_TRACES_PATH, content=encode(sp.take()), headers={"content-type": c.CT_PROTOBUF}
        )
        assert r.status_code == 200
        # the background loop ticks on its own; wait for a tick that saw the records
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            latest = engine.latest
            if latest is not None and latest.tenant("tenant-a") is not None:
                break
            time.sleep(0.05)
        assert att.service.ticks > 0

        body = client.get("/api/v1/pools").json()
        assert body["observer_blind"] is False
        assert [s["source"] for s in body["sources"]] == [c.SOURCE_SCRAPE]
        (pool,) = body["pools"]
        assert pool["pool"] == POOL
        assert pool["decode_pressure"]["status"] == "firing"
        assert pool["decode_pressure"]["reasons"] == ["kv_usage"]
        assert pool["decode_pressure"]["evidence"]["kv_usage_max"] == 0.95
        assert pool["pd_balance"]["ratio_deployed"] == 1.0
        assert pool["pd_balance"]["evidence"]["hit_rate"] is None  # the prefill pod's rates are unknown
        pods = {p["pod"]: p for p in pool["pods"]}
        assert pods["vllm-0"]["tier_usage"] == {c.TIER_HBM: 0.95, c.TIER_DRAM: 0.2, c.TIER_DISK: None}
        assert pods["vllm-0"]["eviction_rate_by_tier"] == {c.TIER_DRAM: 0.25}
        assert pods["pf-0"]["queue"] == 7.0
        assert client.get(f"/api/v1/pools/{POOL}").json()["pool"] == POOL

        entry = client.get("/api/v1/tenants/tenant-a", params={"window": 300}).json()
        sig = entry[c.API_SIGNALS]
        assert sig["cascade"]["status"] == "unknown"  # no baseline yet: never "ok" by default
        assert sig["tier_shares"][c.TIER_HBM] == 1.0
        listing = client.get("/api/v1/tenants", params={"window": 300}).json()
        assert listing["tenants"][0][c.API_SIGNALS]["cascade"]["evidence"]["hbm_share"] == 1.0

        m = _metrics(client.get("/metrics").text)
        assert m[(c.M_DECODE_PRESSURE, ((c.LABEL_POOL, POOL),))] == 1.0
        assert m[(c.M_PD_RATIO_DEPLOYED, ((c.LABEL_POOL, POOL),))] == 1.0
        key = (
            (c.LABEL_POD, "vllm-0"),
            (c.LABEL_POOL, POOL),
            (c.LABEL_ROLE, c.ROLE_DECODE),
            (c.LABEL_TIER, c.TIER_HBM),
        )
        assert m[(c.M_POD_TIER_USAGE, key)] == 0.95
        assert (
            m[
                (
                    c.M_POD_EVICTION_RATE,
                    ((c.LABEL_POD, "vllm-0"), (c.LABEL_POOL, POOL), (c.LABEL_TIER, c.TIER_DRAM)),
                )
            ]
            == 0.25
        )
        assert (
            m[(c.M_POD_QUEUE, ((c.LABEL_POD, "pf-0"), (c.LABEL_POOL, POOL), (c.LABEL_ROLE, c.ROLE_PREFILL)))]
            == 7.0
        )
        assert m[(c.M_SOURCE_UP, ((c.LABEL_SOURCE, c.SOURCE_SCRAPE),))] == 1.0
        assert (c.M_SOURCE_AGE, ((c.LABEL_SOURCE, c.SOURCE_SCRAPE),)) in m
        # unknown signals are absent, never 0: no cascade series for a tenant without a baseline
        assert (c.M_CASCADE, ((c.LABEL_TENANT, "tenant-a"),)) not in m

        # the source goes down: source_up drops to 0, and the pool loses its metric-fed inputs
        source.snapshot = _snapshot(time.time(), ok=False)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            m = _metrics(client.get("/metrics").text)
            if m.get((c.M_SOURCE_UP, ((c.LABEL_SOURCE, c.SOURCE_SCRAPE),))) == 0.0:
                break
            time.sleep(0.05)
        assert m[(c.M_SOURCE_UP, ((c.LABEL_SOURCE, c.SOURCE_SCRAPE),))] == 0.0
        err = client.get("/api/v1/pools").json()["sources"][0]["error"]
        assert err == "connection refused"
    # lifespan ended: the background task was cancelled with the pipeline
    assert all(t.done() for t in app.state.pipeline._tasks)


def test_no_snapshot_yet() -> None:
    settings = Settings()
    att = attach(settings, service=SignalService(SignalEngine(), None), background=False)
    app = create_app(settings, MemoryStore(), extra_routers=att.routers, on_startup=att.on_startup)
    with TestClient(app) as client:
        assert client.get("/api/v1/pools").json() == {
            "time": None,
            "observer_blind": True,
            "sources": [],
            "pools": [],
        }
        assert c.M_SOURCE_UP not in client.get("/metrics").text  # absent -> the absent() alert


@contextmanager
def prometheus_api(pods: list[str]) -> Iterator[str]:
    """A Prometheus-compatible HTTP API answering every instant query with one HBM-gauge series
    per pod, valued `now` (a fresh `timestamp()` too). `pods` are JSON text: `\\ud800` escapes
    stay escapes, which `json.loads` turns into lone surrogates."""

    def answer(_: Seen) -> tuple[int, bytes]:
        now = time.time()
        row = json.dumps({"metric": {"__name__": c.VLLM_KV_USAGE, "pod": "@POD@"}, "value": [now, str(now)]})
        rows = [json.loads(row.replace("@POD@", pod)) for pod in pods]
        return 200, json.dumps(
            {"status": "success", "data": {"resultType": "vector", "result": rows}}
        ).encode()

    with serve_http(answer) as (url, _):
        yield url


def test_hostile_pod_names_from_a_source_keep_metrics_and_pools_working() -> None:
    """A lone surrogate in a pod label made GET /metrics and /api/v1/pools answer 500 (the
    exposition cannot encode it: every metric was lost, ingest's too), and three 300 KB pod names
    made /metrics 4.5 MB. Cleaned where the source reads them, the pods keep bounded names and
    the rewrites are counted in pd_observer_source_values_rewritten_total{source}."""
    long = ["p" * 300_000 + str(i) for i in range(3)]
    with prometheus_api(["vllm-\\ud800", *long]) as url:
        settings = Settings(sources={"metrics": "prometheus", "prometheus": {"url": url, "retries": 0}})
        att = attach(settings, background=False)
        app = create_app(settings, MemoryStore(), extra_routers=att.routers, on_startup=att.on_startup)
        with TestClient(app) as client:
            rewritten = (c.M_SOURCE_VALUES_REWRITTEN + "_total", ((c.LABEL_SOURCE, c.SOURCE_PROMETHEUS),))
            assert _metrics(client.get("/metrics").text)[rewritten] == 0.0  # exported from the start
            att.service.run_once(time.time())
            r = client.get("/metrics")
            assert r.status_code == 200
            assert len(r.content) < 100_000
            m = _metrics(r.text)
            pods = {dict(labels)[c.LABEL_POD] for name, labels in m if name == c.M_POD_TIER_USAGE}
            expected = {f"vllm-{c.VALUE_REPLACEMENT}", *(clean_value(p) for p in long)}
            assert pods == expected
            assert m[rewritten] > 0
            pools = client.get("/api/v1/pools")
            assert pools.status_code == 200
            (pool,) = pools.json()["pools"]
            assert {p["pod"] for p in pool["pods"]} == expected
            assert json.loads(pools.content)  # encodable, parseable


def test_kv_event_batches_not_applied_are_counted_by_reason() -> None:
    """Over real ZMQ into `serve`'s wiring: a malformed batch and topics beyond the publisher's
    `max_topics_per_publisher` were dropped with no trace outside the process; they are counted
    in pd_observer_kv_events_dropped_total{reason}, every reason exported from 0."""
    import msgpack
    import zmq

    from tests.support.procs import free_port

    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    port = free_port()
    pub.bind(f"tcp://127.0.0.1:{port}")
    settings = Settings(
        sources={
            "metrics": "none",
            "kv_events": {
                "enabled": True,
                "publishers": [{"endpoint": f"tcp://127.0.0.1:{port}"}],
                "max_topics_per_publisher": 2,
            },
        }
    )
    att = attach(settings, background=False)
    app = create_app(settings, MemoryStore(), extra_routers=att.routers, on_startup=att.on_startup)

    def dropped(client: TestClient) -> dict[str, float]:
        m = _metrics(client.get("/metrics").text)
        name = c.M_KV_EVENTS_DROPPED + "_total"
        return {dict(labels)[c.LABEL_REASON]: v for (n, labels), v in m.items() if n == name}

    def send(topic: bytes, payload: bytes) -> None:
        pub.send_multipart((topic, (1).to_bytes(8, "big"), payload))

    consumer = att.service.kv_consumer
    assert consumer is not None
    try:
        with TestClient(app) as client:
            att.service.start()
            assert dropped(client) == dict.fromkeys(c.KV_DROP_REASONS, 0.0)
            ok = msgpack.packb([0.0, [], 0])
            deadline = time.monotonic() + 5
            while ("p0", "m") not in consumer.last_seq:  # slow joiner
                assert time.monotonic() < deadline
                send(b"kv@p0@m", ok)
                time.sleep(0.02)
            send(b"kv@p1@m", msgpack.packb({"ts": "not a time", "events": []}))  # malformed
            for i in range(2, 6):  # p2..p5: beyond the 2 topics of this publisher
                send(b"kv@p%d@m" % i, ok)
            while dropped(client) != {
                c.KV_DROP_MALFORMED: 1.0,
                c.KV_DROP_TOPIC_LIMIT: 4.0,
                c.KV_DROP_POD_LIMIT: 0.0,
            }:
                assert time.monotonic() < deadline + 5, dropped(client)
                time.sleep(0.05)
    finally:
        att.service.stop()
        pub.close(0)
        ctx.term()
