"""Running the control loop for real: `pd-observer autoscale` and inside `pd-observer serve`.

Standalone (`run_autoscale`): observations come from the observer's store (the records the
service committed, read every tick: `StoreRecordFeed`), the decisions go to the same database
(`SqlAuditLog`), actuation through the Kubernetes API (`autoscaler.kubernetes.build_controller`)
with the Lease; `LeadershipLost` ends the process non-zero.

Inside `serve` (`attach`, when `autoscaler.enabled`): the pipeline feeds a `RecordWindow`
directly (a `Pipeline.listeners` entry); signals come from the fleet-signals engine when one is
given (`signals_latest=lambda: engine.latest`), else from the records; the decisions API and the
metrics collector are mounted on the service. A lost lease makes the loop a standby (logged at
error level; the observer keeps serving) until it can take the lease again.

Both stop on SIGTERM the same way (`Controller.stop`): the tick in flight finishes without
retrying or sending anything new, then the Lease is released (docs/autoscaler.md, "Stopping").
"""

from __future__ import annotations

import asyncio
import contextlib
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
from autoscaler.feeds import FleetRecordFeed, RecordFeed
from autoscaler.loop import Controller, LeadershipLost
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
from autoscaler.ports import (
    ActuationError,
    AuditEntry,
    AuditSink,
    LeverMemory,
    ObservationSource,
    ScaleTarget,
)
from autoscaler.settings import AutoscalerSettings
from autoscaler.types import PolicyState, PoolState, Recommendation
from observer import conventions as c
from observer.config import SHUTDOWN_EXIT_MARGIN_SECONDS, Settings
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
            [e.target() for e in src.static.epps],
            timeout_seconds=src.scrape.timeout_seconds,
            max_body_bytes=src.scrape.max_body_bytes,
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
    """Feeds a `RecordWindow` from the store: every tick, the records of the whole window, those
    not fed before added. A record is committed after it ended (a batch retried after a 503 or
    429, a P/D half flushed at its timeout, clock skew): reading only what ended since the last
    poll missed those (200 of 600 records, under exactly the overload that delays commits)."""

    def __init__(self, store: RecordStore, window: RecordWindow) -> None:
        self.store = store
        self.window = window
        self._seen: set[str] = set()  # the request ids fed, within the window: bounded by it

    def poll(self, now: float) -> int:
        fetched = list(self.store.records_since(now - self.window.window_seconds))
        new: list[RequestRecord] = [r for r in fetched if r.request_id not in self._seen]
        self._seen = {r.request_id for r in fetched}
        self.window.start(now - self.window.window_seconds)
        self.window.add_records(new, now)
        return len(new)


@dataclass
class PollingSource:
    """`ObservationSource` that polls a record feed (`StoreRecordFeed`, `FleetRecordFeed`) once
    per tick before observing."""

    feed: RecordFeed
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
    `once`, the lease could not be read or written; 1 also when a stop did not finish in time).

    On the main thread the loop runs in a worker thread and SIGTERM / SIGINT stop it cleanly
    (`Controller.stop`: the tick in flight finishes without retrying or sending anything new,
    then the lease is released, so a standby takes over at once); a second signal, or a stop
    that takes longer than `server.shutdown_grace_seconds` + `SHUTDOWN_EXIT_MARGIN_SECONDS`, exits
    with status 1, the lease released on the way out (best effort, within the exit margin)."""
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

    class _Print:
        def record(self, entry: AuditEntry) -> None:
            out(json.dumps(entry_json(entry), sort_keys=True))

    ctl, api = build_controller(
        asettings,
        source=source,
        audit=FanoutAudit(audit_log, _Print()),
        mode=mode,
        host=host,
        kubeconfig=kubeconfig,
        identity=identity,
        memory=audit_log,
    )

    def body() -> int:
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
            ctl.run(max_ticks=max_ticks)  # releases the lease on the way out, a stop included
            return 0
        except LeadershipLost as exc:
            log.error("leadership lost: %s", exc)
            out(json.dumps({"leader": False, "detail": f"leadership lost: {exc}"}))
            return 1

    try:
        if threading.current_thread() is not threading.main_thread():
            return body()  # no signals to handle off the main thread
        return _run_stoppable(ctl, body, grace_seconds=settings.server.shutdown_grace_seconds)
    finally:
        api.close()
        store.close()


class Terminated(BaseException):
    """A second SIGTERM / SIGINT while stopping: exit now, without waiting for the loop (the
    lease is released on the way out, for `SHUTDOWN_EXIT_MARGIN_SECONDS` at most)."""


def _run_stoppable(ctl: Controller, body: Callable[[], int], *, grace_seconds: float) -> int:
    """Run `body` in a worker thread; SIGTERM / SIGINT stop `ctl` (the handler only records
    the signal: `Controller.stop` takes a lock, so it is called from this thread, not from the
    handler), a second signal raises `Terminated` here. Returns `body`'s exit code, or 1 when
    the stop was forced or did not finish within the grace. Either way out with the loop still
    running, the lease is released from a thread of its own (`release_lease`: a request in flight
    may hang, and the release may too), as long as the exit margin allows."""
    result: list[int] = []
    requested: list[str] = []
    releasing: list[threading.Thread] = []

    def release_lease() -> threading.Thread:
        if not releasing:  # once: `Controller.release` is a no-op after the first
            releasing.append(threading.Thread(target=ctl.release, name="lease-release", daemon=True))
            releasing[0].start()
        return releasing[0]

    def work() -> None:
        try:
            result.append(body())
        except Exception:
            log.exception("the autoscaler loop failed")
            result.append(1)

    def handler(signum: int, frame: Any) -> None:
        if requested:
            raise Terminated()
        requested.append(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    worker = threading.Thread(target=work, name="autoscaler-loop", daemon=True)
    grace_end: float | None = None
    deadline: float | None = None
    try:
        worker.start()
        while worker.is_alive():
            worker.join(0.05)
            if requested and deadline is None:
                log.info(
                    "shutdown requested: finishing the tick in flight, then releasing the lease",
                    extra={"signal": requested[0], "grace_seconds": grace_seconds},
                )
                grace_end = time.monotonic() + grace_seconds
                deadline = grace_end + SHUTDOWN_EXIT_MARGIN_SECONDS
                ctl.stop()
            if grace_end is not None and time.monotonic() > grace_end and worker.is_alive():
                # as `serve` does: the lease is handed over anyway (within the exit margin, best
                # effort), so a standby need not wait it out behind a hung request
                log.error(
                    "the autoscaler tick in flight did not finish within the shutdown grace; "
                    "releasing the lease"
                )
                release_lease()
                grace_end = None
            if deadline is not None and time.monotonic() > deadline and worker.is_alive():
                log.error(
                    "the autoscaler did not stop within the shutdown grace; exiting without it",
                    extra={"signal": requested[0], "exit_code": 1},
                )
                return 1
    except Terminated:
        # as past the grace: nothing new is sent, and the lease is handed over (best effort,
        # within the exit margin) so a standby need not wait out leaseDurationSeconds
        log.error(
            "second signal: releasing the lease, then exiting",
            extra={"exit_code": 1, "margin_seconds": SHUTDOWN_EXIT_MARGIN_SECONDS},
        )
        with contextlib.suppress(Terminated):  # a third signal: exit without waiting any longer
            ctl.stop()
            release = release_lease()
            release.join(SHUTDOWN_EXIT_MARGIN_SECONDS)
            if release.is_alive():
                log.error(
                    "the lease release did not finish within the exit margin; exiting without it",
                    extra={"margin_seconds": SHUTDOWN_EXIT_MARGIN_SECONDS},
                )
        return 1
    finally:
        for sig, prev in previous.items():
            signal.signal(sig, prev)
    code = result[0] if result else 1
    if requested:
        log.info("stopped", extra={"signal": requested[0], "exit_code": code})
    return code


# ---------------------------------------------------------------------------------------------
# Inside `serve`
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AutoscalerAttachment:
    routers: tuple[APIRouter, ...]
    on_startup: tuple[Callable[[Pipeline], Any], ...]
    collector: AutoscalerCollector
    window: RecordWindow
    # a forced exit's last call: the background loop (once started) releases its lease now;
    # blocking, the caller bounds it (`BackgroundLoop.release_now`)
    release_now: Callable[[], None] = lambda: None


def attach(
    settings: Settings,
    *,
    controller_factory: Callable[[ObservationSource, AuditSink], Controller] | None = None,
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

    loops: list[BackgroundLoop] = []  # the one started at startup, when `background`

    def on_startup(pipeline: Pipeline) -> None:
        pipeline.registry.register(collector)
        # this replica's records as committed, and the other ingest replicas' from the store
        feed = FleetRecordFeed(
            pipeline.store,
            window,
            owner=pipeline.owner,
            gone_after=pipeline.settings.ingest.replica_gone_after_seconds,
        )
        pipeline.listeners.append(feed.add_records)
        window.start(pipeline.clock())
        source = PollingSource(
            feed, ObserverSource(window, signals, live=lambda: pipeline.ready and feed.complete, queue=queue)
        )
        audit = FanoutAudit(log_, collector)
        if controller_factory is not None:
            ctl = controller_factory(source, audit)
        else:
            from autoscaler.kubernetes import build_controller

            memory = log_ if isinstance(log_, LeverMemory) else None
            ctl, _api = build_controller(asettings, source=source, audit=audit, memory=memory)
        warm_start(ctl, ctl_scale(ctl), pipeline.clock(), hold_seconds=asettings.warm_start_hold_seconds)
        if background:
            bg = BackgroundLoop(ctl, on_tick=collector.set_leader)
            bg.task = asyncio.get_running_loop().create_task(bg.run(), name="autoscaler")
            pipeline.add_task(bg.task)
            pipeline.stop_hooks.append(bg.stop)
            loops.append(bg)

    def release_now() -> None:
        for bg in loops:
            bg.release_now()

    return AutoscalerAttachment((decisions_router(log_),), (on_startup,), collector, window, release_now)


class BackgroundLoop:
    """The control loop inside `serve`: one tick every interval, off the event loop (a tick
    blocks on the API server). `stop` (a `Pipeline.stop_hooks` entry, run from the first
    SIGTERM on) lets the tick in flight finish — no retry, no action not yet sent (audited as
    not sent) — then releases the lease, so a standby takes over at once. A lost lease (another
    instance took it, or it could not be renewed in time: an API server outage) makes this
    instance a standby, logged at error level: it stops acting at once, and takes the lead again
    when the lease is free (it used to stop for good, until the pod restarted). `on_tick(leader)`
    after every tick (the `pd_observer_autoscaler_leader` gauge). Other errors are logged and
    the next tick tries again."""

    def __init__(self, ctl: Controller, on_tick: Callable[[bool], None] | None = None) -> None:
        self.ctl = ctl
        self.on_tick = on_tick
        self.task: asyncio.Task[None] | None = None
        self._ticking = False
        self._released = False
        self._wake: asyncio.Event | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        try:
            while not self.ctl.stopping:
                started = time.monotonic()
                self._ticking = True
                leader: bool | None = None  # unknown after a failed tick: the gauge keeps its value
                try:
                    leader = (await loop.run_in_executor(None, self.ctl.tick)).leader
                except LeadershipLost as exc:
                    leader = False
                    log.error("autoscaler leadership lost; standing by until the lease is free: %s", exc)
                except Exception:
                    log.exception("autoscaler tick failed; will retry")
                finally:
                    self._ticking = False
                if self.on_tick is not None and leader is not None:
                    self.on_tick(leader)
                delay = max(0.0, self.ctl.interval_seconds - (time.monotonic() - started))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
        except asyncio.CancelledError:
            # cancelled without `stop` (or past its grace): no action not yet sent is sent;
            # the lease is handed over now unless a tick is still running in its thread
            self.ctl.stop()
            if not self._ticking:
                self._release()
            elif not self._released:
                log.warning("autoscaler stopped during a tick; its lease is left to expire")
            raise
        await loop.run_in_executor(None, self._release)

    def _release(self) -> None:
        self.ctl.release()
        self._released = True

    def release_now(self) -> None:
        """A forced exit (`serve`'s second signal): nothing new is sent, and the lease is given up
        now, a tick in flight or not. Blocks on the API server: the caller bounds the wait (any
        thread but a signal handler's: `Controller.stop` takes a lock)."""
        self.ctl.stop()
        self._release()

    async def stop(self, deadline: float) -> None:
        """Stop by `deadline` (the event loop's clock): the tick in flight finishes, then the
        lease is released; past the deadline the lease is released anyway."""
        self.ctl.stop()
        if self._wake is not None:
            self._wake.set()
        if self.task is None or self.task.done():
            return
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(asyncio.shield(self.task), max(0.0, deadline - loop.time()))
        except TimeoutError:
            log.error(
                "the autoscaler tick in flight did not finish within the shutdown grace; releasing the lease"
            )
            await loop.run_in_executor(None, self._release)


def serve_hooks(
    settings: Settings,
    engine: Engine,
    *,
    signals_latest: Callable[[], FleetSignalsLike | None] | None = None,
) -> tuple[list[APIRouter], list[Callable[[Pipeline], Any]], Callable[[], None] | None]:
    """What `pd-observer serve` mounts: the decisions API always (decisions written by a
    standalone `pd-observer autoscale` share the database), and the control loop itself when
    `autoscaler.enabled` (signals from the fleet-signals engine when `signals_latest` is given,
    e.g. `lambda: attachment.service.engine.latest`; else from the records). Third: what a
    forced exit runs last (the loop's lease released, `AutoscalerAttachment.release_now`), or
    None without the loop."""
    log_ = SqlAuditLog(engine)  # the store's engine: the table exists once the store is upgraded
    if settings.autoscaler.get("enabled"):
        att = attach(settings, audit_log=log_, signals_latest=signals_latest)
        return list(att.routers), list(att.on_startup), att.release_now
    return [decisions_router(log_)], [], None
