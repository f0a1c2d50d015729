"""The ingest pipeline: decode off the event loop, a bounded write queue, durable group commit.

    HTTP body ──decode+resolve (thread pool)──▶ bounded queue ──writer thread──▶
        assemble P/D traces → store.write_batch (ONE transaction) → aggregator.add → ack

A batch is answered 200 only after the transaction holding its records (and the P/D halves still
waiting for a partner) has committed, so a kill -9 never loses an acknowledged batch: on restart the
pending halves are restored and the windows are rebuilt from the stored records. A batch that is
not committed in time (`store.write_timeout_seconds`, or the shutdown grace) is answered 503 with
Retry-After: the client sends it again, and a copy that was committed meanwhile is not counted
twice (records are deduplicated by request id).

Shutdown (`begin_stop`, from the first SIGTERM; `stop`, from the service's lifespan): not ready,
new batches refused (503), accepted ones still written until `server.shutdown_grace_seconds`
after the signal, when the ones left are answered 503; the components' `stop_hooks` run from
the signal on, with the same deadline.

All mutable state (assembler, aggregator) is touched by the single writer thread or under `lock`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from observer import conventions as c
from observer.aggregate import Aggregator
from observer.config import Settings
from observer.ingest import fastpath
from observer.ingest.assemble import AssembleResult, TraceAssembler
from observer.ingest.otlp import IngestError, encode_response, error_message
from observer.ingest.resolve import ResolveConfig, ResolvedBatch, decode_and_resolve
from observer.model import EngineSpan, RequestRecord, SloSpec
from observer.store import RecordStore, StoreRejected

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class Throttled(Exception):
    """The write queue is full (429) or the service is stopping (503)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class IngestOutcome:
    status: int
    body: bytes
    content_type: str
    accepted: int
    rejected: int


@dataclass(eq=False)
class _Job:
    batch: ResolvedBatch
    future: asyncio.Future[int]
    loop: asyncio.AbstractEventLoop


@dataclass
class IngestMetrics:
    spans: Counter
    batches: Counter
    incomplete: Counter
    adopted: Counter
    clock_offset: Gauge
    rewritten: Counter
    queue_depth: Gauge
    queued_spans: Gauge
    pending: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> IngestMetrics:
        return cls(
            spans=Counter(
                c.M_SPANS_RECEIVED, "OTLP spans received, by outcome", [c.LABEL_STATUS], registry=registry
            ),
            batches=Counter(
                c.M_INGEST_BATCHES, "OTLP export requests, by outcome", [c.LABEL_STATUS], registry=registry
            ),
            incomplete=Counter(
                c.M_TRACES_INCOMPLETE,
                "P/D requests counted without their partner span (flushed on timeout or bound)",
                registry=registry,
            ),
            adopted=Counter(
                c.M_PENDING_ADOPTED,
                "P/D halves taken over from the stored rows of gone ingest replicas",
                registry=registry,
            ),
            clock_offset=Gauge(
                c.M_STORE_CLOCK_OFFSET,
                "this replica's clock minus the database's, at the last maintenance (PostgreSQL; "
                "0 on SQLite); heartbeats compare the replicas' clocks",
                registry=registry,
            ),
            rewritten=Counter(
                c.M_INGEST_VALUES_REWRITTEN,
                "span strings rewritten before use: NUL or lone surrogates replaced, or cut past "
                "the length limit (docs/ingest.md, untrusted strings)",
                registry=registry,
            ),
            queue_depth=Gauge(
                c.M_INGEST_QUEUE_DEPTH, "OTLP batches waiting to be written", registry=registry
            ),
            queued_spans=Gauge(
                c.M_INGEST_QUEUED_SPANS,
                "engine spans of the batches waiting to be written (server.max_queued_spans bounds it)",
                registry=registry,
            ),
            pending=Gauge(c.M_PENDING_TRACES, "P/D traces waiting for their partner span", registry=registry),
        )


@dataclass
class Pipeline:
    """Owns ingest state; the HTTP layer calls `ingest`, the lifespan calls `start`/`stop`."""

    settings: Settings
    store: RecordStore
    registry: CollectorRegistry
    clock: Clock = time.time
    lock: threading.RLock = field(default_factory=threading.RLock)
    # Called in the writer thread, under `lock`, with every batch of NEW records (after commit).
    # Keep listeners cheap and non-blocking (e.g. the fleet-signals engine's window feed).
    listeners: list[Callable[[Sequence[RequestRecord], float], None]] = field(default_factory=list)
    # Extra keys merged into each tenant entry of the API, by tenant (e.g. the fleet signals).
    tenant_extras: list[Callable[[str], Mapping[str, Any]]] = field(default_factory=list)
    # Called on the event loop when the shutdown begins, with its deadline (`loop.time()`):
    # each component stops by then (e.g. the autoscaler finishes its tick, releases its lease).
    stop_hooks: list[Callable[[float], Coroutine[Any, Any, None]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        s = self.settings
        self.resolve_cfg = ResolveConfig.from_settings(s.ingest)
        self.assembler = TraceAssembler(s.ingest.max_pending_traces, s.ingest.pending_timeout_seconds)
        # this replica's name on the pending P/D rows it holds (docs/ingest.md, several replicas)
        self.owner = s.ingest.replica_id or default_replica_id()
        self.aggregator = Aggregator(s.aggregation, s.slo_specs())
        self.metrics = IngestMetrics.create(self.registry)
        self._decode_pool = ThreadPoolExecutor(s.server.decode_workers, thread_name_prefix="otlp-decode")
        self._writer_pool = ThreadPoolExecutor(1, thread_name_prefix="store-writer")
        self._queue: asyncio.Queue[_Job] | None = None
        # Group commit (event-loop state only): batches being decoded, and a wake-up for the
        # writer when one was queued or finished decoding.
        self._decoding = 0
        self._queued_spans = 0  # engine spans queued and not yet written (server.max_queued_spans)
        self._typical_spans = 0.0  # moving average of the engine spans per decoded batch
        self._arrived = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self.ready = False
        self._loop: asyncio.AbstractEventLoop | None = None
        # Shutdown: batches whose request waits for their commit; the drain deadline (loop
        # time); whether it passed; the stop hooks' tasks.
        self._waiting: set[_Job] = set()
        self._deadline: float | None = None
        self._drain_over = False
        self._hook_tasks: list[asyncio.Task[None]] = []
        self.abandoned = 0  # batches answered 503 at shutdown, not written in time
        self.clean_stop = True  # every accepted batch written and every component stopped in time
        # Store health (readiness): the last write's failure (None after a success), and since
        # when (monotonic) the write in progress has been running.
        self.store_error: str | None = None
        self._writing_since: float | None = None

    # ------------------------------------------------------------------ lifecycle
    def recover(self) -> None:
        """Blocking: migrate, seed SLOs, restore pending P/D halves, rebuild windows from the store."""
        now = self.clock()
        self.store.upgrade()
        slos = self.store.seed_slos(list(self.settings.slo_specs()))
        with self.lock:
            self._apply_slos(slos, now)
            # The heartbeat first (in the claim), so no other replica takes this one's rows (a
            # previous run under the same `ingest.replica_id`) while they are being restored.
            taken = self._claim(now, sweep=True)
            ids = {x.span_id for x in taken}
            own = [x for x in self.store.load_pending(self.owner) if x.span_id not in ids]
            # what the restore flushes (beyond max_pending_traces, or halves without a role) is
            # written now: it was dropped, its rows left behind and its partners later taken as late
            results = [self.assembler.restore(own, now), self.assembler.adopt(taken, now)]
            if any(r.records or r.pending_released for r in results):
                self._commit(results, now)
            self.metrics.pending.set(self.assembler.pending_count)
        since = now - self.settings.aggregation.max_window_seconds
        log.info(
            "recovered",
            extra={
                "pending": self.assembler.pending_count,
                "since": since,
                "replica_id": self.owner,
                "restored": len(own),
                "adopted": len(taken),
            },
        )

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        fastpath.compiled(self.resolve_cfg)  # logs, at start, which decode path runs
        await loop.run_in_executor(self._writer_pool, self.recover)
        self._queue = asyncio.Queue(self.settings.server.ingest_queue_size)
        self._tasks = [
            asyncio.create_task(self._writer(), name="ingest-writer"),
            asyncio.create_task(self._housekeeping(), name="housekeeping"),
        ]
        self.ready = True

    def add_task(self, task: asyncio.Task[None]) -> None:
        """A background task owned by a component (e.g. fleet signals); cancelled by `stop`."""
        self._tasks.append(task)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """(ready, body of /readyz): not while starting or stopping, nor while the store is
        unavailable (the last write failed; a probe transaction every housekeeping tick finds
        out when it is back) or unresponsive (a write has been running longer than
        `store.write_timeout_seconds`)."""
        if self._stopping:
            return False, {"status": "stopping"}
        if not self.ready:
            return False, {"status": "starting"}
        if self.store_error is not None:
            return False, {"status": "store_unavailable", "detail": self.store_error}
        since, limit = self._writing_since, self.settings.store.write_timeout_seconds
        if since is not None and limit and time.monotonic() - since > limit:
            return False, {
                "status": "store_unresponsive",
                "detail": f"a store write has been running for {time.monotonic() - since:.0f} s",
            }
        return True, {"status": "ready", "pending_traces": self.assembler.pending_count}

    def request_stop(self, reason: str) -> None:
        """Begin the shutdown from any thread (a signal handler: it only schedules `begin_stop`
        on the event loop)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.begin_stop, reason)

    def begin_stop(self, reason: str = "") -> None:
        """On the event loop, once: not ready, new batches refused (503); accepted ones are
        still written until the deadline (`server.shutdown_grace_seconds` from now), when the
        ones left are answered 503; the stop hooks start now, with that deadline."""
        if self._stopping:
            return
        self._stopping = True
        self.ready = False
        loop = asyncio.get_running_loop()
        grace = self.settings.server.shutdown_grace_seconds
        self._deadline = loop.time() + grace
        loop.call_at(self._deadline, self._abandon_waiting)
        log.info(
            "shutdown requested",
            extra={
                "reason": reason or "stop",
                "grace_seconds": grace,
                "batches_in_flight": len(self._waiting),
            },
        )
        self._hook_tasks = [loop.create_task(hook(self._deadline)) for hook in self.stop_hooks]

    def _abandon_waiting(self) -> None:
        """The drain deadline: the batches still waiting for their commit are answered 503
        (their clients send them again, to another replica; a copy written meanwhile is not
        counted twice)."""
        self._drain_over = True
        waiting = [j for j in self._waiting if not j.future.done()]
        if not waiting:
            return
        self.abandoned += len(waiting)
        self.clean_stop = False
        log.warning(
            "shutdown grace elapsed: batches not yet written are answered 503 (their clients retry)",
            extra={"batches": len(waiting)},
        )
        for job in waiting:
            self.metrics.batches.labels("throttled").inc()
            job.future.set_exception(_stopping_error())

    async def stop(self) -> None:
        """Stop taking batches, drain the queue until the deadline (every accepted batch is
        written or, past it, answered 503), let the stop hooks finish, then stop."""
        self.begin_stop()
        loop = asyncio.get_running_loop()
        assert self._deadline is not None
        if self._queue is not None:
            try:
                await asyncio.wait_for(self._queue.join(), timeout=max(0.0, self._deadline - loop.time()))
            except TimeoutError:
                self.clean_stop = False
                log.warning("shutdown grace elapsed with batches still queued")
        self._abandon_waiting()
        if self._hook_tasks:
            _, late = await asyncio.wait(self._hook_tasks, timeout=max(0.0, self._deadline - loop.time()))
            if late:
                self.clean_stop = False
                log.error(
                    "components still stopping at the end of the shutdown grace", extra={"tasks": len(late)}
                )
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._hook_tasks, return_exceptions=True)
        self._decode_pool.shutdown(wait=False, cancel_futures=True)
        # the writer thread may be inside a write (a store that hangs): do not wait past the
        # deadline for it (the process then exits without it: see `clean_stop`)
        idle = loop.run_in_executor(self._writer_pool, lambda: None)
        try:
            await asyncio.wait_for(idle, timeout=max(0.0, self._deadline - loop.time()))
        except TimeoutError:
            self.clean_stop = False
            log.error("a store write is still running at the end of the shutdown grace")
        else:
            await self._retire(loop)
        self._writer_pool.shutdown(wait=False, cancel_futures=True)

    async def _retire(self, loop: asyncio.AbstractEventLoop) -> None:
        """Every write done: mark this replica gone (`RecordStore.retire`), so the others take
        over its pending P/D halves at their next housekeeping tick, within the deadline."""
        assert self._deadline is not None
        retire = loop.run_in_executor(self._writer_pool, self.store.retire, self.owner)
        try:
            await asyncio.wait_for(retire, timeout=max(0.0, self._deadline - loop.time()))
        except Exception as exc:
            log.warning(
                "could not hand over the pending P/D halves (others take them over once this "
                "replica's heartbeat is older than ingest.replica_gone_after_seconds)",
                extra={"error": _one_line(exc)},
            )

    # ------------------------------------------------------------------ ingest
    def decode(self, body: bytes, content_type: str | None, content_encoding: str | None) -> ResolvedBatch:
        s = self.settings
        return decode_and_resolve(
            body,
            content_type,
            content_encoding,
            max_decompressed_bytes=s.server.max_decompressed_bytes,
            max_spans=s.ingest.max_spans_per_batch,
            cfg=self.resolve_cfg,
            latest_end=self.clock() + s.ingest.max_clock_skew_seconds,
        )

    async def ingest(
        self, body: bytes, content_type: str | None, content_encoding: str | None
    ) -> IngestOutcome:
        """Decode, enqueue, wait for the commit. Raises IngestError (4xx) or Throttled (429/503)."""
        if self._stopping or self._queue is None:
            self.metrics.batches.labels("throttled").inc()
            raise Throttled(503, "pd-observer is not accepting data (starting or stopping)")
        loop = asyncio.get_running_loop()
        self._decoding += 1
        try:
            batch = await loop.run_in_executor(
                self._decode_pool, self._decode_if_room, body, content_type, content_encoding
            )
        except IngestError as exc:
            self.metrics.batches.labels(_status_label(exc.status)).inc()
            raise
        except Throttled:
            self.metrics.batches.labels("throttled").inc()
            raise
        finally:
            self._decoding -= 1
            self._arrived.set()  # queued below, or failed: a lingering writer re-checks either way
        if self._drain_over:
            self.metrics.batches.labels("throttled").inc()
            raise _stopping_error()
        job = _Job(batch=batch, future=loop.create_future(), loop=loop)
        job.future.add_done_callback(_retrieve)
        spans = len(batch.engine)
        self._typical_spans += (spans - self._typical_spans) * _TYPICAL_WEIGHT
        if self._queued_spans and self._queued_spans + spans > self.settings.server.max_queued_spans:
            self.metrics.batches.labels("throttled").inc()
            raise _queue_full(self.settings.server.max_queued_spans)
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self.metrics.batches.labels("throttled").inc()
            raise Throttled(429, "ingest queue full, retry later") from None
        self._queued(spans)
        self.metrics.queue_depth.set(self._queue.qsize())
        self._waiting.add(job)
        try:
            await self._committed(job)
        except IngestError as exc:
            self.metrics.batches.labels(_status_label(exc.status)).inc()
            raise
        finally:
            self._waiting.discard(job)
        accepted = len(batch.engine)
        self.metrics.spans.labels("accepted").inc(accepted)
        self.metrics.spans.labels("rejected").inc(batch.rejected)
        self.metrics.spans.labels("ignored").inc(batch.ignored)
        self.metrics.rewritten.inc(batch.rewritten)
        ct = _response_type(content_type)
        message = error_message(batch.errors)
        self.metrics.batches.labels("partial" if batch.rejected else "ok").inc()
        return IngestOutcome(200, encode_response(batch.rejected, message, ct), ct, accepted, batch.rejected)

    def _decode_if_room(
        self, body: bytes, content_type: str | None, content_encoding: str | None
    ) -> ResolvedBatch:
        """Decode thread, when a worker takes the batch: refuse it (429) before decoding when
        the queue has no room for a batch of the recent size (`server.max_queued_spans`), so an
        overloaded server does not spend its CPU decoding batches it would then refuse. The exact
        check, with the batch's own size, follows the decode (`ingest`)."""
        limit, queued = self.settings.server.max_queued_spans, self._queued_spans
        if queued and queued + self._typical_spans > limit:
            raise _queue_full(limit)
        return self.decode(body, content_type, content_encoding)

    async def _committed(self, job: _Job) -> None:
        """Wait for the job's commit, at most `store.write_timeout_seconds` (0: no limit); past
        it, a 503 (the write goes on: a copy the client sends again is not counted twice)."""
        limit = self.settings.store.write_timeout_seconds
        if not limit:
            await job.future
            return
        try:
            await asyncio.wait_for(asyncio.shield(job.future), limit)
        except TimeoutError:
            self.metrics.batches.labels("throttled").inc()
            raise Throttled(
                503, f"the store did not commit this batch within {limit:g} s; retry later"
            ) from None

    async def _writer(self) -> None:
        assert self._queue is not None
        queue = self._queue
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._group(queue, loop)
            try:
                await self._write_jobs(jobs, loop)
            finally:
                for _ in jobs:
                    queue.task_done()
                self._queued(-sum(len(j.batch.engine) for j in jobs))
                self.metrics.queue_depth.set(queue.qsize())

    def _queued(self, spans: int) -> None:
        """Engine spans of the batches accepted into the queue and not yet written (event loop)."""
        self._queued_spans += spans
        self.metrics.queued_spans.set(self._queued_spans)

    async def _write_jobs(self, jobs: Sequence[_Job], loop: asyncio.AbstractEventLoop) -> None:
        """One transaction for the jobs' batches. When a transaction of several fails, each
        batch is written again alone, so one batch the store refuses (or one that breaks it)
        fails only its own request. A batch refused for its data is answered 400 (retrying it
        cannot succeed); any other failure 503."""
        self._writing_since = time.monotonic()
        try:
            await loop.run_in_executor(self._writer_pool, self._write, [j.batch for j in jobs])
        except Exception as exc:
            self._writing_since = None
            if len(jobs) > 1:
                log.warning(
                    "grouped store write failed; writing its batches one by one",
                    extra={"batches": len(jobs), "error": str(exc)},
                )
                for job in jobs:
                    await self._write_jobs([job], loop)
                return
            if isinstance(exc, StoreRejected):
                log.warning("store refused a batch; answered 400", extra={"error": str(exc)})
                error: Exception = IngestError(f"the store refused this batch's data: {exc}")
            else:
                log.exception("store write failed; batch answered 503")
                error = Throttled(503, f"store unavailable: {exc}")
                self.store_error = _one_line(exc)
            if not jobs[0].future.done():
                jobs[0].future.set_exception(error)
        else:
            self._writing_since = None
            if self.store_error is not None:
                log.info("store available again")
            self.store_error = None
            for job in jobs:
                if not job.future.done():
                    job.future.set_result(len(job.batch.engine))

    async def _group(self, queue: asyncio.Queue[_Job], loop: asyncio.AbstractEventLoop) -> list[_Job]:
        """The batches of the next transaction: wait for one, take every queued one, and while
        other batches are still being decoded linger up to `group_commit_max_wait_ms` for them,
        up to `write_batch_max` batches / `group_commit_max_spans` engine spans. Light load (no
        other batch in flight) never waits."""
        st = self.settings.store
        jobs = [await queue.get()]
        spans = len(jobs[0].batch.engine)
        deadline = loop.time() + st.group_commit_max_wait_ms / 1000
        while len(jobs) < st.write_batch_max and spans < st.group_commit_max_spans:
            if not queue.empty():
                jobs.append(queue.get_nowait())
                spans += len(jobs[-1].batch.engine)
                continue
            remaining = deadline - loop.time()
            if self._decoding == 0 or remaining <= 0:
                break
            # No await between the checks above and clear(): a batch queued (or a decode that
            # finished) after this point sets the event, so no wake-up is missed. Waiting on the
            # event, not on queue.get(), means a timeout can never drop a dequeued job.
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                break
        return jobs

    def _write(self, batches: Sequence[ResolvedBatch]) -> None:
        """Writer thread: assemble, commit, then update the in-memory windows."""
        now = self.clock()
        with self.lock:
            results = [self.assembler.add(b.engine, b.hints, now) for b in batches]
            self._commit(results, now)

    def _commit(self, results: Sequence[AssembleResult], now: float) -> None:
        records = [r for res in results for r in res.records]
        added = [s for res in results for s in res.pending_added]
        released = [sid for res in results for sid in res.pending_released]
        try:
            new = self.store.write_batch(records, added, released, owner=self.owner)
        except Exception:
            # The transaction rolled back: the assembler must not believe it advanced.
            self._rebuild_assembler(now)
            raise
        self.aggregator.add(new, now)
        for listener in self.listeners:
            listener(new, now)
        self.metrics.incomplete.inc(sum(res.incomplete for res in results))
        self.metrics.pending.set(self.assembler.pending_count)

    def _rebuild_assembler(self, now: float) -> None:
        """After a rolled-back write: the halves this replica held before it, as stored (its own
        pending rows: those it still holds, those the failed write was to release, and those it
        took over from gone replicas). The pending rows of other replicas sharing the database
        are not taken: they used to be, and were then flushed here as incomplete, or evicted."""
        s = self.settings.ingest
        self.assembler = TraceAssembler(s.max_pending_traces, s.pending_timeout_seconds)
        self.assembler.restore(self.store.load_pending(self.owner), now)

    def _claim(self, now: float, *, sweep: bool) -> list[EngineSpan]:
        """Under `lock`: this replica's heartbeat, and the pending rows of gone replicas it takes
        over now (`RecordStore.claim_pending`, at most `CLAIM_LIMIT`). Never raises: a store that
        fails here fails the write that follows, which the caller handles."""
        s = self.settings.ingest
        try:
            taken = self.store.claim_pending(
                self.owner, now, s.replica_gone_after_seconds, limit=CLAIM_LIMIT, sweep=sweep
            )
        except Exception as exc:
            log.warning(
                "heartbeat and takeover of gone replicas' P/D halves failed; will retry",
                extra={"error": _one_line(exc)},
            )
            return []
        if taken:
            self.metrics.adopted.inc(len(taken))
            log.info(
                "took over the P/D halves of gone ingest replicas",
                extra={"halves": len(taken), "replica_id": self.owner},
            )
        return taken

    # ------------------------------------------------------------------ periodic work
    def _expire_and_maintain(self, maintain: bool) -> None:
        now = self.clock()
        with self.lock:
            # owners with no heartbeat row at all are looked for with the maintenance (a scan)
            adopted = self.assembler.adopt(self._claim(now, sweep=maintain), now)
            results = [adopted, self.assembler.expire(now)]
            if any(r.records or r.pending_released for r in results):
                self._commit(results, now)
            self.aggregator.expire(now)
        if maintain:
            st = self.settings.store
            self._check_clock()
            self.store.rollup(now - 60)
            self.store.apply_retention(now, st.record_retention_seconds, st.rollup_retention_seconds)

    def _check_clock(self) -> None:
        """Compare this replica's clock with the database's (PostgreSQL). A replica is gone when
        its heartbeat, written with its own clock, is `replica_gone_after_seconds` old by the
        reader's clock: clocks a quarter of that apart are logged at each maintenance, since at
        the whole of it replicas take over each other's live P/D halves."""
        db = self.store.clock()
        if db is None:
            return
        offset = self.clock() - db
        self.metrics.clock_offset.set(offset)
        allowed = self.settings.ingest.replica_gone_after_seconds / 4
        if abs(offset) > allowed:
            log.warning(
                "this replica's clock is off the database's; sync the clocks (NTP): replicas whose "
                "clocks differ by ingest.replica_gone_after_seconds take over each other's P/D halves",
                extra={
                    "offset_seconds": round(offset, 3),
                    "allowed_seconds": allowed,
                    "replica_id": self.owner,
                },
            )

    @property
    def housekeeping_tick_seconds(self) -> float:
        """Period of the housekeeping loop: P/D flush and window expiry, store probe, SLO sync
        (`sync_slos`); min(5 s, `ingest.pending_timeout_seconds` / 2)."""
        return min(HOUSEKEEPING_TICK_SECONDS, self.settings.ingest.pending_timeout_seconds / 2)

    async def _housekeeping(self) -> None:
        loop = asyncio.get_running_loop()
        tick = self.housekeeping_tick_seconds
        maint_every = self.settings.store.maintenance_interval_seconds
        last_maint = 0.0
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            maintain = now - last_maint >= maint_every
            if self.store_error is not None:
                await self._probe_store(loop)
            try:
                await loop.run_in_executor(self._writer_pool, self._expire_and_maintain, maintain)
                if maintain:
                    last_maint = now
            except Exception:
                log.exception("housekeeping failed; will retry")
            if self.store_error is None:  # an unavailable store: the probe above comes first
                try:
                    await loop.run_in_executor(self._writer_pool, self.sync_slos)
                except Exception as exc:
                    log.warning(
                        "reading the stored SLO set failed; will retry", extra={"error": _one_line(exc)}
                    )

    async def _probe_store(self, loop: asyncio.AbstractEventLoop) -> None:
        """After a failed write: an empty write transaction; its success makes the service ready
        again even when no batch arrives (an unready pod gets none)."""
        try:
            await loop.run_in_executor(self._writer_pool, self.store.write_batch, [])
        except Exception as exc:
            self.store_error = _one_line(exc)
            return
        log.info("store available again")
        self.store_error = None

    # ------------------------------------------------------------------ SLOs
    # The stored set wins (docs/storage.md, "SLOs: who wins"). It takes effect here through
    # `_apply_slos` only: at startup (`recover`), on a PUT to this replica (`replace_slos`), and
    # within one housekeeping tick of a PUT to another replica sharing the store (`sync_slos`).
    def replace_slos(self, slos: Sequence[SloSpec]) -> None:
        """PUT /api/v1/slos: store the new SLO set, then apply it here (`_apply_slos`)."""
        with self.lock:
            self.store.replace_slos(list(slos))
            self._apply_slos(slos, self.clock())

    def sync_slos(self) -> bool:
        """Housekeeping: apply the stored SLO set when it differs from the one judged here (a PUT
        to another replica sharing the store). Costs one read of the small `slos` table per tick;
        the rebuild (`_apply_slos`) runs only on a change. Returns whether the set changed."""
        with self.lock:  # serialized with a local PUT: a stale read is never applied after it
            stored = self.store.list_slos()
            if tuple(stored) == self.aggregator.slos:
                return False
            self._apply_slos(stored, self.clock())
        log.info(
            "applied the stored SLO set (changed by another replica)",
            extra={"slos": [s.name for s in stored]},
        )
        return True

    def _apply_slos(self, slos: Sequence[SloSpec], now: float) -> None:
        """Under `lock`: make `slos` the set judged and exported here. The windows are rebuilt
        exactly from the stored records of the longest window; the cumulative `slo_*` counters of
        unchanged SLOs go on, those of new or redefined SLOs restart at zero (a counter reset for
        Prometheus), those of removed SLOs are dropped (`Aggregator.set_slos`). Records ending
        more than `ingest.max_clock_skew_seconds` after `now` are left out, as ingest would
        refuse them now (docs/ingest.md, "end times from the future"): they are read in end-time
        order, so the read stops at the first."""
        since = now - self.settings.aggregation.max_window_seconds
        latest = now + self.settings.ingest.max_clock_skew_seconds
        stored = itertools.takewhile(lambda r: r.end_time <= latest, self.store.records_since(since))
        self.aggregator.set_slos(list(slos), stored, now)

    def slos(self) -> list[SloSpec]:
        """The stored SLO set: what `GET /api/v1/slos` answers and what the served alert rules
        and dashboards are generated from (blocking: one store read)."""
        return self.store.list_slos()

    def get_record(self, request_id: str) -> RequestRecord | None:
        return self.store.get_record(request_id)


# Upper bound of the housekeeping period (`Pipeline.housekeeping_tick_seconds`), hence of the delay
# before a PUT /api/v1/slos on one replica is judged and exported by the others.
HOUSEKEEPING_TICK_SECONDS = 5.0
# Pending P/D rows of gone replicas taken over per housekeeping tick (the rest at the next ones).
CLAIM_LIMIT = 10_000
_TYPICAL_WEIGHT = 0.25  # weight of the newest batch in the moving average of batch sizes


def _queue_full(limit: int) -> Throttled:
    return Throttled(429, f"more than {limit} spans waiting to be written, retry later")


def _stopping_error() -> Throttled:
    return Throttled(503, "pd-observer is stopping and did not write this batch; retry (another replica)")


def _retrieve(future: asyncio.Future[int]) -> None:
    """Mark a job's exception as seen: its request may have gone (timed out, disconnected)."""
    if not future.cancelled():
        future.exception()


def _one_line(exc: BaseException) -> str:
    text = " ".join((str(exc).splitlines() or [""])[0].split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _status_label(status: int) -> str:
    return {400: "bad_request", 401: "unauthorized", 413: "too_large", 415: "unsupported"}.get(
        status, "error"
    )


def _response_type(content_type: str | None) -> str:
    if content_type and content_type.split(";")[0].strip().lower() == c.CT_JSON:
        return c.CT_JSON
    return c.CT_PROTOBUF


def default_replica_id() -> str:
    """The hostname: the pod name in Kubernetes, so a container restarted in its pod (kill -9,
    OOM) takes its own halves back at once. Several processes on one host sharing a database
    need distinct `ingest.replica_id`s."""
    return socket.gethostname()
