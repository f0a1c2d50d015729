"""Run a twin scenario into the real observer service, on the twin's simulated clock.

    twin ──OTLP/protobuf bytes──▶ POST /v1/traces (the app, in process) ──▶ pipeline ──▶ engine
    twin ──/metrics/<pod> over real loopback HTTP──▶ ScrapeSource ──────────────────────▶ engine

Every `scrape_interval` simulated seconds the harness flushes the spans, runs one signals tick
(`SignalService.run_once(now)`, `now` = the twin's clock) and keeps the snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from fastapi.testclient import TestClient

from observer import conventions as c
from observer.api.app import create_app
from observer.config import Settings
from observer.signals.engine import FleetSignals, SignalEngine
from observer.signals.service import SignalsAttachment, SignalService, attach
from observer.signals.settings import SignalsSettings
from observer.sources.ports import MetricSource
from observer.sources.samples import EppTarget
from observer.sources.scrape import ScrapeSource, ScrapeSourceConfig
from observer.store.memory import MemoryStore
from observer.wiring.demo import twin_pod_targets
from simulator.emit.fanout import Fanout
from simulator.emit.metrics import MetricsEmitter, MetricsServer
from simulator.emit.otlp import OtlpSpanEmitter
from simulator.scenarios import Twin, build_scenario

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z: simulated epoch
POOL = "llama-8b"  # the twin's pool (simulator/profiles/default.yaml)


# Discovery of the twin's pods: the same function the demo uses.
targets_of = twin_pod_targets


@dataclass
class TwinRun:
    twin: Twin
    client: TestClient
    attachment: SignalsAttachment
    metrics: MetricsEmitter
    server: MetricsServer
    spans: OtlpSpanEmitter
    history: list[FleetSignals] = field(default_factory=list)

    @property
    def service(self) -> SignalService:
        return self.attachment.service

    @property
    def engine(self) -> SignalEngine:
        return self.attachment.service.engine

    def step(self, until: float, interval: float = 15.0) -> None:
        """Advance the twin to `until`, ticking the signals every `interval` simulated seconds."""
        t = self.twin.now
        while t < until - 1e-9:
            t = min(until, t + interval)
            self.twin.run_until(t)
            self.spans.flush()
            self.history.append(self.service.run_once(t))

    def first_firing(self, pred: Callable[[FleetSignals], bool], after: float) -> float | None:
        return next((fs.time for fs in self.history if fs.time >= after and pred(fs)), None)


def _post(client: TestClient) -> Callable[[bytes], None]:
    def sink(body: bytes) -> None:
        r = client.post(c.OTLP_TRACES_PATH, content=body, headers={"content-type": c.CT_PROTOBUF})
        assert r.status_code == 200, r.text

    return sink


@contextmanager
def twin_run(
    scenario: str,
    *,
    duration: float | None = None,
    seed: int = 1,
    signals: SignalsSettings | None = None,
    source: Callable[[MetricsEmitter, MetricsServer], MetricSource] | None = None,
    vllm_generation: str = c.VLLM_GENERATION_V1,
) -> Iterator[TwinRun]:
    """The twin feeding a live observer app; yields before the first simulated second."""
    settings = Settings()
    box: dict[str, Twin] = {}
    metrics = MetricsEmitter(vllm_generation=vllm_generation)
    with metrics.serve() as server:
        if source is None:
            src: MetricSource = ScrapeSource(
                targets_of(metrics, server),
                epps=(EppTarget(POOL, server.url + "/metrics/epp"),),
                config=ScrapeSourceConfig(max_workers=2),
            )
        else:
            src = source(metrics, server)
        service = SignalService(SignalEngine(signals or SignalsSettings()), src, clock=lambda: box["t"].now)
        att = attach(settings, service=service, background=False)
        app = create_app(
            settings,
            MemoryStore(),
            clock=lambda: box["t"].now if "t" in box else T0,
            extra_routers=att.routers,
            on_startup=att.on_startup,
        )
        with TestClient(app) as client:
            spans = OtlpSpanEmitter.to_bytes(_post(client), batch_size=512)
            twin = build_scenario(
                scenario, sink=Fanout([spans, metrics]), seed=seed, duration=duration, start=T0
            )
            box["t"] = twin
            try:
                yield TwinRun(twin, client, att, metrics, server, spans)
            finally:
                spans.shutdown()
                service.stop()
