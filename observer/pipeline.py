"""The ingest pipeline: decode off the event loop, a bounded write queue, durable group commit.

    HTTP body ──decode+resolve (thread pool)──▶ bounded queue ──writer thread──▶
        assemble P/D traces → store.write_batch (ONE transaction) → aggregator.add → ack

A batch is answered 200 only after the transaction holding its records (and the P/D halves still
waiting for a partner) has committed, so a kill -9 never loses an acknowledged batch: on restart the
pending halves are restored and the windows are rebuilt from the stored records.

All mutable state (assembler, aggregator) is touched by the single writer thread or under `lock`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
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
from observer.model import RequestRecord, SloSpec
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


@dataclass
class _Job:
    batch: ResolvedBatch
    future: asyncio.Future[int]
    loop: asyncio.AbstractEventLoop


@dataclass
class IngestMetrics:
    spans: Counter
    batches: Counter
    incomplete: Counter
    rewritten: Counter
    queue_depth: Gauge
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
            rewritten=Counter(
                c.M_INGEST_VALUES_REWRITTEN,
                "span strings rewritten before use: NUL or lone surrogates replaced, or cut past "
                "the length limit (docs/ingest.md, untrusted strings)",
                registry=registry,
            ),
            queue_depth=Gauge(
                c.M_INGEST_QUEUE_DEPTH, "OTLP batches waiting to be written", registry=registry
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

    def __post_init__(self) -> None:
        s = self.settings
        self.resolve_cfg = ResolveConfig.from_settings(s.ingest)
        self.assembler = TraceAssembler(s.ingest.max_pending_traces, s.ingest.pending_timeout_seconds)
        self.aggregator = Aggregator(s.aggregation, s.slo_specs())
        self.metrics = IngestMetrics.create(self.registry)
        self._decode_pool = ThreadPoolExecutor(s.server.decode_workers, thread_name_prefix="otlp-decode")
        self._writer_pool = ThreadPoolExecutor(1, thread_name_prefix="store-writer")
        self._queue: asyncio.Queue[_Job] | None = None
        # Group commit (event-loop state only): batches being decoded, and a wake-up for the
        # writer when one was queued or finished decoding.
        self._decoding = 0
        self._arrived = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self.ready = False

    # ------------------------------------------------------------------ lifecycle
    def recover(self) -> None:
        """Blocking: migrate, seed SLOs, restore pending P/D halves, rebuild windows from the store."""
        now = self.clock()
        self.store.upgrade()
        slos = self.store.seed_slos(list(self.settings.slo_specs()))
        since = now - self.settings.aggregation.max_window_seconds
        with self.lock:
            self.assembler.restore(self.store.load_pending(), now)
            self.aggregator.set_slos(slos, self.store.records_since(since), now)
            self.metrics.pending.set(self.assembler.pending_count)
        log.info("recovered", extra={"pending": self.assembler.pending_count, "since": since})

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
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

    async def stop(self) -> None:
        """Stop taking batches, drain the queue (every accepted batch is written), then stop."""
        self._stopping = True
        self.ready = False
        if self._queue is not None:
            grace = self.settings.server.shutdown_grace_seconds
            try:
                await asyncio.wait_for(self._queue.join(), timeout=grace)
            except TimeoutError:
                log.warning("shutdown grace elapsed with batches still queued")
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._decode_pool.shutdown(wait=True)
        self._writer_pool.shutdown(wait=True)

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
                self._decode_pool, self.decode, body, content_type, content_encoding
            )
        except IngestError as exc:
            self.metrics.batches.labels(_status_label(exc.status)).inc()
            raise
        finally:
            self._decoding -= 1
            self._arrived.set()  # queued below, or failed: a lingering writer re-checks either way
        job = _Job(batch=batch, future=loop.create_future(), loop=loop)
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self.metrics.batches.labels("throttled").inc()
            raise Throttled(429, "ingest queue full, retry later") from None
        self.metrics.queue_depth.set(self._queue.qsize())
        try:
            await job.future
        except IngestError as exc:
            self.metrics.batches.labels(_status_label(exc.status)).inc()
            raise
        accepted = len(batch.engine)
        self.metrics.spans.labels("accepted").inc(accepted)
        self.metrics.spans.labels("rejected").inc(batch.rejected)
        self.metrics.spans.labels("ignored").inc(batch.ignored)
        self.metrics.rewritten.inc(batch.rewritten)
        ct = _response_type(content_type)
        message = error_message(batch.errors)
        self.metrics.batches.labels("partial" if batch.rejected else "ok").inc()
        return IngestOutcome(200, encode_response(batch.rejected, message, ct), ct, accepted, batch.rejected)

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
                self.metrics.queue_depth.set(queue.qsize())

    async def _write_jobs(self, jobs: Sequence[_Job], loop: asyncio.AbstractEventLoop) -> None:
        """One transaction for the jobs' batches. When a transaction of several fails, each
        batch is written again alone, so one batch the store refuses (or one that breaks it)
        fails only its own request. A batch refused for its data is answered 400 (retrying it
        cannot succeed); any other failure 503."""
        try:
            await loop.run_in_executor(self._writer_pool, self._write, [j.batch for j in jobs])
        except Exception as exc:
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
            if not jobs[0].future.done():
                jobs[0].future.set_exception(error)
        else:
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
            new = self.store.write_batch(records, added, released)
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
        s = self.settings.ingest
        self.assembler = TraceAssembler(s.max_pending_traces, s.pending_timeout_seconds)
        self.assembler.restore(self.store.load_pending(), now)

    # ------------------------------------------------------------------ periodic work
    def _expire_and_maintain(self, maintain: bool) -> None:
        now = self.clock()
        with self.lock:
            res = self.assembler.expire(now)
            if res.records or res.pending_released:
                self._commit([res], now)
            self.aggregator.expire(now)
        if maintain:
            st = self.settings.store
            self.store.rollup(now - 60)
            self.store.apply_retention(now, st.record_retention_seconds, st.rollup_retention_seconds)

    async def _housekeeping(self) -> None:
        loop = asyncio.get_running_loop()
        tick = min(5.0, self.settings.ingest.pending_timeout_seconds / 2)
        maint_every = self.settings.store.maintenance_interval_seconds
        last_maint = 0.0
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            maintain = now - last_maint >= maint_every
            try:
                await loop.run_in_executor(self._writer_pool, self._expire_and_maintain, maintain)
                if maintain:
                    last_maint = now
            except Exception:
                log.exception("housekeeping failed; will retry")

    # ------------------------------------------------------------------ SLOs
    def replace_slos(self, slos: Sequence[SloSpec]) -> None:
        """Store the new SLO set and rebuild the SLO counters exactly from stored records."""
        now = self.clock()
        since = now - self.settings.aggregation.max_window_seconds
        with self.lock:
            self.store.replace_slos(list(slos))
            self.aggregator.set_slos(list(slos), self.store.records_since(since), now)

    def get_record(self, request_id: str) -> RequestRecord | None:
        return self.store.get_record(request_id)


def _status_label(status: int) -> str:
    return {400: "bad_request", 401: "unauthorized", 413: "too_large", 415: "unsupported"}.get(
        status, "error"
    )


def _response_type(content_type: str | None) -> str:
    if content_type and content_type.split(";")[0].strip().lower() == c.CT_JSON:
        return c.CT_JSON
    return c.CT_PROTOBUF
