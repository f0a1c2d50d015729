"""`pd-observer demo`: the service, the twin paced at N× over real OTLP/HTTP, optionally a real
Prometheus + Alertmanager, a live view, and on exit a summary plus an HTML report.

The service runs on the twin's simulated clock (so its windows follow the story at any speed);
Prometheus scrapes in wall time. The autoscaler (on by default, `DemoOptions.autoscaler`) runs
in apply mode on the twin (`observer.wiring.autoscale`): ticked on the twin's clock from the
paced loop, its decisions at `/api/v1/decisions`, its series on the service's `/metrics`, every
change in the live view (`autoscaler: ...` events), data.json (`autoscaler.decisions`) and the
report (decision table; desired vs ready replicas chart). `DemoOptions.policy` is a further
extension point: a callable run on every tick with the twin and the simulated time.

The fleet-signals engine is attached to the service (`attach_twin_signals`): a `scrape` source
over the twin's per-pod `/metrics` (discovered from the twin's SD target groups, as Kubernetes
discovery would give them) and the EPP's. It ticks on the twin's clock every
`signals.interval_seconds` of SIMULATED time, from the paced loop (so a 20x demo judges the same
windows as a live fleet), which makes `/metrics` carry the signal gauges the generated alert
rules read and `/api/v1/pools` answer; the live view shows the observer's starvation and cascade.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import httpx
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry

from observer import conventions as c
from observer.api.app import create_app
from observer.config import Settings, load_settings
from observer.files import write_files
from observer.signals.engine import FleetSignals, SignalEngine
from observer.signals.service import SignalsAttachment, SignalService, attach
from observer.signals.settings import SignalsSettings
from observer.sources.samples import EppTarget, PodTarget
from observer.sources.scrape import ScrapeSource, ScrapeSourceConfig
from observer.store.repository import Store
from observer.wiring.autoscale import DecisionNote, TwinAutoscaler, attach_twin_autoscaler
from observer.wiring.kvfeed import TwinKvEvents
from observer.wiring.live import LiveView
from observer.wiring.procs import PromStack, ServiceThread, WebhookRecorder, pick_port
from observer.wiring.report import render_report
from observer.wiring.twin import Policy, build_twin, check_source
from simulator.clock import run_paced
from simulator.emit.fanout import Fanout, Recorder
from simulator.emit.metrics import EPP_PATH, TARGETS_PATH, MetricsEmitter, MetricsServer
from simulator.emit.otlp import OtlpSpanEmitter
from simulator.events import ArrivedRequest, FleetEvent, FleetSink, KvEvent, PodSnapshot
from simulator.scenarios import Twin

SAMPLE_WINDOW_SECONDS = 60
MAX_SAMPLES = 5000
STARVED_BUSY_MAX = 0.5
STARVED_WAITING_MIN = 2
EVENT_AUTOSCALER = "autoscaler"  # event kind of the autoscaler's decisions (live view, report)
SCRAPE_WORKERS = 2
PROM_SETTLE_SECONDS = 15.0


class DemoOutputError(Exception):
    """The run finished but its data or report could not be written (the message names the file and
    what was kept)."""


@dataclass(frozen=True)
class DemoOptions:
    scenario: str = "story"
    duration: float | None = None
    speed: float = 20.0
    seed: int = 0
    host: str = "127.0.0.1"
    port: int = 8080
    out: Path | None = None
    prometheus: bool = True
    config: Path | None = None
    interactive: bool | None = None
    policy: Policy | None = None
    tick_seconds: float = 0.1
    autoscaler: bool = True


@dataclass
class DemoResult:
    out: Path
    report: Path
    data: Path
    requests: int
    stopped_early: bool
    prometheus_scraped_service: bool | None
    summary: dict[str, Any] = field(default_factory=dict)


def http_exporter(endpoint: str, token: str | None = None) -> SpanExporter:
    """The real SDK `OTLPSpanExporter` (HTTP/protobuf) to `endpoint`, with `token` as Bearer."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    headers = {"Authorization": f"Bearer {token}"} if token else None
    return OTLPSpanExporter(endpoint=endpoint, headers=headers, timeout=10.0)


class CountingExporter(SpanExporter):
    """Wraps an exporter and counts what it delivered and what it lost. The SDK exporter has
    already retried a batch (429/5xx/connection errors, with backoff) when it reports failure,
    so the first failed export is final: `on_failure` is called once, and every later batch is
    lost without being sent (a dead endpoint does not hold the run for minutes): its spans count
    in `failed_spans` and the batch in `unsent_batches`, never in `failed_exports`, which counts
    the exports that were tried and failed. How many batches there are depends on wall time
    (the batch processor also exports on a timer), so counting unsent batches as failed exports
    made the count, and "the run stopped at the first" after it, depend on the machine's speed."""

    def __init__(self, inner: SpanExporter, on_failure: Callable[[], None] | None = None) -> None:
        self.inner = inner
        self.on_failure = on_failure
        self.exported_spans = 0
        self.failed_spans = 0
        self.failed_exports = 0
        self.unsent_batches = 0
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.failed_exports:  # the endpoint has failed for good: lost, not sent
            with self._lock:
                self.unsent_batches += 1
                self.failed_spans += len(spans)
            return SpanExportResult.FAILURE
        try:
            result = self.inner.export(spans)
        except Exception:  # an exporter bug loses the batch like a failed export does
            result = SpanExportResult.FAILURE
        with self._lock:
            first = False
            if result is SpanExportResult.SUCCESS:
                self.exported_spans += len(spans)
            else:
                first = not self.failed_exports
                self.failed_exports += 1
                self.failed_spans += len(spans)
        if first and self.on_failure is not None:
            self.on_failure()
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def http_emitter(
    endpoint: str, token: str | None = None, *, delay_ms: int = 200, exporter: SpanExporter | None = None
) -> OtlpSpanEmitter:
    """The twin's span emitter with the real SDK `OTLPSpanExporter` (HTTP/protobuf) to `endpoint`
    (or `exporter`, e.g. a `CountingExporter` around `http_exporter(endpoint, token)`)."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporter = exporter if exporter is not None else http_exporter(endpoint, token)
    processor = BatchSpanProcessor(
        exporter, max_export_batch_size=512, schedule_delay_millis=delay_ms, max_queue_size=16_384
    )
    return OtlpSpanEmitter(processor)


def traces_endpoint(url: str) -> str:
    """Accept a base URL or the full `/v1/traces` URL."""
    url = url.rstrip("/")
    return url if url.endswith(c.OTLP_TRACES_PATH) else url + c.OTLP_TRACES_PATH


class _EventTap:
    """A FleetSink forwarding fleet events to a callback (phases, scaling, weight changes)."""

    def __init__(self, on_event: Any) -> None:
        self._on_event = on_event

    def request_arrived(self, arrival: ArrivedRequest) -> None:
        return None

    def request_completed(self, request: Any) -> None:
        return None

    def pods_sampled(self, now: float, pods: tuple[PodSnapshot, ...]) -> None:
        return None

    def kv_events(self, events: tuple[KvEvent, ...]) -> None:
        return None

    def fleet_event(self, event: FleetEvent) -> None:
        self._on_event(event)


class Sampler:
    """Builds one sample per tick from the observer (tenants) and the twin (pools, load)."""

    def __init__(
        self,
        twin: Twin,
        recorder: Recorder,
        pipeline: Any,
        scenario: str,
        signals: Callable[[], FleetSignals | None] | None = None,
    ) -> None:
        self.twin = twin
        self.signals = signals
        self.recorder = recorder
        self.pipeline = pipeline
        self.scenario = scenario
        self.samples: list[dict[str, Any]] = []
        self._last_t = twin.now
        self._last_requests = 0
        self._last_busy: dict[str, float] = {}
        self._rps = 0.0

    def sample(self) -> dict[str, Any]:
        twin = self.twin
        now = twin.now
        dt_sim = now - self._last_t
        if dt_sim > 1e-6:
            self._rps = (self.recorder.total_requests - self._last_requests) / dt_sim
            self._last_t, self._last_requests = now, self.recorder.total_requests
        dt_sim = max(dt_sim, 1e-6)
        rps = self._rps
        with self.pipeline.lock:
            stats = self.pipeline.aggregator.tenants(SAMPLE_WINDOW_SECONDS, now)
        tenants = [
            {
                "tenant": s.tenant,
                "requests": s.requests,
                "hit_rate": s.prefix_hit_rate,
                "tier_shares": dict(s.tier_shares) if s.tier_shares else {},
                "ttft_p90": s.quantiles[c.SLI_TTFT].p90 if c.SLI_TTFT in s.quantiles else None,
            }
            for s in stats
        ]
        state = twin.actuator.get_state()
        pods = self.recorder.latest_pods
        busy: dict[str, list[float]] = {}
        kv: dict[str, list[float]] = {}
        waiting: dict[str, int] = {}
        for p in pods:
            prev = self._last_busy.get(p.pod)
            self._last_busy[p.pod] = p.busy_seconds
            if p.ready and prev is not None:
                busy.setdefault(p.role, []).append(min(1.0, (p.busy_seconds - prev) / dt_sim))
            if p.ready:
                kv.setdefault(p.role, []).append(p.kv_usage)
            waiting[p.role] = waiting.get(p.role, 0) + p.waiting
        pools: list[dict[str, Any]] = []
        for pool in state.pools.values():
            for role, reps in sorted(pool.replicas.items()):
                b = busy.get(role)
                k = kv.get(role)
                pools.append(
                    {
                        "pool": pool.pool,
                        "role": role,
                        "desired": reps.desired,
                        "ready": reps.ready,
                        "starting": reps.starting,
                        "draining": reps.draining,
                        "waiting": waiting.get(role, 0),
                        "kv_usage": sum(k) / len(k) if k else None,
                        "busy": sum(b) / len(b) if b else None,
                    }
                )
        latest = self.signals() if self.signals is not None else None
        if latest is not None:
            # The observer's own signals (the fleet-signals engine), as the alerts see them.
            starving = {p.pool for p in latest.pools if p.starvation.firing}
            for row in pools:
                row["starved"] = row["role"] == c.ROLE_DECODE and row["pool"] in starving
            for t in tenants:
                ts = latest.tenant(str(t["tenant"]))
                t["cascade"] = bool(ts is not None and ts.cascade.firing)
                t["evictors"] = [e.tenant for e in ts.cascade.evictors] if ts is not None else []
        else:
            # Decode starvation as the twin sees it: prefill has a queue while decode pods idle.
            pre_wait = sum(int(row["waiting"]) for row in pools if row["role"] == c.ROLE_PREFILL)
            for row in pools:
                row["starved"] = bool(
                    row["role"] == c.ROLE_DECODE
                    and row["busy"] is not None
                    and row["busy"] <= STARVED_BUSY_MAX
                    and pre_wait >= STARVED_WAITING_MIN
                )
        sample = {
            "scenario": self.scenario,
            "sim_time": now,
            "elapsed": now - twin.sim.start,
            "phase": twin.phase_at(now),
            "rps": rps,
            "tenants": tenants,
            "pools": pools,
        }
        self.samples.append(sample)
        del self.samples[:-MAX_SAMPLES]
        return sample


def twin_pod_targets(metrics: MetricsEmitter, server: MetricsServer) -> Callable[[], tuple[PodTarget, ...]]:
    """Discovery of the twin's vLLM pods from its SD target groups (role and pool from labels)."""

    def pods() -> tuple[PodTarget, ...]:
        out = []
        for g in metrics.target_groups(server.address):
            labels = g["labels"]
            role = labels.get(c.LABEL_ROLE)
            if role is None:  # the EPP
                continue
            out.append(
                PodTarget(
                    pod=labels[c.LABEL_POD],
                    role=role,
                    pool=labels[c.LABEL_POOL],
                    namespace=labels[c.PROM_LABEL_NAMESPACE],
                    metrics_url=server.url + labels[c.PROM_LABEL_METRICS_PATH],
                )
            )
        return tuple(out)

    return pods


def attach_twin_signals(
    settings: Settings,
    twin: Twin,
    metrics: MetricsEmitter,
    server: MetricsServer,
    kv: TwinKvEvents | None = None,
) -> SignalsAttachment:
    """The fleet-signals engine on the twin's clock, scraping the twin's pods and EPP, and with
    `kv` (the twin built with `kv_events=True`, `kv` in its fanout) its KV events over ZMQ: the
    per-pod eviction and demotion rates. The consumer is started here; `service.stop()` stops it.

    No background loop: the caller ticks `attachment.service.run_once(twin.now)` every
    `signals.interval_seconds` of simulated time (see `SignalTicker`).
    """
    sig = SignalsSettings.model_validate(settings.signals)
    epps = tuple(EppTarget(pool, server.url + EPP_PATH) for pool in sorted(twin.actuator.get_state().pools))
    source = ScrapeSource(
        twin_pod_targets(metrics, server), epps=epps, config=ScrapeSourceConfig(max_workers=SCRAPE_WORKERS)
    )
    service = SignalService(
        SignalEngine(sig),
        source,
        kv_index=kv.index if kv is not None else None,
        kv_consumer=kv.consumer if kv is not None else None,
        clock=lambda: twin.now,
    )
    if kv is not None:
        kv.start()
    return attach(settings, service=service, background=False)


class SignalTicker:
    """Runs one signals tick every `interval` simulated seconds (call it from the paced loop)."""

    def __init__(self, service: SignalService, interval: float) -> None:
        self.service = service
        self.interval = interval
        self._next: float | None = None

    def __call__(self, now: float) -> None:
        if self._next is not None and now < self._next:
            return
        self._next = now + self.interval
        self.service.run_once(now)


def _ttft_slo(settings: Settings) -> float | None:
    for s in settings.slos:
        if s.sli == c.SLI_TTFT and not s.tenants:
            return s.threshold_seconds
    return None


@contextlib.contextmanager
def _graceful(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set `stop` (main thread only); previous handlers restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def default_out(now: float | None = None) -> Path:
    stamp = dt.datetime.fromtimestamp(now or time.time()).strftime("%Y%m%d-%H%M%S")
    return Path(f"pd-observer-demo-{stamp}")


DEMO_RECEIVER = "demo"


def demo_settings(config: Path | None, *, host: str, port: int, db: Path, webhook: str) -> Settings:
    """The demo service's settings: `--config` (and PD_OBSERVER_*) with the demo's address and
    SQLite file, and every alert routed to the demo's webhook: the `alerts` section's receivers
    and teams are replaced, not merged (`load_settings` merges an override into the file's
    mapping), so a config naming real pagers never notifies them from the demo."""
    base = load_settings(
        config, overrides={"server": {"host": host, "port": port}, "store": {"url": f"sqlite:///{db}"}}
    )
    alerts = {
        **base.alerts,
        "receivers": {DEMO_RECEIVER: {"webhook_url": webhook}},
        "default_receiver": DEMO_RECEIVER,
        "page_receiver": DEMO_RECEIVER,
        "ticket_receiver": DEMO_RECEIVER,
        "teams": {},
    }
    return base.model_copy(update={"alerts": alerts})


def run_demo(opts: DemoOptions, stream: TextIO | None = None) -> DemoResult:
    """Run the demo end to end; returns where the report went. See the module docstring."""
    import sys

    out_stream = stream or sys.stdout

    def say(text: str) -> None:
        print(text, file=out_stream, flush=True)

    check_source(opts.scenario, duration=opts.duration)  # a bad one fails before anything is started
    out = (opts.out or default_out()).resolve()
    out.mkdir(parents=True, exist_ok=True)
    port = pick_port(opts.host, opts.port)
    webhook = WebhookRecorder(opts.host)
    settings = demo_settings(
        opts.config, host=opts.host, port=port, db=out / "pd-observer.db", webhook=webhook.url
    )
    slo = _ttft_slo(settings)

    recorder = Recorder(bucket_seconds=10.0, max_requests=1000)
    metrics = MetricsEmitter()
    service_url = f"http://{opts.host}:{port}"
    emitter = http_emitter(traces_endpoint(service_url), settings.server.auth_token)
    events: list[dict[str, Any]] = []
    view = LiveView(slo=slo, interactive=opts.interactive, stream=out_stream)
    holder: list[Twin] = []

    def on_event(e: FleetEvent) -> None:
        start = holder[0].sim.start if holder else e.time
        detail = " ".join(f"{k}={v}" for k, v in e.detail.items() if k != "scenario")
        text = str(e.detail.get("phase", "")) if e.kind == "phase" else f"{e.kind} {detail}".strip()
        if len(events) < 10_000:
            events.append({"elapsed": e.time - start, "kind": e.kind, "text": text})
        view.event(f"t=+{e.time - start:.0f}s {e.kind}: {text}")

    kv = TwinKvEvents(lambda: holder[0].now if holder else time.time(), host=opts.host)
    sinks: list[FleetSink] = [emitter, metrics, recorder, kv, _EventTap(on_event)]
    twin = build_twin(
        opts.scenario,
        sink=Fanout(sinks),
        seed=opts.seed,
        duration=opts.duration,
        start=time.time(),
        kv_events=True,
    )
    holder.append(twin)
    store = Store.open(settings.store.url)
    metrics_server = metrics.serve(opts.host, 0)
    signals = attach_twin_signals(settings, twin, metrics, metrics_server, kv)
    ticker = SignalTicker(signals.service, signals.service.engine.settings.interval_seconds)
    decisions: list[DecisionNote] = []

    def on_decision(note: DecisionNote) -> None:
        if len(decisions) < 10_000:
            decisions.append(note)
        elapsed = note.at - twin.sim.start
        if len(events) < 10_000:
            events.append({"elapsed": elapsed, "kind": EVENT_AUTOSCALER, "text": note.text})
        view.event(f"t=+{elapsed:.0f}s {EVENT_AUTOSCALER}: {note.pool} {note.text}")

    auto: TwinAutoscaler | None = None
    if opts.autoscaler:
        auto = attach_twin_autoscaler(
            settings, twin, signals_latest=lambda: signals.service.engine.latest, on_decision=on_decision
        )
    app = create_app(
        settings,
        store,
        registry=CollectorRegistry(),
        clock=lambda: twin.now,
        extra_routers=(*signals.routers, *(auto.routers if auto else ())),
        on_startup=(*signals.on_startup, *(auto.on_startup if auto else ())),
    )
    pipeline = app.state.pipeline
    service = ServiceThread(app, opts.host, port)
    stack = PromStack(out, opts.host)
    prom_info: dict[str, Any] = {}
    alerts_seen: list[dict[str, Any]] = []
    stop = threading.Event()
    stopped_early = False
    try:
        service.start()
        pace = f"at {opts.speed:g}x" if opts.speed > 0 else "as fast as possible"
        say(f"pd-observer demo: scenario {twin.name}, {twin.duration:.0f} simulated s {pace}")
        say(f"  service        {service_url}  (API {service_url}/api/v1/tenants, docs {service_url}/docs)")
        say(f"  twin metrics   {metrics_server.url}{TARGETS_PATH}")
        say(f"  output         {out}")
        if auto is not None:
            say(
                f"  autoscaler     {auto.settings.mode} on the twin every {auto.settings.interval_seconds:g}"
                f" simulated s (decisions {service_url}/api/v1/decisions)"
            )
        else:
            say("  autoscaler     off")
        if opts.prometheus:
            prom_bin, am_bin = PromStack.available()
            if prom_bin is None:
                say("  prometheus     not on PATH: skipped (install Debian's prometheus)")
                prom_info["started"] = False
            else:
                from alerts.export import ALERTMANAGER_FILE, RULES_FILE, export

                export(out / "alerts", settings)
                am = None
                if am_bin is not None:
                    am = stack.start_alertmanager(am_bin, out / "alerts" / ALERTMANAGER_FILE)
                cfg = _prom_config(service_url, metrics_server.url, out / "alerts" / RULES_FILE, am, settings)
                stack.start_prometheus(prom_bin, cfg)
                prom_info.update(started=True, url=stack.prometheus_url, alertmanager=stack.alertmanager_url)
                say(f"  prometheus     {stack.prometheus_url}")
                if stack.alertmanager_url:
                    say(f"  alertmanager   {stack.alertmanager_url}  (webhook {webhook.url})")
        sampler = Sampler(twin, recorder, pipeline, twin.name, signals=lambda: signals.service.engine.latest)
        sample_every = max(1.0, twin.duration / 150.0)  # simulated seconds between report samples
        last = {"wall": 0.0, "sim": -math.inf, "prom": 0.0}

        def tick(now: float) -> None:
            ticker(now)
            if auto is not None:
                auto(twin, now)
            if opts.policy is not None:
                opts.policy(twin, now)
            wall = time.monotonic()
            if now - last["sim"] >= sample_every or wall - last["wall"] >= 1.0:
                last["sim"], last["wall"] = now, wall
                view.update(sampler.sample())
            if stack.prometheus_url and wall - last["prom"] >= 2.0:
                last["prom"] = wall
                _poll_prometheus(stack, prom_info, alerts_seen, twin)

        with view, _graceful(stop):
            if opts.speed > 0:
                res = run_paced(
                    twin, opts.speed, twin.end, on_tick=tick, stop_event=stop, tick_seconds=opts.tick_seconds
                )
                stopped_early = res.stopped
            else:
                t = twin.now
                while t < twin.end and not stop.is_set():
                    t = min(twin.end, t + 10.0)
                    twin.run_until(t)
                    tick(t)
                stopped_early = stop.is_set()
            emitter.flush()
            time.sleep(0.3)
            view.update(sampler.sample(), force=True)
        emitter.shutdown()
        if stack.prometheus_url:
            _settle_prometheus(stack, prom_info, alerts_seen, twin, say)
        final = _final_tenants(service_url, settings, twin)
    finally:
        stack.stop()
        metrics_server.close()
        service.stop()
        signals.service.stop()
        kv.close()
        webhook.close()

    start = twin.sim.start
    notes = [
        {
            "elapsed": None,
            "status": n.body.get("status"),
            "alerts": ", ".join(
                sorted({a.get("labels", {}).get("alertname", "?") for a in n.body.get("alerts", [])})
            ),
        }
        for n in webhook.notifications
    ]
    summary = {"tenants": final, "requests": recorder.total_requests}
    data = {
        "scenario": twin.name,
        "seed": opts.seed,
        "duration": twin.duration,
        "speed": opts.speed,
        "stopped_early": stopped_early,
        "sim_start": start,
        "slo_ttft_seconds": slo,
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "samples": sampler.samples,
        "events": events,
        "alerts": alerts_seen,
        "alert_notifications": notes,
        "prometheus": prom_info,
        "summary": summary,
        "autoscaler": {
            "enabled": auto is not None,
            "mode": auto.settings.mode if auto is not None else None,
            "decisions": [n.as_json(start) for n in decisions],
        },
    }
    data_path = out / "data.json"
    report = out / "report.html"
    # one at a time: a disk that fills on the report still leaves the run's data behind
    written: list[str] = []
    try:
        write_files({data_path: json.dumps(data, indent=1, sort_keys=True, default=str)})
        written.append(str(data_path))
        write_files({report: render_report(data)})
    except OSError as exc:
        kept = ", ".join([*written, str(out / "pd-observer.db")])
        raise DemoOutputError(
            f"cannot write {exc.filename}: {exc.strerror or exc} (the run finished; kept: {kept})"
        ) from exc
    _print_summary(
        say,
        rows=final,
        requests=recorder.total_requests,
        prom=prom_info,
        report=report,
        data=data_path,
        stopped=stopped_early,
        decisions=len(decisions) if auto is not None else None,
    )
    return DemoResult(
        out=out,
        report=report,
        data=data_path,
        requests=recorder.total_requests,
        stopped_early=stopped_early,
        prometheus_scraped_service=prom_info.get("scraped_service") if prom_info.get("started") else None,
        summary=summary,
    )


def _prom_config(
    service_url: str, twin_url: str, rules: Path, am: str | None, settings: Settings
) -> dict[str, Any]:
    from observer.wiring.procs import prometheus_config

    return prometheus_config(
        service=service_url.removeprefix("http://"),
        twin_targets_url=twin_url + TARGETS_PATH,
        rules_file=rules,
        alertmanager=am,
        token=settings.server.auth_token,
    )


def _poll_prometheus(
    stack: PromStack, info: dict[str, Any], alerts: list[dict[str, Any]], twin: Twin
) -> None:
    """Ask Prometheus whether it scrapes the service and the twin; record alert states."""
    try:
        up = stack.query(f'up{{job="{c.DEMO_JOB_SERVICE}"}}')
        if any(r["value"][1] == "1" for r in up):
            info["scraped_service"] = True
        reqs = stack.query(f"sum({c.M_REQUESTS}_total)")
        if reqs:
            info["service_requests_total"] = float(reqs[0]["value"][1])
        twin_up = stack.query(f'sum(up{{job="{c.DEMO_JOB_TWIN}"}})')
        if twin_up:
            info["twin_targets_up"] = int(float(twin_up[0]["value"][1]))
        vllm = stack.query(f"count({c.VLLM_PROMPT_TOKENS}_total)")
        if vllm:
            info["vllm_series"] = int(float(vllm[0]["value"][1]))
        elapsed = twin.now - twin.sim.start
        for a in stack.alerts():
            if len(alerts) < 5000:
                alerts.append(
                    {"elapsed": elapsed, "name": a["labels"].get("alertname", "?"), "state": a.get("state")}
                )
        info.setdefault("scraped_service", False)
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        info["last_error"] = str(exc)


def _settle_prometheus(
    stack: PromStack, info: dict[str, Any], alerts: list[dict[str, Any]], twin: Twin, say: Any
) -> None:
    """After the run: give Prometheus up to PROM_SETTLE_SECONDS to scrape the final state."""
    deadline = time.monotonic() + PROM_SETTLE_SECONDS
    while True:
        _poll_prometheus(stack, info, alerts, twin)
        done = info.get("scraped_service") and info.get("service_requests_total") and info.get("vllm_series")
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if not done:
        say("  (Prometheus had not scraped everything yet; see data.json `prometheus`)")


def _final_tenants(service_url: str, settings: Settings, twin: Twin) -> list[dict[str, Any]]:
    """The whole run per tenant, through the real API."""
    window = max(settings.aggregation.windows_seconds)
    headers = {"Authorization": f"Bearer {settings.server.auth_token}"} if settings.server.auth_token else {}
    r = httpx.get(f"{service_url}/api/v1/tenants", params={"window": window}, headers=headers, timeout=10.0)
    r.raise_for_status()
    slo_name = next((s.name for s in settings.slos if s.sli == c.SLI_TTFT), None)
    rows = []
    for e in r.json()["tenants"]:
        shares = e.get(c.API_TIER_SHARES) or {}
        slo = e[c.API_SLO].get(slo_name, {}) if slo_name else {}
        rows.append(
            {
                "tenant": e[c.API_TENANT],
                "requests": e[c.API_REQUESTS],
                "hit_rate": e[c.API_PREFIX_HIT_RATE],
                "hbm_share": shares.get(c.TIER_HBM),
                "dram_share": shares.get(c.TIER_DRAM),
                "disk_share": shares.get(c.TIER_DISK),
                "ttft_p50": e[c.API_TTFT][c.API_P50],
                "ttft_p90": e[c.API_TTFT][c.API_P90],
                "ttft_p99": e[c.API_TTFT][c.API_P99],
                "slo_attainment": slo.get(c.API_ATTAINMENT),
            }
        )
    return rows


def _print_summary(
    say: Any,
    *,
    rows: list[dict[str, Any]],
    requests: int,
    prom: Mapping[str, Any],
    report: Path,
    data: Path,
    stopped: bool,
    decisions: int | None = None,
) -> None:
    say(f"summary: {requests} requests completed by the twin{' (stopped early)' if stopped else ''}")
    say(f"  {'tenant':<14}{'requests':>9}{'hit rate':>10}{'TTFT p90 s':>12}{'SLO att.':>10}")
    for r in rows:
        hit = "—" if r["hit_rate"] is None else f"{r['hit_rate']:.2f}"
        p90 = "—" if r["ttft_p90"] is None else f"{r['ttft_p90']:.3f}"
        att = "—" if r["slo_attainment"] is None else f"{r['slo_attainment']:.3f}"
        say(f"  {r['tenant']:<14}{r['requests']:>9}{hit:>10}{p90:>12}{att:>10}")
    if prom.get("started"):
        say(
            f"  prometheus scraped the service: {'yes' if prom.get('scraped_service') else 'NO'}"
            f" (pd_observer requests in Prometheus: {prom.get('service_requests_total', 0):.0f},"
            f" twin targets up: {prom.get('twin_targets_up', 0)})"
        )
    if decisions is not None:
        say(f"  autoscaler decisions that changed the fleet: {decisions}")
    say(f"report: {report}")
    say(f"data:   {data}")
