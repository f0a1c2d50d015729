"""The arrival side of the demand inside `serve` / `autoscale` (autoscaler.arrival, wired by
autoscaler.service.arrival_feed): prefill `num_requests_waiting` and the EPP request counter
from the live sources, unknown when stale, never negative across counter resets; end to end
through the service on the twin's metrics over real HTTP, and through a real Prometheus."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from autoscaler.arrival import (
    ArrivalFeed,
    CounterState,
    PodQueue,
    PodsReading,
    PrometheusCounters,
    ScrapeCounters,
    accumulate,
    epp_series,
    pods_of_signals,
    pods_of_snapshot,
    prefill_waiting,
)
from autoscaler.audit import SqlAuditLog
from autoscaler.loop import Controller
from autoscaler.observe import ObserverSource, QueueReading, RecordWindow, demand_of, pool_by_pod_prefix
from autoscaler.service import arrival_feed, attach
from autoscaler.settings import from_settings
from autoscaler.simulator import SimScaleTarget, TwinClock
from observer import conventions as c
from observer.api.app import create_app
from observer.config import Settings
from observer.signals import service as signals_service
from observer.signals.engine import PodSignals
from observer.sources.prometheus import PrometheusSource, PrometheusSourceConfig
from observer.sources.samples import EppTarget, FleetSnapshot, PodSample
from observer.sources.scrape import MAX_BODY_SETTING, TIMEOUT_SETTING, parse_exposition
from observer.store import Store
from observer.store.memory import MemoryStore
from simulator.emit.fanout import Fanout
from simulator.emit.metrics import MetricsEmitter, MetricsServer
from simulator.emit.otlp import OtlpSpanEmitter
from simulator.scenarios import Twin, build_scenario
from tests.autoscaler.inservice import observe_factory
from tests.autoscaler.test_observe import rec
from tests.observer.sources.exposition_server import fixture
from tests.observer.store.conftest import sqlite_url
from tests.support.hostile import CASES as HOSTILE_CASES
from tests.support.hostile import hostile
from tests.support.httpstub import Answer, Seen, serve_http
from tests.support.oversize import exposition_pad
from tests.support.procs import Prometheus, run_prometheus

P, D, B = c.ROLE_PREFILL, c.ROLE_DECODE, c.ROLE_BOTH
T0 = 1_767_225_600.0
POOL = "llama-8b"  # the twin's pool


# ---------------------------------------------------------------------------------------------
# Unit: the reading from given samples
# ---------------------------------------------------------------------------------------------
def test_prefill_waiting_sums_the_pools_prefill_pods_only() -> None:
    pods = [
        PodQueue("a-p1", "a", P, 3.0),
        PodQueue("a-p2", "a", P, 4.0),
        PodQueue("a-d1", "a", D, 50.0),  # decode queue: not prefill demand
        PodQueue("a-b1", "a", B, 9.0),  # aggregated pod: not a prefill pod
        PodQueue("b-p1", "b", P, 100.0),  # another pool
    ]
    assert prefill_waiting(pods, "a") == 7
    assert prefill_waiting(pods, "b") == 100
    # one prefill pod unknown: the pool is unknown (a partial sum is not the queue)
    assert prefill_waiting([*pods, PodQueue("a-p3", "a", P, None)], "a") is None
    # no prefill pod at all: unknown, not zero
    assert prefill_waiting(pods, "c") is None
    assert prefill_waiting([PodQueue("x", "c", D, 2.0)], "c") is None


def _snapshot_with_stale_second(fresh: PodSample, stale: PodSample) -> FleetSnapshot:
    """A good scrape at t = 100 of two pods, the second of them stale."""
    return FleetSnapshot(
        source=c.SOURCE_SCRAPE, time=100.0, ok=True, pods=(fresh, stale), stale_pods=(stale.pod,)
    )


def test_a_stale_pod_of_a_snapshot_is_unknown_and_a_failed_read_is_no_reading() -> None:
    snap = _snapshot_with_stale_second(
        PodSample("p1", P, "a", None, 100.0, waiting=2.0), PodSample("p2", P, "a", None, 100.0, waiting=5.0)
    )
    reading = pods_of_snapshot(snap)
    assert reading is not None
    assert prefill_waiting(reading.pods, "a") is None
    fresh = pods_of_snapshot(FleetSnapshot(c.SOURCE_SCRAPE, 100.0, True, pods=snap.pods))
    assert fresh is not None
    assert prefill_waiting(fresh.pods, "a") == 7
    assert pods_of_snapshot(FleetSnapshot(c.SOURCE_SCRAPE, 100.0, False, error="down")) is None


def _epp_text(name: str, rows: list[tuple[dict[str, str], float]]) -> str:
    family = name.removesuffix("_total")
    lines = [f"# TYPE {family} counter"]
    for labels, v in rows:
        inner = ",".join(f'{k}="{x}"' for k, x in labels.items())
        lines.append(f"{name}{{{inner}}} {v}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("gen", list(c.EPP_GENERATIONS))
def test_epp_series_reads_every_metric_generation(gen: str) -> None:
    name = c.EPP_GENERATIONS[gen]["request_total"]
    text = _epp_text(
        name,
        [
            ({c.EPP_LABEL_MODEL: "m", c.EPP_LABEL_FAIRNESS: "t1"}, 10.0),
            ({c.EPP_LABEL_MODEL: "m", c.EPP_LABEL_FAIRNESS: "t2"}, 5.0),
            ({c.EPP_LABEL_MODEL: "m", c.EPP_LABEL_POOL: "other"}, 1000.0),  # another pool's series
        ],
    )
    series = epp_series(parse_exposition(text), "a")
    assert series is not None
    assert sum(series.values()) == 15.0
    assert len(series) == 2
    assert epp_series(parse_exposition("# TYPE x gauge\nx 1\n"), "a") is None


def test_epp_series_from_the_twins_emitter_in_both_generations() -> None:
    totals = {}
    for gen in ("llm_d_epp", "inference_objective"):
        metrics = MetricsEmitter(epp_generation=gen)
        twin = build_scenario("steady", sink=metrics, seed=2, start=T0)
        twin.run_until(T0 + 30)
        series = epp_series(parse_exposition(metrics.render_epp().decode()), POOL)
        assert series is not None
        totals[gen] = sum(series.values())
    assert totals["llm_d_epp"] == totals["inference_objective"] > 0


def test_accumulate_is_monotone_across_resets_new_and_vanished_series() -> None:
    st = accumulate(CounterState(), {"e0|a": 100.0, "e0|b": 50.0})
    assert st.total == 150.0
    st = accumulate(st, {"e0|a": 110.0, "e0|b": 55.0})
    assert st.total == 165.0
    st = accumulate(st, {"e0|a": 3.0, "e0|b": 2.0})  # the EPP restarted: counters from 0
    assert st.total == 170.0
    st = accumulate(st, {"e0|a": 4.0, "e0|b": 2.0, "e1|a": 500.0})  # a replica appears: baseline
    assert st.total == 171.0
    st = accumulate(st, {"e1|a": 510.0})  # e0 vanished: adds nothing
    assert st.total == 181.0


class _Counters:
    def __init__(self, reads: list[dict[str, dict[str, float] | None]]) -> None:
        self.reads = reads
        self.calls = 0

    def read(self, now: float) -> dict[str, dict[str, float] | None]:
        self.calls += 1
        return self.reads.pop(0)


def test_feed_counter_reset_never_gives_negative_arrivals_and_reads_once_per_tick() -> None:
    window = RecordWindow(pool_by_pod_prefix(["llama"]), window_seconds=60.0)
    window.start(0.0)
    raw = [1000.0, 1150.0, 1300.0, 20.0, 170.0]  # restart between the 3rd and 4th read
    counters = _Counters([{"llama": {"k": v}} for v in raw])
    pods = PodsReading(0.0, (PodQueue("llama-prefill-0", "llama", P, 4.0),))
    feed = ArrivalFeed(lambda now: PodsReading(now, pods.pods), counters, stale_after_seconds=60.0)
    source = ObserverSource(window, queue=feed)
    rates = []
    for i, _ in enumerate(raw):
        now = 15.0 * (i + 1)
        window.add_records([rec(i, now - 1.0)], now)
        reading = feed("llama", now)
        assert feed("llama", now) == reading  # cached per tick: one read for every pool
        obs = source.observe("llama", now)
        assert obs.demand is not None
        assert obs.demand.waiting_requests == 4
        rates.append(obs.demand.arrivals_per_s)
    assert counters.calls == len(raw)  # feed() twice and observe() once per tick: one read
    assert rates[0] is None  # one point: no rate yet
    known = [r for r in rates[1:] if r is not None]
    assert known
    assert all(r >= 0 for r in known)
    assert rates[-1] == pytest.approx(10.0)  # 150 per 15 s, the reset counted as 20 arrivals


def test_stale_or_missing_reading_is_unknown_and_demand_falls_back_to_records() -> None:
    feed = ArrivalFeed(
        lambda now: PodsReading(now - 61.0, (PodQueue("p", "llama", P, 9.0),)),
        _Counters([{"llama": None}]),  # the EPP could not be read
        stale_after_seconds=60.0,
    )
    assert feed("llama", 1000.0) == QueueReading(waiting=None, arrived_total=None)
    assert ArrivalFeed(lambda now: None)("llama", 5.0) == QueueReading()
    # a reading source that raises is unknown too (the control loop goes on)
    assert ArrivalFeed(lambda now: 1 / 0)("llama", 5.0) == QueueReading()  # type: ignore[arg-type,return-value]

    window = RecordWindow(pool_by_pod_prefix(["llama"]), window_seconds=60.0)
    window.start(900.0)
    records = [rec(i, 990.0, queue=5.0) for i in range(10)]
    window.add_records(records, 1000.0)
    with_feed = ObserverSource(window, queue=lambda pool, now: QueueReading()).observe("llama", 1000.0)
    without = ObserverSource(window).observe("llama", 1000.0)
    assert with_feed.demand == without.demand
    assert with_feed.demand is not None
    assert with_feed.demand.arrivals_per_s is None
    assert with_feed.demand.waiting_requests is None
    # the record-based queue-time correction is kept (unknown is not zero demand)
    plain = demand_of(records, 60.0, backlog=False)
    assert with_feed.demand.prompt_tokens_per_s > plain.prompt_tokens_per_s


def test_arrival_feed_from_settings_picks_the_configured_sources() -> None:
    pools: dict[str, Any] = {
        "pools": [
            {"name": "llama", "prefill": {"target": {"name": "p"}}, "decode": {"target": {"name": "d"}}}
        ]
    }
    none = Settings(sources={"metrics": "none"}, autoscaler=pools)
    assert arrival_feed(none, from_settings(none)) is None
    # no metric source, but an engine fed directly (the demo feeds it the twin's pods): the
    # decode pods' KV usage comes from the engine, the EPP counter is unknown
    pod = PodSignals("llama-d1", "llama", D, {c.TIER_HBM: 0.6}, 0.0, 3.0, {}, {}, None)
    engine = arrival_feed(
        none, from_settings(none), signals_latest=lambda: SimpleNamespace(time=100.0, pods=(pod,))
    )
    assert engine is not None
    assert engine.decode_gauges("llama", 110.0).kv_usage == {"llama-d1": 0.6}
    assert engine("llama", 110.0).arrived_total is None
    scrape = Settings(
        sources={
            "static": {"epps": [{"pool": "llama", "metrics_url": "http://127.0.0.1:1/metrics"}]},
            "scrape": {"max_body_bytes": 12345},
        },
        signals={"stale_after_seconds": 30},
        autoscaler=pools,
    )
    feed = arrival_feed(scrape, from_settings(scrape), signals_latest=lambda: None)
    assert feed is not None
    assert feed.stale_after_seconds == 30
    assert isinstance(feed._counters, ScrapeCounters)
    assert feed._counters.max_body_bytes == 12345  # the scrape source's cap
    # nothing answers on port 1: the counter is unknown, not zero
    assert feed("llama", 1.0) == QueueReading()
    prom = Settings(sources={"metrics": "prometheus"}, autoscaler=pools)
    feed = arrival_feed(prom, from_settings(prom))
    assert feed is not None
    assert isinstance(feed._counters, PrometheusCounters)


# ---------------------------------------------------------------------------------------------
# Integration: `serve` (signals service + autoscaler attached to the app) on the twin
# ---------------------------------------------------------------------------------------------
@dataclass
class Served:
    twin: Twin
    client: TestClient
    signals: signals_service.SignalsAttachment
    controller: Controller
    clock: TwinClock
    spans: OtlpSpanEmitter

    def step(self, until: float, wait: Any = None) -> None:
        t = self.twin.now
        while t < until - 1e-9:
            t = min(until, t + 15.0)
            self.twin.run_until(t)
            self.spans.flush()
            if wait is not None:
                wait()
            self.signals.service.run_once(t)
            self.clock.t = t
            self.controller.tick()


def _settings(server: MetricsServer, metrics: MetricsEmitter, sources: dict[str, Any]) -> Settings:
    pods = [
        {
            "pod": g["labels"][c.LABEL_POD],
            "role": g["labels"][c.LABEL_ROLE],
            "pool": g["labels"][c.LABEL_POOL],
            "metrics_url": server.url + g["labels"][c.PROM_LABEL_METRICS_PATH],
        }
        for g in metrics.target_groups(server.address)
        if c.LABEL_ROLE in g["labels"]
    ]
    static = {"pods": pods, "epps": [{"pool": POOL, "metrics_url": server.url + "/metrics/epp"}]}
    return Settings(
        sources={"static": static, "scrape": {"max_workers": 2}, **sources},
        signals={"interval_seconds": 15},
        autoscaler={
            "enabled": True,
            "mode": "observe",
            "pools": [
                {
                    "name": POOL,
                    "prefill": {"target": {"name": f"{POOL}-prefill"}, "max": 12},
                    "decode": {"target": {"name": f"{POOL}-decode"}, "max": 12},
                }
            ],
        },
    )


@contextmanager
def served(
    tmp_path: Path, metrics: MetricsEmitter, server: MetricsServer, sources: dict[str, Any]
) -> Iterator[Served]:
    client: TestClient | None = None
    pending: list[bytes] = []  # spans of the first simulated second, before the app runs

    def post(body: bytes) -> None:
        pending.append(body)
        if client is None:
            return
        while pending:
            r = client.post(
                c.OTLP_TRACES_PATH, content=pending.pop(0), headers={"content-type": c.CT_PROTOBUF}
            )
            assert r.status_code == 200, r.text

    spans = OtlpSpanEmitter.to_bytes(post, batch_size=512)
    twin = build_scenario("prefill-burst", sink=Fanout([spans, metrics]), seed=3, start=T0)
    twin.run_until(T0 + 5.0)  # every pod sampled: the static pod list (discovery) can be written
    settings = _settings(server, metrics, sources)
    url = sqlite_url(tmp_path)
    store = Store.open(url)
    store.upgrade()
    sig = signals_service.attach(settings, clock=lambda: twin.now, background=False)
    clock = TwinClock(T0)
    made: list[Controller] = []
    asettings = from_settings(settings)

    att = attach(
        settings,
        controller_factory=observe_factory(
            SimScaleTarget(twin.actuator), clock, made, asettings.policy_config()
        ),
        signals_latest=lambda: sig.service.engine.latest,  # as `pd-observer serve` wires it
        audit_log=SqlAuditLog(store.engine),
        background=False,
    )
    app = create_app(
        settings,
        MemoryStore(),
        clock=lambda: twin.now,
        extra_routers=[*sig.routers, *att.routers],
        on_startup=[*sig.on_startup, *att.on_startup],
    )

    try:
        with TestClient(app) as client:
            try:
                yield Served(twin, client, sig, made[0], clock, spans)
            finally:
                spans.shutdown()
                sig.service.stop()
    finally:
        store.close()


def _decisions(client: TestClient) -> list[dict[str, Any]]:
    return list(client.get("/api/v1/decisions", params={"pool": POOL, "limit": 100}).json()["decisions"])


def _arrival_inputs(client: TestClient) -> list[dict[str, Any]]:
    return [d["inputs"]["demand"] for d in _decisions(client) if d["inputs"]["demand"] is not None]


def _check_burst_inputs(demands: list[dict[str, Any]]) -> None:
    assert demands, "no decision with a demand"
    newest = demands[0]
    assert newest["arrivals_per_s"] is not None, newest
    assert newest["arrivals_per_s"] > 0, newest
    assert newest["waiting_requests"] is not None, newest
    assert any((d["waiting_requests"] or 0) > 0 for d in demands), demands  # the burst queues prefill
    assert all(d["arrivals_per_s"] is None or d["arrivals_per_s"] >= 0 for d in demands)


def test_serve_decisions_show_the_arrival_side_from_the_direct_scrape(tmp_path: Path) -> None:
    metrics = MetricsEmitter()
    with metrics.serve() as server, served(tmp_path, metrics, server, {}) as s:
        burst = s.twin.phases[1][1]
        s.step(burst + 45.0)
        demands = _arrival_inputs(s.client)
        _check_burst_inputs(demands)
        # the arrival rate is the EPP counter's: what the twin's EPP counted over the last tick
        epp = epp_series(parse_exposition(metrics.render_epp().decode()), POOL)
        assert epp is not None
        assert sum(epp.values()) > 0
        # the pool's prefill queue as the signals engine read it last
        latest = s.signals.service.engine.latest
        assert latest is not None
        expect = round(sum(p.queue or 0 for p in latest.pods if p.role == P))
        assert demands[0]["waiting_requests"] == expect
        # the KV headroom floor's input under the engine: the decode pods' KV in use (Σ of their
        # HBM usage as the engine read them), the highest over the scale-down window
        kv_now = sum(p.tier_usage[c.TIER_HBM] for p in latest.pods if p.role == D)
        assert kv_now > 0
        peaks = [d["inputs"]["signals"]["decode_kv_peak"] for d in _decisions(s.client)]
        assert None not in peaks, peaks
        assert peaks[0] >= kv_now - 1e-9
        assert max(peaks) == pytest.approx(peaks[0])  # a running maximum (all within 300 s)


@pytest.mark.prometheus
def test_serve_decisions_show_the_arrival_side_through_prometheus(tmp_path: Path) -> None:
    metrics = MetricsEmitter(epp_generation="inference_objective")  # the older name generation
    with metrics.serve() as server:
        # scraped every 250 ms: each of the ~11 steps waits for a scrape of every target that
        # started after the twin's jump (`_wait_scraped`), about 1-2 intervals; at 1 s that wait
        # was most of the test's ~16 s. What is scraped and asserted is unchanged.
        config = (
            "global:\n  scrape_interval: 250ms\nscrape_configs:\n  - job_name: twin\n"
            f"    http_sd_configs:\n      - url: {server.url}/targets.json\n        refresh_interval: 1s\n"
        )
        with run_prometheus(config) as prom:
            sources = {"metrics": "prometheus", "prometheus": {"url": prom.url, "rate_window_seconds": 15}}
            with served(tmp_path, metrics, server, sources) as s:
                name = c.EPP_GENERATIONS["inference_objective"]["request_total"]

                def caught_up() -> None:
                    _wait_scraped(prom, name, metrics)

                s.step(s.twin.phases[1][1] + 45.0, wait=caught_up)
                _check_burst_inputs(_arrival_inputs(s.client))
                # the Prometheus reader sees the same series the EPP exposes
                reader = PrometheusCounters(
                    PrometheusSource(PrometheusSourceConfig(url=prom.url)).query, [POOL]
                ).read(0.0)
                direct = epp_series(parse_exposition(metrics.render_epp().decode()), POOL)
                got = reader[POOL]
                assert got is not None
                assert direct is not None
                assert math.isclose(sum(got.values()), sum(direct.values()))


def _wait_scraped(prom: Prometheus, name: str, metrics: MetricsEmitter, timeout: float = 15.0) -> None:
    """Until Prometheus holds the twin's current counter and queues (the twin moves in jumps): the
    EPP's counter, and a scrape of every twin target (the pods' gauges of the same instant) that
    started after the jump. (It slept 1.1 s after the counter, a whole scrape interval, for the
    pods; their `up` samples are stamped with the time their scrape started.)"""
    jumped = time.time()  # the twin stands still while the test waits here
    series = epp_series(parse_exposition(metrics.render_epp().decode()), POOL) or {}
    want = sum(series.values())
    targets = len(metrics.target_groups(""))  # every pod's and the EPP's
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = prom.query(f"sum({name})")
        fresh = prom.query(f'count(timestamp(up{{job="twin"}}) > {jumped!r})')
        if (
            rows
            and float(rows[0]["value"][1]) == want
            and fresh
            and int(float(fresh[0]["value"][1])) == targets
        ):
            return
        time.sleep(0.05)
    raise AssertionError(f"Prometheus did not scrape {name} = {want} and all {targets} targets")


def test_scrape_counters_report_an_unreachable_epp_as_unknown() -> None:
    with httpx.Client(timeout=0.5) as client:
        reader = ScrapeCounters(
            [EppTarget("a", "http://127.0.0.1:1/metrics"), EppTarget("a", "http://127.0.0.1:1/m2")],
            client=client,
        )
        assert reader.read(0.0) == {"a": None}


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("kind", "case"), HOSTILE_CASES)
def test_scrape_counters_report_an_epp_page_too_large_or_too_slow_as_unknown(
    kind: str, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An EPP page over `max_body_bytes` (declared, endless, or gzip inflating past it), or one
    that keeps coming past `timeout_seconds` (a header line or a body chunk every 0.2 s, never a
    per-read timeout): that pool's counter is unknown and the warning names the setting; the other
    pool is read. A page of exactly the cap, or the same page at once, is read."""
    page = fixture("epp_llm_d_epp").encode()
    bad = hostile(kind, page, exposition_pad)

    def answer(req: Seen) -> Answer:
        return bad.reply(case) if req.path == "/bad" else (200, page)

    with serve_http(answer, content_type="text/plain; version=0.0.4") as (url, _):
        reader = ScrapeCounters([EppTarget("a", f"{url}/bad"), EppTarget("b", f"{url}/ok")], **bad.limits)
        start = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="autoscaler.arrival"):
            got = reader.read(0.0)
        elapsed = time.monotonic() - start
        reader.close()
    assert got["b"]
    if case == bad.fine:
        assert got["a"] is not None
        assert sum(got["a"].values()) == sum(got["b"].values())
        return
    assert got["a"] is None
    errors = [
        str(getattr(r, "error", "")) for r in caplog.records if r.getMessage() == "EPP counter read failed"
    ]
    assert len(errors) == 1
    bad.refused(case, errors[0], elapsed, max_body_setting=MAX_BODY_SETTING, timeout_setting=TIMEOUT_SETTING)


def test_standalone_autoscale_reads_the_metric_source_itself() -> None:
    """Without a signals engine (`pd-observer autoscale`), the feed reads the configured metric
    source once per tick: the twin's prefill pods over HTTP, the EPP counter beside them."""
    metrics = MetricsEmitter()
    twin = build_scenario("prefill-burst", sink=metrics, seed=3, start=T0)
    twin.run_until(twin.phases[1][1] + 40.0)  # into the burst: prefill queues
    with metrics.serve() as server:
        settings = _settings(server, metrics, {})
        feed = arrival_feed(settings, from_settings(settings))
        assert feed is not None
        first = feed(POOL, twin.now)
        snap = metrics.latest()
        want = round(sum(p.waiting for p in snap.values() if p.role == P))
        assert want > 0
        assert first.waiting == want
        assert first.arrived_total is not None
        assert first.arrived_total > 0
        twin.run_until(twin.now + 15.0)
        second = feed(POOL, twin.now)
        assert second.arrived_total is not None
        assert second.arrived_total > first.arrived_total


def test_the_feed_reads_the_decode_pods_kv_usage_for_the_kv_headroom_floor() -> None:
    reading = PodsReading(
        100.0,
        (
            PodQueue("a-p1", "a", P, 0.0, 0.99),  # a prefill pod's KV is not decode's
            PodQueue("a-d1", "a", D, 0.0, 0.7),
            PodQueue("a-d2", "a", D, 1.0, 0.4),
            PodQueue("b-d1", "b", D, 0.0, None),  # unknown: the pool's KV is unknown
        ),
    )
    feed = ArrivalFeed(lambda now: reading, stale_after_seconds=60.0)
    assert feed.decode_gauges("a", 110.0).kv_usage == {"a-d1": 0.7, "a-d2": 0.4}
    assert feed.decode_gauges("b", 110.0).kv_usage is None
    assert feed.decode_gauges("c", 110.0).kv_usage is None  # no decode pod
    assert feed.decode_gauges("a", 200.0).kv_usage is None  # the reading is stale


def test_pod_readings_carry_the_kv_usage_from_a_snapshot_and_from_the_engine() -> None:
    snap = _snapshot_with_stale_second(
        PodSample("d1", D, "a", None, 100.0, kv_usage=0.7), PodSample("d2", D, "a", None, 100.0, kv_usage=0.4)
    )
    reading = pods_of_snapshot(snap)
    assert reading is not None
    assert [p.kv_usage for p in reading.pods] == [0.7, None]  # a stale pod's KV is unknown
    pod = PodSignals("d1", "a", D, {c.TIER_HBM: 0.8, c.TIER_DRAM: 0.1}, 0.0, 3.0, {}, {}, None)
    engine = pods_of_signals(SimpleNamespace(time=100.0, pods=(pod,)))
    assert engine.pods[0].kv_usage == 0.8  # the engine's HBM tier usage


def test_the_kv_peak_spans_the_pools_scale_down_window() -> None:
    """The KV headroom floor holds decode for the peak over the scale-down window, as configured
    (the longest of the pools), under both signal providers."""
    from autoscaler.observe import RecordSignals
    from autoscaler.service import _kv_peak, _signals_for

    def pool(name: str, window: float | None) -> dict[str, Any]:
        p: dict[str, Any] = {
            "name": name,
            "prefill": {"target": {"name": f"{name}-prefill"}},
            "decode": {"target": {"name": f"{name}-decode"}},
        }
        if window is not None:
            p["scale_down_window_seconds"] = window
        return p

    both = from_settings(Settings(autoscaler={"pools": [pool("a", 600.0), pool("b", 120.0)]}))
    record = _signals_for(both, 60.0)
    assert isinstance(record, RecordSignals)
    assert record.kv_peak.seconds == 600.0
    default = _signals_for(from_settings(Settings(autoscaler={"pools": [pool("a", None)]})), 60.0)
    assert isinstance(default, RecordSignals)
    assert default.kv_peak.seconds == 300.0
    # the engine's provider takes the same peak (autoscaler.service.attach)
    assert _kv_peak(both).seconds == 600.0
