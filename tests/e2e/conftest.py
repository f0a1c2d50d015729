"""One shared end-to-end run: twins → services (signals attached) → Prometheus → Alertmanager → webhooks.

    twin `prefill-burst` ─OTLP/HTTP─▶ service A ─┐                 ┌─▶ webhook per receiver
    twin `cache-cascade` ─OTLP/HTTP─▶ service B ─┼─▶ Prometheus ─▶ Alertmanager
    both twins' per-pod /metrics (http_sd) ──────┘   (generated rules)  (generated alertmanager.yml)

Each service runs on its twin's simulated clock with the fleet-signals engine and the autoscaler
attached exactly as `pd-observer demo` does (`observer.wiring.demo.attach_twin_signals`: a scrape
source over the twin's pods, ticked every 15 simulated s from the paced loop;
`observer.wiring.autoscale.attach_twin_autoscaler`: the controller on the twin (apply on the
burst, dry run on the cascade), its metrics on the service's /metrics;
`observer.wiring.kvfeed.TwinKvEvents`: the twin's vLLM KV events over real ZMQ into the
engine's KV tier index, subscribed per pod as pods appear). The
two twins run concurrently at `SPEED`x real time, so the whole run takes `cache-cascade`'s 600
simulated s / SPEED of wall time.

Time: Prometheus evaluates rules and `for` on WALL time while the twins run SPEED x faster, so a
`for: 5m` would need 5 x 25 = 125 simulated minutes of a signal. The test renders the rules with
`alerts.signals.starvation_for` / `cascade_for` = `FOR` (2 s wall = 24 simulated s at 12x, i.e.
about two signal ticks) and Alertmanager `group_wait`/`group_interval` = 1 s. Everything
else (expressions, labels, routing tree, receivers) is the generated output unchanged.

While the twins run, a monitor thread polls Prometheus' `/api/v1/alerts` every 0.5 s (keeping
each alert's first firing state with its labels), and once the cascade twin is 60 % through and
a cascade is under way (95 % at the latest) it runs every dashboard expression ("during the
demo scenario"), about 2 s of wall time; before 95 % it runs them again until the cascade
gauge's queries have data in the same pass (the alert's state can outlive the gauge by one rule
evaluation).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry

from alerts.export import ALERTMANAGER_FILE, RULES_FILE, render_all
from autoscaler.loop import Mode
from dashboards.generate import generate
from dashboards.render import dashboard_dict
from observer import conventions as c
from observer.api.app import create_app
from observer.config import Settings, load_settings
from observer.signals.service import SignalsAttachment
from observer.store.memory import MemoryStore
from observer.wiring.autoscale import TwinAutoscaler, attach_twin_autoscaler
from observer.wiring.demo import SignalTicker, attach_twin_signals, http_emitter, traces_endpoint
from observer.wiring.kvfeed import TwinKvEvents
from observer.wiring.procs import ServiceThread, WebhookRecorder, free_port
from observer.wiring.twin import build_twin
from simulator.clock import run_paced
from simulator.emit.fanout import Fanout
from simulator.emit.metrics import TARGETS_PATH, MetricsEmitter, MetricsServer
from simulator.emit.otlp import OtlpSpanEmitter
from simulator.scenarios import Twin
from tests.dashboards.conftest import Expr, all_exprs, substitute
from tests.support.procs import Alertmanager, Prometheus, run_alertmanager, run_prometheus

HOST = "127.0.0.1"
# twins' simulated seconds per wall second. At 25x the two twins, their services, Prometheus and
# Alertmanager overran 2 cores: the paced loop lagged up to 7 s, spans reached the signals engine
# late, and the victim's cascade signal broke into runs shorter than `for` (its alert then never
# fired, about 1 run in 10). At 15x it held for 13-17 s of wall time in one run; on a box about
# three times slower (a full-suite run of 2026-11-21) the cascade was not under way by 95 % once,
# so 12x.
SPEED = 12.0
FOR = "2s"  # `for` of the two signal alerts under test (wall time; see the module doc)
SEED = 1
POOL = "llama-8b"  # the twin's pool (simulator/profiles/default.yaml)
SCENARIOS = ("prefill-burst", "cache-cascade")
# apply on the burst (the autoscaler's e2e); a dry run on the cascade, so the cascade's story (and
# its alert, tests/e2e/test_alerts_e2e.py) is the twin's own while every autoscaler series exists
AUTOSCALER_MODE = {"prefill-burst": Mode.APPLY, "cache-cascade": Mode.DRY_RUN}
# The dashboard queries run once the cascade twin is SNAPSHOT_AT through its run and some tenant's
# cascade expression is true (its alert pending or firing: the annotation query has data then),
# or at SNAPSHOT_LATEST whatever the alert. The cascade's onset varies with the wall-time pacing
# (its alert first fired between 305 and 501 simulated s of 600 in the runs measured).
SNAPSHOT_AT = 0.6
SNAPSHOT_LATEST = 0.95
RUN_TIMEOUT = 90.0  # wall seconds for both twins (a slow, shared CI box lags behind SPEED)

# Receivers of the test's alert routing: one webhook server each, so a delivery proves the URL too.
RECEIVER_PAGE = "oncall"
RECEIVER_TICKET = "tickets"
RECEIVER_FLEET = "fleet-oncall"  # team `serving` owns the twin's pool
RECEIVER_APPS_PAGE = "apps-oncall"  # team `apps` owns the cascade victim tenant
RECEIVER_APPS_TICKET = "apps-tickets"
RECEIVERS = (RECEIVER_PAGE, RECEIVER_TICKET, RECEIVER_FLEET, RECEIVER_APPS_PAGE, RECEIVER_APPS_TICKET)


def alert_overrides(webhooks: dict[str, str], victim: str) -> dict[str, Any]:
    """The `alerts:` settings of the run: teams by pool and tenant, short hold times."""
    return {
        "receivers": {name: {"webhook_url": url} for name, url in webhooks.items()},
        "page_receiver": RECEIVER_PAGE,
        "ticket_receiver": RECEIVER_TICKET,
        "teams": {
            "serving": {"pools": [POOL], "receiver": RECEIVER_FLEET},
            "apps": {
                "tenants": [victim],
                "receiver": RECEIVER_APPS_PAGE,
                "ticket_receiver": RECEIVER_APPS_TICKET,
            },
        },
        "group_wait": "1s",
        "group_interval": "1s",
        "signals": {"starvation_for": FOR, "cascade_for": FOR},
    }


@dataclass
class ScenarioRun:
    """One twin feeding one service (signals attached) on the twin's clock."""

    name: str
    twin: Twin
    service: ServiceThread
    signals: SignalsAttachment
    metrics: MetricsEmitter
    server: MetricsServer
    spans: OtlpSpanEmitter
    autoscaler: TwinAutoscaler
    kv: TwinKvEvents
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    lag_seconds: float = 0.0

    @property
    def progress(self) -> float:
        return (self.twin.now - self.twin.sim.start) / self.twin.duration

    def run(self) -> None:
        ticker = SignalTicker(self.signals.service, self.signals.service.engine.settings.interval_seconds)

        def tick(now: float) -> None:
            ticker(now)
            self.autoscaler(self.twin, now)

        try:
            res = run_paced(self.twin, SPEED, self.twin.end, on_tick=tick, tick_seconds=0.1)
            self.lag_seconds = res.max_lag_seconds
            self.spans.flush()
            # spans delivered after the last tick: one more tick so the gauges include them
            time.sleep(0.3)
            self.signals.service.run_once(self.twin.now)
        except BaseException as exc:  # reported by the fixture
            self.error = exc
        finally:
            self.done.set()


@dataclass
class FiringAlert:
    labels: dict[str, str]
    annotations: dict[str, str]
    wall: float
    sim_elapsed: dict[str, float]  # scenario -> simulated seconds since its start


@dataclass
class E2E:
    settings: Settings
    runs: dict[str, ScenarioRun]
    prometheus: Prometheus
    alertmanager: Alertmanager
    webhooks: dict[str, WebhookRecorder]
    firing: list[FiringAlert] = field(default_factory=list)
    exprs: list[Expr] = field(default_factory=list)
    snapshot: dict[str, dict[str, Any]] = field(default_factory=dict)  # substituted expr -> response
    snapshot_elapsed: float | None = None
    snapshot_done: threading.Event = field(default_factory=threading.Event)
    poll_errors: list[str] = field(default_factory=list)

    def firing_named(self, name: str) -> list[FiringAlert]:
        return [a for a in self.firing if a.labels.get(c.LABEL_ALERTNAME) == name]

    def wait_firing(self, name: str, timeout: float = 15.0) -> list[FiringAlert]:
        """Alerts named `name` seen firing in Prometheus (polls while the monitor runs)."""
        deadline = time.monotonic() + timeout
        while not (got := self.firing_named(name)) and time.monotonic() < deadline:
            time.sleep(0.25)
        return got

    def notifications(self, receiver: str) -> list[dict[str, Any]]:
        return [n.body for n in self.webhooks[receiver].notifications]

    def wait_notification(self, receiver: str, alertname: str, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Firing notifications of `alertname` delivered to `receiver`'s webhook (polls)."""
        deadline = time.monotonic() + timeout
        while True:
            got = [
                n
                for n in self.notifications(receiver)
                if n.get("status") == "firing"
                and any(a["labels"].get(c.LABEL_ALERTNAME) == alertname for a in n.get("alerts", []))
            ]
            if got or time.monotonic() > deadline:
                return got
            time.sleep(0.25)


def _prometheus_config(services: list[str], twin_urls: list[str], alertmanager: str) -> str:
    cfg = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [RULES_FILE],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [
            {"job_name": c.DEMO_JOB_SERVICE, "static_configs": [{"targets": services}]},
            {
                "job_name": c.DEMO_JOB_TWIN,
                "http_sd_configs": [{"url": u + TARGETS_PATH, "refresh_interval": "1s"} for u in twin_urls],
            },
        ],
    }
    return yaml.safe_dump(cfg, sort_keys=False)


def _cascade_shown(snap: dict[str, dict[str, Any]]) -> bool:
    """Every snapshot query on the cascade gauge has data (its `> 0` annotation included)."""
    on_cascade = [body for q, body in snap.items() if c.M_CASCADE in q]
    return bool(on_cascade) and all(
        body.get("status") == "success" and body["data"]["result"] for body in on_cascade
    )


def _monitor(e2e: E2E, stop: threading.Event) -> None:
    # one client for the whole run: `httpx.get` per poll built a Client (a fresh SSL context,
    # ~50 ms of CPU) twice a second, on the 2 cores the paced twins need
    with httpx.Client(timeout=10.0) as client:
        _poll(e2e, stop, client)


def _poll(e2e: E2E, stop: threading.Event, client: httpx.Client) -> None:
    cascade = e2e.runs["cache-cascade"]
    seen: set[tuple[tuple[str, str], ...]] = set()
    while not stop.is_set():
        try:
            r = client.get(f"{e2e.prometheus.url}/api/v1/alerts", timeout=5.0)
            alerts = r.json()["data"]["alerts"]
            cascading = any(
                a["labels"].get(c.LABEL_ALERTNAME) == c.ALERT_CACHE_CASCADE
                and a.get("state") in ("pending", "firing")
                for a in alerts
            )
            for a in alerts:
                key = tuple(sorted(a["labels"].items()))
                if a.get("state") == "firing" and key not in seen:
                    seen.add(key)
                    elapsed = {n: run.twin.now - run.twin.sim.start for n, run in e2e.runs.items()}
                    e2e.firing.append(
                        FiringAlert(a["labels"], a.get("annotations", {}), time.time(), elapsed)
                    )
            due = cascade.progress >= SNAPSHOT_AT and (cascading or cascade.progress >= SNAPSHOT_LATEST)
            if not e2e.snapshot_done.is_set() and due:
                e2e.snapshot_elapsed = cascade.twin.now - cascade.twin.sim.start
                snap: dict[str, dict[str, Any]] = {}
                for ex in e2e.exprs:
                    q = substitute(ex.expr)
                    if ex.where.startswith("annotation"):
                        # Grafana runs an annotation query over the dashboard's time range
                        # (the last hour here): a marker anywhere in the run so far counts
                        now = time.time()
                        params: dict[str, str | float] = {
                            "query": q,
                            "start": now - 3600,
                            "end": now,
                            "step": "2s",
                        }
                        url = f"{e2e.prometheus.url}/api/v1/query_range"
                    else:
                        params, url = {"query": q}, f"{e2e.prometheus.url}/api/v1/query"
                    snap[q] = client.get(url, params=params).json()
                # the alert's state is its last rule evaluation, the snapshot reads the newest
                # samples: when the cascade gauge has just dropped back, the cascade annotation
                # query is empty although the alert still shows. Take it again next poll.
                if cascade.progress < SNAPSHOT_LATEST and not _cascade_shown(snap):
                    stop.wait(0.5)
                    continue
                e2e.snapshot = snap
                e2e.snapshot_done.set()
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            if len(e2e.poll_errors) < 100:
                e2e.poll_errors.append(f"{type(exc).__name__}: {exc}")
        stop.wait(0.5)


@pytest.fixture(scope="package")
def e2e() -> Iterator[E2E]:
    """Both scenarios, run once for every e2e test (about 50 s of wall time at 12x). Package-scoped: the
    services, Prometheus, Alertmanager and the monitor thread stop after the last e2e test, not
    at the end of the session (they used to poll on, beside every later test)."""
    from simulator.scenarios import VICTIM

    hooks = {name: WebhookRecorder(HOST) for name in RECEIVERS}
    runs: dict[str, ScenarioRun] = {}
    try:
        ports = {name: free_port(HOST) for name in SCENARIOS}
        settings = load_settings(
            env={},
            overrides={"alerts": alert_overrides({n: h.url for n, h in hooks.items()}, VICTIM)},
        )
        files = render_all(settings)
        exprs = all_exprs({g.uid: dashboard_dict(g.model) for g in generate(settings)})
        with run_alertmanager(files[ALERTMANAGER_FILE]) as am:
            for name in SCENARIOS:
                metrics = MetricsEmitter()
                server = metrics.serve(HOST, 0)
                url = f"http://{HOST}:{ports[name]}"
                spans = http_emitter(traces_endpoint(url), delay_ms=100)
                holder: list[Twin] = []
                kv = TwinKvEvents(lambda h=holder: h[0].now if h else time.time(), host=HOST)  # type: ignore[misc]
                twin = build_twin(
                    name, sink=Fanout([spans, metrics, kv]), seed=SEED, start=time.time(), kv_events=True
                )
                holder.append(twin)
                signals = attach_twin_signals(settings, twin, metrics, server, kv)
                auto = attach_twin_autoscaler(
                    settings,
                    twin,
                    signals_latest=lambda s=signals: s.service.engine.latest,  # type: ignore[misc]
                    mode=AUTOSCALER_MODE[name],
                )
                app = create_app(
                    settings,
                    MemoryStore(),
                    registry=CollectorRegistry(),
                    clock=lambda t=twin: t.now,  # type: ignore[misc]
                    extra_routers=(*signals.routers, *auto.routers),
                    on_startup=(*signals.on_startup, *auto.on_startup),
                )
                runs[name] = ScenarioRun(
                    name,
                    twin,
                    ServiceThread(app, HOST, ports[name]),
                    signals,
                    metrics,
                    server,
                    spans,
                    auto,
                    kv,
                )
                runs[name].service.start()
            config = _prometheus_config(
                [f"{HOST}:{ports[n]}" for n in SCENARIOS],
                [runs[n].server.url for n in SCENARIOS],
                am.url.removeprefix("http://"),
            )
            with run_prometheus(config, {RULES_FILE: files[RULES_FILE]}) as prom:
                e2e = E2E(settings, runs, prom, am, hooks, exprs=exprs)
                stop = threading.Event()
                monitor = threading.Thread(target=_monitor, args=(e2e, stop), name="e2e-monitor", daemon=True)
                threads = [
                    threading.Thread(target=r.run, name=f"twin-{n}", daemon=True) for n, r in runs.items()
                ]
                monitor.start()
                for t in threads:
                    t.start()
                deadline = time.monotonic() + RUN_TIMEOUT
                for r in runs.values():
                    assert r.done.wait(max(0.0, deadline - time.monotonic())), f"{r.name} did not finish"
                    if r.error is not None:
                        raise r.error
                e2e.snapshot_done.wait(30.0)
                try:
                    yield e2e
                finally:
                    stop.set()
                    monitor.join(timeout=15)
    finally:
        for r in runs.values():
            r.spans.shutdown()
            r.service.stop()
            r.signals.service.stop()
            r.kv.close()
            r.server.close()
        for h in hooks.values():
            h.close()
