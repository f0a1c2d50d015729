"""The fleet-signals service: reads the configured source every interval and ticks the engine.

    discovery (static | kubernetes) ─▶ metric source (scrape | prometheus) ─┐
    KV events (optional, ZMQ thread) ─▶ KvTierIndex ────────────────────────┼─▶ SignalEngine.tick(now)
    pipeline listener (new RequestRecords after commit) ────────────────────┘

`attach(settings)` gives what `create_app` callers need:

    att = attach(settings)
    app = create_app(settings, store, extra_routers=att.routers, on_startup=att.on_startup)

The startup hook registers the `/metrics` collector on the pipeline's registry, feeds the engine
from the pipeline, adds the `signals` key to the tenant entries, and starts the background task
(cancelled by `Pipeline.stop`). `SignalService.run_once(now)` is the whole tick, for tests and
simulated clocks. Only this loop sleeps; a failing source never raises out of it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter

from observer import conventions as c
from observer.api.pools import SignalsCollector, pools_router, tenant_signals_json
from observer.config import Settings
from observer.signals.engine import FleetSignals, SignalEngine
from observer.signals.settings import SignalsSettings
from observer.sources.discovery import DiscoveryError, KubernetesDiscovery
from observer.sources.kvevents import KvEventsConsumer, KvPublisher, KvTierIndex
from observer.sources.ports import MetricSource, PodDiscovery, StaticDiscovery
from observer.sources.prometheus import PrometheusSource
from observer.sources.samples import EppTarget, FleetSnapshot, PodTarget
from observer.sources.scrape import ScrapeSource
from observer.sources.settings import SourcesSettings
from observer.sources.untrusted import ValueCleaner

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

    from observer.pipeline import Pipeline

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class CachedDiscovery:
    """The fleet as discovered at the start of the tick: `refresh()` once per tick (the last good
    list is kept when discovery fails, DiscoveryError); `pods()` is that list, for the source
    and the KV subscriptions alike."""

    def __init__(self, inner: PodDiscovery) -> None:
        self._inner = inner
        self.cleaner = getattr(inner, "cleaner", None)  # a Kubernetes discovery's, for the counts
        self.last: tuple[PodTarget, ...] = ()
        self.error: str | None = None

    def refresh(self) -> tuple[PodTarget, ...]:
        try:
            self.last = self._inner.pods()
            self.error = None
        except DiscoveryError as exc:
            self.error = str(exc)[:300]
            log.warning("pod discovery failed; keeping the previous list", extra={"error": self.error})
        return self.last

    def pods(self) -> tuple[PodTarget, ...]:
        return self.last


def kv_publishers(configured: Sequence[KvPublisher], pods: Sequence[PodTarget]) -> tuple[KvPublisher, ...]:
    """The publishers to subscribe to: the configured ones and each discovered pod's endpoint."""
    found = (KvPublisher(t.kv_events_endpoint, t.kv_replay_endpoint) for t in pods if t.kv_events_endpoint)
    return tuple(dict.fromkeys((*configured, *found)))


def build_discovery(sources: SourcesSettings) -> tuple[PodDiscovery, tuple[EppTarget, ...]]:
    if sources.discovery == "kubernetes":
        return KubernetesDiscovery(sources.kubernetes.config()), ()
    epps = tuple(e.target() for e in sources.static.epps)
    return StaticDiscovery(tuple(p.target() for p in sources.static.pods), epps), epps


def build_source(
    sources: SourcesSettings, discovery: PodDiscovery, epps: Sequence[EppTarget]
) -> MetricSource | None:
    if sources.metrics == "prometheus":
        return PrometheusSource(sources.prometheus.config(), targets=discovery.pods)
    if sources.metrics == "scrape":
        return ScrapeSource(discovery.pods, epps=epps, config=sources.scrape.config())
    return None


def _cleaners(*parts: object) -> tuple[ValueCleaner, ...]:
    """The `ValueCleaner` of each part that reads untrusted strings (sources, discovery, KV)."""
    return tuple(cl for p in parts if isinstance(cl := getattr(p, "cleaner", None), ValueCleaner))


class SignalService:
    """One tick = discover + read the source + read the KV index + engine.tick(now).

    `fleet`: the discovery, refreshed at the start of each tick; the KV consumer is then
    subscribed to exactly `kv_configured` plus the discovered pods' endpoints (`kv_publishers`),
    so it follows scale-ups, restarts and scale-downs. `cleaners`: the string cleaners of the
    source, the KV consumer and the discovery, whose counts are
    `pd_observer_source_values_rewritten_total{source}`."""

    def __init__(
        self,
        engine: SignalEngine,
        source: MetricSource | None,
        *,
        kv_index: KvTierIndex | None = None,
        kv_consumer: KvEventsConsumer | None = None,
        clock: Clock = time.time,
        fleet: CachedDiscovery | None = None,
        kv_configured: Sequence[KvPublisher] = (),
    ) -> None:
        self.engine = engine
        self.source = source
        self.kv_index = kv_index
        self.kv_consumer = kv_consumer
        self.clock = clock
        self.fleet = fleet
        self.kv_configured = tuple(kv_configured)
        self.cleaners = _cleaners(fleet, source, kv_consumer)
        self.ticks = 0
        self.last_tick_seconds: float | None = None  # wall time the last tick took

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock = time.time) -> SignalService:
        sig = SignalsSettings.model_validate(settings.signals)
        src = SourcesSettings.model_validate(settings.sources)
        discovery, epps = build_discovery(src)
        fleet = CachedDiscovery(discovery)
        source = build_source(src, fleet, epps)
        index: KvTierIndex | None = None
        consumer: KvEventsConsumer | None = None
        kv = src.kv_events
        configured = tuple(KvPublisher(p.endpoint, p.replay_endpoint) for p in kv.publishers)
        if kv.enabled:
            index = KvTierIndex(kv.max_blocks_per_pod, kv.max_pods, kv.rate_window_seconds)
            consumer = KvEventsConsumer(
                kv_publishers(configured, fleet.refresh()),
                index,
                clock=clock,
                replay_timeout_ms=kv.replay_timeout_ms,
                max_topics_per_publisher=kv.max_topics_per_publisher,
                max_message_bytes=kv.max_message_bytes,
            )
        return cls(
            SignalEngine(sig),
            source,
            kv_index=index,
            kv_consumer=consumer,
            clock=clock,
            fleet=fleet,
            kv_configured=configured,
        )

    def run_once(self, now: float | None = None) -> FleetSignals:
        """Blocking (source I/O): read everything, then tick. `now` from the caller's clock."""
        t = self.clock() if now is None else now
        started = time.perf_counter()
        if self.fleet is not None:
            pods = self.fleet.refresh()
            if self.kv_consumer is not None:
                self.kv_consumer.sync(kv_publishers(self.kv_configured, pods))
        if self.source is not None:
            try:
                snap = self.source.read(t)
            except Exception as exc:  # a source must not kill the loop; it is reported as blind
                log.exception("metric source failed")
                snap = FleetSnapshot(
                    source=self.source.name, time=t, ok=False, error=f"{type(exc).__name__}: {exc}"
                )
            self.engine.observe(snap)
        if self.kv_index is not None:
            self.engine.observe_kv(self.kv_index.snapshot(t))
        result = self.engine.tick(t)
        self.ticks += 1
        self.last_tick_seconds = time.perf_counter() - started
        return result

    def start(self) -> None:
        if self.kv_consumer is not None:
            self.kv_consumer.start()

    def stop(self) -> None:
        if self.kv_consumer is not None:
            self.kv_consumer.stop()
        close = getattr(self.source, "close", None)
        if callable(close):
            close()

    async def run(self) -> None:
        """Every interval: run_once off the event loop. Cancelled on shutdown."""
        loop = asyncio.get_running_loop()
        interval = self.engine.settings.interval_seconds
        self.start()
        try:
            while True:
                try:
                    await loop.run_in_executor(None, self.run_once)
                except Exception:
                    log.exception("signals tick failed; will retry")
                await asyncio.sleep(interval)
        finally:
            await loop.run_in_executor(None, self.stop)


@dataclass(frozen=True, slots=True)
class SignalsAttachment:
    """What `create_app` callers pass on (`routers`, `on_startup`) and the parts, for tests."""

    routers: tuple[APIRouter, ...]
    on_startup: tuple[Callable[[Pipeline], Any], ...]
    collector: Collector
    service: SignalService


def tenant_signals(engine: SignalEngine) -> Callable[[str], Mapping[str, Any]]:
    """The `signals` key of a tenant entry (cascade status + evidence)."""

    def extra(tenant: str) -> Mapping[str, Any]:
        latest = engine.latest
        ts = latest.tenant(tenant) if latest is not None else None
        return {c.API_SIGNALS: tenant_signals_json(ts, latest)}

    return extra


def attach(
    settings: Settings,
    *,
    service: SignalService | None = None,
    clock: Clock | None = None,
    background: bool = True,
) -> SignalsAttachment:
    """Wire the fleet signals into an app. `background=False`: no loop (tick with run_once)."""
    svc = service or SignalService.from_settings(settings, clock=clock or time.time)
    kv_dropped = svc.kv_consumer.dropped if svc.kv_consumer is not None else None
    collector = SignalsCollector(svc.engine, svc.cleaners, kv_dropped)
    sig = SignalsSettings.model_validate(settings.signals)

    def on_startup(pipeline: Pipeline) -> None:
        pipeline.registry.register(collector)
        pipeline.listeners.append(svc.engine.add_records)
        pipeline.tenant_extras.append(tenant_signals(svc.engine))
        if background and sig.enabled:
            pipeline.add_task(asyncio.get_running_loop().create_task(svc.run(), name="fleet-signals"))

    return SignalsAttachment(
        routers=(pools_router(svc.engine),),
        on_startup=(on_startup,),
        collector=collector,
        service=svc,
    )
