"""Running the control loop for real: `pd-observer autoscale` and inside `pd-observer serve`.

Standalone (`run_autoscale`): observations come from the observer's store (the records the
service committed, read every tick: `StoreRecordFeed`), the decisions go to the same database
(`SqlAuditLog`), actuation through the Kubernetes API (`autoscaler.kubernetes.build_controller`)
with the Lease; `LeadershipLost` ends the process non-zero.

Inside `serve` (`attach`, when `autoscaler.enabled`): the pipeline feeds a `RecordWindow`
directly (a `Pipeline.listeners` entry); signals come from the fleet-signals engine when one is
given (`signals_latest=lambda: engine.latest`), else from the records; the decisions API and the
metrics collector are mounted on the service. A lost lease stops the control loop (logged at
error level; the observer keeps serving).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from sqlalchemy.engine import Engine

from autoscaler.api import decisions_router
from autoscaler.arrival import (
    ArrivalFeed,
    CounterReader,
    PodsReading,
    PrometheusCounters,
    ScrapeCounters,
    pods_of_signals,
    pods_of_snapshot,
)
from autoscaler.audit import FanoutAudit, MemoryAuditLog, SqlAuditLog, entry_json
from autoscaler.loop import Controller, LeadershipLost, TickReport
from autoscaler.metrics import AutoscalerCollector
from autoscaler.observe import (
    EngineSignals,
    FleetSignalsLike,
    KvPeak,
    ObserverSource,
    PoolOf,
    RecordSignals,
    RecordWindow,
    SignalsProvider,
    pool_by_pod_prefix,
)
from autoscaler.ports import ActuationError, AuditEntry, AuditSink, ScaleTarget
from autoscaler.settings import AutoscalerSettings
from autoscaler.types import PolicyState, PoolState, Recommendation
from observer import conventions as c
from observer.config import Settings
from observer.model import RequestRecord

if TYPE_CHECKING:
    from observer.pipeline import Pipeline
    from observer.store import RecordStore

log = logging.getLogger(__name__)


def _signals_for(
    settings: AutoscalerSettings, window_seconds: float, feed: ArrivalFeed | None = None
) -> SignalsProvider:
    """Record-based signals sized from the first pool (decode capacity, TTFT target), with the
    decode pods' KV usage from the arrival feed's pod reading when there is one."""
    p = settings.pools[0] if settings.pools else None
    return RecordSignals(
        decode_tokens_per_s_per_replica=p.decode.capacity_tokens_per_s if p else 3000.0,
        ttft_min_seconds=p.ttft_target_seconds if p else 2.0,
        window_seconds=window_seconds,
        decode_gauges=feed.decode_gauges if feed is not None else None,
        kv_peak=_kv_peak(settings),
    )


def _kv_peak(settings: AutoscalerSettings) -> KvPeak:
    """The KV headroom floor's peak over the (longest) scale-down window of the pools."""
    return KvPeak(max((p.scale_down_window_seconds for p in settings.pools), default=300.0))


def _pool_of(settings: AutoscalerSettings) -> PoolOf:
    """Records to pools by pod-name prefix; with a single pool, every record is its."""
    names = [p.name for p in settings.pools]
    return pool_by_pod_prefix(names, names[0] if len(names) == 1 else None)


def arrival_feed(
    settings: Settings,
    asettings: AutoscalerSettings,
    *,
    signals_latest: Callable[[], FleetSignalsLike | None] | None = None,
) -> ArrivalFeed | None:
    """The arrival side (`ObserverSource(queue=...)`) from the sources the signals engine reads
    (`sources:` settings): prefill `num_requests_waiting` from the engine's latest snapshot
    when `signals_latest` is given (inside `serve`), else from one read of the metric source
    per tick (standalone `autoscale`); the EPP request counter from the configured EPPs
    (`sources.static.epps`, scrape) or Prometheus. Readings older than the signals'
    `stale_after_seconds` are unknown. With `signals_latest` the pods come from the engine even
    when no metric source is configured (the engine may be fed directly, as the demo feeds it
    the twin's pods); the counter is then unknown. None when neither is there."""
    from observer.signals.service import build_discovery, build_source
    from observer.signals.settings import SignalsSettings
    from observer.sources.prometheus import PrometheusSource
    from observer.sources.settings import SourcesSettings

    src = SourcesSettings.model_validate(settings.sources)
    if src.metrics == "none" and signals_latest is None:
        return None
    stale_after = SignalsSettings.model_validate(settings.signals).stale_after_seconds
    pools = [p.name for p in asettings.pools]
    counters: CounterReader | None = None
    if src.metrics == "prometheus":
        prom = PrometheusSource(src.prometheus.config())
        ns = (src.prometheus.namespace_label, src.prometheus.namespace) if src.prometheus.namespace else None
        counters = PrometheusCounters(prom.query, pools, namespace=ns)
    elif src.discovery == "static" and src.static.epps:
        counters = ScrapeCounters(
            [e.target() for e in src.static.epps], timeout_seconds=src.scrape.timeout_seconds
        )
    pods: Callable[[float], PodsReading | None]
    if signals_latest is not None:
        latest = signals_latest

        def pods(now: float) -> PodsReading | None:
            fs = latest()
            return None if fs is None else pods_of_signals(fs)

    else:
        discovery, epps = build_discovery(src)
        source = build_source(src, discovery, epps)

        def pods(now: float) -> PodsReading | None:
            return None if source is None else pods_of_snapshot(source.read(now))

    return ArrivalFeed(pods, counters, stale_after_seconds=stale_after)


def ctl_scale(ctl: Controller) -> ScaleTarget:
    """The controller's ScaleTarget (kept private by `Controller`)."""
    scale: ScaleTarget = ctl._scale
    return scale


def warm_start(ctl: Controller, scale: ScaleTarget, now: float, *, hold_seconds: float | None = None) -> None:
    """Seed the policy with a recommendation at the current replica counts, so a (re)started
    controller never scales down before it has seen its demand: the seed stays in the
    scale-down stabilization window for `hold_seconds` (the observation window: `serve` and
    `autoscale` pass the record window's length), then ages out, and the window holds only
    recommendations computed from data (HPA semantics). `None` keeps the seed for the whole
    `scale_down_window_seconds` (the previous behaviour: the fleet's size at start is treated
    as if the last window had recommended it). Roles whose target cannot be read are left
    unseeded."""
    pools = dict(ctl.state.pools)
    for pool, pcfg in ctl.config.pools.items():
        at = now
        if hold_seconds is not None and hold_seconds < pcfg.scale_down_window_seconds:
            at = now - pcfg.scale_down_window_seconds + max(0.0, hold_seconds)
        recs = []
        for role in c.ROLES:
            try:
                recs.append(Recommendation(at, role, scale.status(pool, role).replicas, seeded=True))
            except ActuationError:
                continue
        st = pools.get(pool, PoolState())
        pools[pool] = replace(st, recommendations=(*st.recommendations, *recs))
    ctl.state = PolicyState(pools)


class StoreRecordFeed:
    """Feeds a `RecordWindow` from the store: records that ended since the last read."""

    def __init__(self, store: RecordStore, window: RecordWindow) -> None:
        self.store = store
        self.window = window
        self._seen: set[str] = set()
        self._last: float | None = None

    def poll(self, now: float) -> int:
        since = now - self.window.window_seconds if self._last is None else self._last - 5.0
        fetched = list(self.store.records_since(since))
        new: list[RequestRecord] = [r for r in fetched if r.request_id not in self._seen]
        self._seen = {r.request_id for r in fetched}  # the overlap of the next read, bounded
        self.window.start(now - self.window.window_seconds)
        self.window.add_records(new, now)
        self._last = now
        return len(new)


@dataclass
class PollingSource:
    """`ObservationSource` that polls the store feed once per tick before observing."""

    feed: StoreRecordFeed
    inner: ObserverSource
    _polled_at: float | None = field(default=None)

    def observe(self, pool: str, now: float) -> Any:
        if self._polled_at != now:
            self.feed.poll(now)
            self._polled_at = now
        return self.inner.observe(pool, now)


def run_autoscale(
    settings: Settings,
    *,
    once: bool = False,
    mode: str | None = None,
    host: str | None = None,
    kubeconfig: str | None = None,
    identity: str | None = None,
    out: Callable[[str], None] = print,
    max_ticks: int | None = None,
) -> int:
    """The `pd-observer autoscale` command. Returns the exit code (1: leadership lost, or with
    `once`, the lease could not be read or written)."""
    from autoscaler.kubernetes import build_controller
    from autoscaler.settings import from_settings
    from observer.store.repository import Store

    asettings = from_settings(settings)
    store = Store.open(settings.store.url)
    store.upgrade()
    audit_log = SqlAuditLog(store.engine)
    window = RecordWindow(_pool_of(asettings), window_seconds=60.0)
    # The store cannot tell zero traffic from a stopped observer: the demand's age is the age of
    # the newest record, so the policy holds (never scales down) once the records go stale.
    feed = arrival_feed(settings, asettings)
    inner = ObserverSource(
        window,
        _signals_for(asettings, 60.0, feed),
        data_age=lambda now: math.inf if window.newest_end is None else max(0.0, now - window.newest_end),
        queue=feed,
    )
    source = PollingSource(StoreRecordFeed(store, window), inner)

    printed: list[AuditEntry] = []

    class _Print:
        def record(self, entry: AuditEntry) -> None:
            printed.append(entry)
            out(json.dumps(entry_json(entry), sort_keys=True))

    ctl, api = build_controller(
        asettings,
        source=source,
        audit=FanoutAudit(audit_log, _Print()),
        mode=mode,
        host=host,
        kubeconfig=kubeconfig,
        identity=identity,
    )
    previous = _stop_on_sigterm()
    try:
        # --once is the first tick of a freshly started loop: the same warm-start hold
        warm_start(ctl, ctl_scale(ctl), time.time(), hold_seconds=asettings.warm_start_hold_seconds)
        if once:
            rep = ctl.tick()
            ctl.release()  # a one-shot run does not keep the loop's lease
            if rep.lease_error is not None:  # not a standby: this instance cannot reach the lease
                out(json.dumps({"leader": False, "detail": rep.lease_error}))
                return 1
            if not rep.leader:
                out(json.dumps({"leader": False, "detail": "another instance holds the lease"}))
            return 0
        ctl.run(max_ticks=max_ticks)  # releases the lease on the way out, SIGTERM included
        return 0
    except LeadershipLost as exc:
        log.error("leadership lost: %s", exc)
        out(json.dumps({"leader": False, "detail": f"leadership lost: {exc}"}))
        return 1
    except Terminated:
        log.info("stopped by SIGTERM; the lease is released")
        return 0
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        api.close()
        store.close()


class Terminated(BaseException):
    """SIGTERM (how Kubernetes stops a pod): unwinds the loop like Ctrl-C, so the lease is
    released and a standby takes over at once."""


def _stop_on_sigterm() -> Any:
    """Turn SIGTERM into `Terminated` while the loop runs; returns the previous handler (None
    off the main thread, where signals cannot be handled)."""

    def handler(signum: int, frame: Any) -> None:
        raise Terminated()

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, handler)


# ---------------------------------------------------------------------------------------------
# Inside `serve`
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AutoscalerAttachment:
    routers: tuple[APIRouter, ...]
    on_startup: tuple[Callable[[Pipeline], Any], ...]
    collector: AutoscalerCollector
    window: RecordWindow


def attach(
    settings: Settings,
    *,
    controller_factory: Callable[[ObserverSource, AuditSink], Controller] | None = None,
    signals_latest: Callable[[], FleetSignalsLike | None] | None = None,
    audit_log: SqlAuditLog | MemoryAuditLog | None = None,
    background: bool = True,
) -> AutoscalerAttachment:
    """Wire the control loop into `create_app(extra_routers=..., on_startup=...)`.

    `controller_factory(source, audit)` builds the controller (default: Kubernetes, from the
    settings); the audit goes to `audit_log` (default: the decisions table of the store URL).
    """
    from autoscaler.settings import from_settings

    asettings = from_settings(settings)
    log_ = audit_log if audit_log is not None else SqlAuditLog.open(settings.store.url)
    collector = AutoscalerCollector()
    window = RecordWindow(_pool_of(asettings), window_seconds=60.0)
    queue = arrival_feed(settings, asettings, signals_latest=signals_latest)
    signals: SignalsProvider = (
        EngineSignals(signals_latest, queue.decode_gauges if queue is not None else None, _kv_peak(asettings))
        if signals_latest is not None
        else _signals_for(asettings, 60.0, queue)
    )

    def on_startup(pipeline: Pipeline) -> None:
        pipeline.registry.register(collector)
        pipeline.listeners.append(window.add_records)
        window.start(pipeline.clock())
        source = ObserverSource(window, signals, live=lambda: pipeline.ready, queue=queue)
        audit = FanoutAudit(log_, collector)
        if controller_factory is not None:
            ctl = controller_factory(source, audit)
        else:
            from autoscaler.kubernetes import build_controller

            ctl, _api = build_controller(asettings, source=source, audit=audit)
        warm_start(ctl, ctl_scale(ctl), pipeline.clock(), hold_seconds=asettings.warm_start_hold_seconds)
        if background:
            task = asyncio.get_running_loop().create_task(run_in_background(ctl), name="autoscaler")
            pipeline.add_task(task)

    return AutoscalerAttachment((decisions_router(log_),), (on_startup,), collector, window)


async def run_in_background(ctl: Controller) -> None:
    """Tick every interval off the event loop; stops on a lost lease (logged), survives errors."""
    loop = asyncio.get_running_loop()
    try:
        while True:
            started = time.monotonic()
            try:
                rep: TickReport = await loop.run_in_executor(None, ctl.tick)
                del rep
            except LeadershipLost as exc:
                log.error("autoscaler leadership lost; the control loop stops: %s", exc)
                return
            except (ActuationError, Exception):
                log.exception("autoscaler tick failed; will retry")
            await asyncio.sleep(max(0.0, ctl.interval_seconds - (time.monotonic() - started)))
    except asyncio.CancelledError:  # the service shuts down: hand the lease over now
        ctl.release()
        raise


def serve_hooks(
    settings: Settings,
    engine: Engine,
    *,
    signals_latest: Callable[[], FleetSignalsLike | None] | None = None,
) -> tuple[list[APIRouter], list[Callable[[Pipeline], Any]]]:
    """What `pd-observer serve` mounts: the decisions API always (decisions written by a
    standalone `pd-observer autoscale` share the database), and the control loop itself when
    `autoscaler.enabled` (signals from the fleet-signals engine when `signals_latest` is given,
    e.g. `lambda: attachment.service.engine.latest`; else from the records)."""
    log_ = SqlAuditLog(engine)  # the store's engine: the table exists once the store is upgraded
    if settings.autoscaler.get("enabled"):
        att = attach(settings, audit_log=log_, signals_latest=signals_latest)
        return list(att.routers), list(att.on_startup)
    return [decisions_router(log_)], []
