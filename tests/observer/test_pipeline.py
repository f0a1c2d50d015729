"""Pipeline behaviour that needs a controllable store or decoder: back-pressure, failed commits,
group commit."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest
from prometheus_client import CollectorRegistry

from observer import conventions as c
from observer.config import load_settings
from observer.ingest.otlp import IngestError
from observer.ingest.resolve import ResolvedBatch
from observer.model import EngineSpan, RequestRecord
from observer.pipeline import Pipeline, Throttled
from observer.store import MemoryStore, StoreRejected
from tests.support.otel import Req, VllmSpans, encode


class GatedStore(MemoryStore):
    """The in-memory store whose commits wait for a gate, or fail on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.fail = False

    def write_batch(
        self,
        records: Sequence[RequestRecord],
        pending_added: Sequence[EngineSpan] = (),
        pending_released: Sequence[str] = (),
        *,
        owner: str = "",
    ) -> list[RequestRecord]:
        self.gate.wait(10)
        if self.fail:
            raise OSError("disk full")
        return super().write_batch(records, pending_added, pending_released, owner=owner)


def body(tenant: str) -> bytes:
    sp = VllmSpans()
    # request ids are the store's dedupe key: one per tenant here
    sp.aggregated(Req(tenant, prompt=10, output=2, start=time.time() - 1, request_id=f"req-{tenant}"))
    return encode(sp.take())


def make(store: MemoryStore, queue: int = 1) -> Pipeline:
    settings = load_settings(
        None, overrides={"server": {"ingest_queue_size": queue}, "store": {"write_batch_max": 1}}, env={}
    )
    return Pipeline(settings=settings, store=store, registry=CollectorRegistry())


def many(tenant: str, n: int) -> bytes:
    """One batch of `n` aggregated requests (n engine spans) of `tenant`."""
    sp = VllmSpans()
    for i in range(n):
        sp.aggregated(Req(tenant, prompt=10, output=2, start=time.time() - 1, request_id=f"req-{tenant}-{i}"))
    return encode(sp.take())


async def test_full_queue_answers_429_and_accepted_batches_are_all_written() -> None:
    store = GatedStore()
    p = make(store, queue=1)
    await p.start()
    try:
        first = asyncio.create_task(p.ingest(body("a"), c.CT_PROTOBUF, None))  # taken by the writer
        await asyncio.sleep(0.2)
        second = asyncio.create_task(p.ingest(body("b"), c.CT_PROTOBUF, None))  # fills the queue
        await asyncio.sleep(0.2)
        with pytest.raises(Throttled) as exc:
            await p.ingest(body("c"), c.CT_PROTOBUF, None)
        assert exc.value.status == 429
        store.gate.set()
        assert (await first).status == 200
        assert (await second).status == 200
        tenants = {s.tenant for s in p.aggregator.tenants(300, time.time())}
        assert tenants == {"a", "b"}
    finally:
        store.gate.set()
        await p.stop()
    with pytest.raises(Throttled) as exc:
        await p.ingest(body("d"), c.CT_PROTOBUF, None)
    assert exc.value.status == 503


class CountingDecodes(Pipeline):
    """Counts the bodies actually decoded."""

    decoded = 0

    def decode(self, body: bytes, content_type: str | None, content_encoding: str | None) -> ResolvedBatch:
        self.decoded += 1
        return super().decode(body, content_type, content_encoding)


async def test_queued_spans_are_bounded_whatever_the_batch_count() -> None:
    """server.max_queued_spans bounds the decoded spans waiting for the writer (their memory and
    their wait) where the batch count alone would not: a batch that would pass it gets 429 with
    the queue far from full; one larger than the bound is still taken into an empty queue; the
    bound is given back as batches are written; and while the queue has no room for a batch of
    the recent size, a batch is refused before it is decoded (no CPU spent on it)."""
    store = GatedStore()
    settings = load_settings(
        None,
        overrides={
            "server": {"ingest_queue_size": 64, "max_queued_spans": 20},
            "store": {"write_batch_max": 1},
        },
        env={},
    )
    p = CountingDecodes(settings=settings, store=store, registry=CollectorRegistry())
    reading = p.registry.get_sample_value
    await p.start()
    try:
        big = asyncio.create_task(p.ingest(many("big", 24), c.CT_PROTOBUF, None))  # > bound, empty queue
        await asyncio.sleep(0.2)
        assert reading(c.M_INGEST_QUEUED_SPANS) == 24
        assert p.decoded == 1
        with pytest.raises(Throttled) as exc:
            await p.ingest(many("small", 1), c.CT_PROTOBUF, None)
        assert exc.value.status == 429
        assert "spans waiting to be written" in str(exc.value)
        assert p.decoded == 1  # refused before decoding
        store.gate.set()
        assert (await big).status == 200
        assert reading(c.M_INGEST_QUEUED_SPANS) == 0
        store.gate.clear()
        first = asyncio.create_task(p.ingest(many("a", 10), c.CT_PROTOBUF, None))
        await asyncio.sleep(0.2)
        with pytest.raises(Throttled):
            await p.ingest(many("b", 12), c.CT_PROTOBUF, None)  # decoded: 10 + 12 > 20
        assert p.decoded == 3
        fits = asyncio.create_task(p.ingest(many("c", 8), c.CT_PROTOBUF, None))  # 10 + 8 <= 20
        await asyncio.sleep(0.2)
        assert reading(c.M_INGEST_QUEUED_SPANS) == 18
        store.gate.set()
        assert (await first).status == 200
        assert (await fits).status == 200
        assert reading(c.M_INGEST_QUEUED_SPANS) == 0
        assert {s.tenant for s in p.aggregator.tenants(300, time.time())} == {"big", "a", "c"}
    finally:
        store.gate.set()
        await p.stop()


async def test_a_failed_commit_is_never_acknowledged_and_state_stays_consistent() -> None:
    store = GatedStore()
    store.gate.set()
    p = make(store, queue=4)
    await p.start()
    try:
        store.fail = True
        with pytest.raises(Throttled) as exc:
            await p.ingest(body("lost"), c.CT_PROTOBUF, None)
        assert exc.value.status == 503
        assert p.aggregator.tenants(300, time.time()) == ()
        store.fail = False
        out = await p.ingest(body("kept"), c.CT_PROTOBUF, None)
        assert out.status == 200
        assert [s.tenant for s in p.aggregator.tenants(300, time.time())] == ["kept"]
    finally:
        await p.stop()


# -- group commit ----------------------------------------------------------------------------------
class CountingStore(MemoryStore):
    """The in-memory store, remembering how many records each transaction held."""

    def __init__(self) -> None:
        super().__init__()
        self.transactions: list[int] = []

    def write_batch(
        self,
        records: Sequence[RequestRecord],
        pending_added: Sequence[EngineSpan] = (),
        pending_released: Sequence[str] = (),
        *,
        owner: str = "",
    ) -> list[RequestRecord]:
        self.transactions.append(len(records))
        return super().write_batch(records, pending_added, pending_released, owner=owner)


class SlowDecodePipeline(Pipeline):
    """Decoding takes `decode_seconds` (one decode worker): batches are in flight one after another."""

    decode_seconds = 0.1

    def decode(self, body: bytes, content_type: str | None, content_encoding: str | None) -> ResolvedBatch:
        time.sleep(self.decode_seconds)
        return super().decode(body, content_type, content_encoding)


def grouping(store: MemoryStore, wait_ms: float, max_spans: int = 16_384, slow: bool = True) -> Pipeline:
    settings = load_settings(
        None,
        overrides={
            "server": {"decode_workers": 1},
            "store": {"group_commit_max_wait_ms": wait_ms, "group_commit_max_spans": max_spans},
        },
        env={},
    )
    cls = SlowDecodePipeline if slow else Pipeline
    return cls(settings=settings, store=store, registry=CollectorRegistry())


async def _send_all(p: Pipeline, tenants: Sequence[str], store: MemoryStore) -> list[int]:
    """Send every body at once; for each, the number of stored records when its 200 came back."""

    async def one(t: str) -> int:
        out = await p.ingest(body(t), c.CT_PROTOBUF, None)
        assert out.status == 200
        return store.count_records()

    return list(await asyncio.gather(*(one(t) for t in tenants)))


async def test_group_commit_lingers_while_batches_are_decoding() -> None:
    store = CountingStore()
    p = grouping(store, wait_ms=5_000)
    await p.start()
    try:
        seen = await _send_all(p, [f"t{i}" for i in range(5)], store)
    finally:
        await p.stop()
    # one transaction for the five batches, and no batch answered before it committed
    assert store.transactions == [5]
    assert seen == [5] * 5


async def test_without_linger_each_decoded_batch_commits_alone() -> None:
    store = CountingStore()
    p = grouping(store, wait_ms=0)
    await p.start()
    try:
        await _send_all(p, [f"t{i}" for i in range(5)], store)
    finally:
        await p.stop()
    assert sum(store.transactions) == 5
    assert len(store.transactions) >= 3  # decodes finish 100 ms apart: nothing to group


async def test_group_commit_caps_spans_per_transaction() -> None:
    store = CountingStore()
    p = grouping(store, wait_ms=5_000, max_spans=2)
    await p.start()
    try:
        await _send_all(p, [f"t{i}" for i in range(5)], store)
    finally:
        await p.stop()
    assert sum(store.transactions) == 5
    assert max(store.transactions) <= 2


async def test_group_commit_linger_is_bounded() -> None:
    store = CountingStore()
    p = grouping(store, wait_ms=50)
    SlowDecodePipeline.decode_seconds = 0.3
    await p.start()
    try:
        await _send_all(p, ["a", "b", "c"], store)
    finally:
        SlowDecodePipeline.decode_seconds = 0.1
        await p.stop()
    # the next batch is 300 ms away, the linger 50 ms: every batch commits alone
    assert store.transactions == [1, 1, 1]


async def test_light_load_never_lingers() -> None:
    store = CountingStore()
    p = grouping(store, wait_ms=5_000, slow=False)
    await p.start()
    try:
        for t in ("a", "b", "c"):
            start = time.perf_counter()
            assert (await p.ingest(body(t), c.CT_PROTOBUF, None)).status == 200
            assert time.perf_counter() - start < 2.0  # far below the 5 s linger
    finally:
        await p.stop()
    assert store.transactions == [1, 1, 1]


class PickyStore(CountingStore):
    """Refuses any transaction holding a record of tenant `poison` (as a database refuses a value
    it cannot hold), and fails any holding tenant `breaker` (an error of another kind)."""

    def write_batch(
        self,
        records: Sequence[RequestRecord],
        pending_added: Sequence[EngineSpan] = (),
        pending_released: Sequence[str] = (),
        *,
        owner: str = "",
    ) -> list[RequestRecord]:
        tenants = {r.tenant for r in records}
        if "poison" in tenants:
            self.transactions.append(-len(records))
            raise StoreRejected("DataError: PostgreSQL text fields cannot contain NUL (0x00) bytes")
        if "breaker" in tenants:
            self.transactions.append(-len(records))
            raise OSError("connection reset")
        return super().write_batch(records, pending_added, pending_released, owner=owner)


async def test_a_batch_the_store_refuses_fails_alone_in_a_group_commit() -> None:
    store = PickyStore()
    p = grouping(store, wait_ms=5_000)
    await p.start()
    tenants = ["t0", "poison", "t1", "breaker", "t2"]
    try:
        outcomes = await asyncio.gather(
            *(p.ingest(body(t), c.CT_PROTOBUF, None) for t in tenants), return_exceptions=True
        )
    finally:
        await p.stop()
    by_tenant = dict(zip(tenants, outcomes, strict=True))
    # the five were one transaction, which failed; then each batch alone: three commit
    assert store.transactions[0] == -5
    assert sorted(store.transactions[1:]) == [-1, -1, 1, 1, 1]
    assert all(getattr(by_tenant[t], "status", None) == 200 for t in ("t0", "t1", "t2"))
    refused, broken = by_tenant["poison"], by_tenant["breaker"]
    assert isinstance(refused, IngestError)
    assert refused.status == 400
    assert "NUL" in str(refused)
    assert isinstance(broken, Throttled)
    assert broken.status == 503
    assert {s.tenant for s in p.aggregator.tenants(300, time.time())} == {"t0", "t1", "t2"}
    assert store.count_records() == 3


def _pending_pipeline(store: MemoryStore, max_pending: int = 10) -> Pipeline:
    settings = load_settings(None, overrides={"ingest": {"max_pending_traces": max_pending}}, env={})
    return Pipeline(settings=settings, store=store, registry=CollectorRegistry())


def test_halves_the_restore_flushes_are_written_not_dropped() -> None:
    """More stored P/D halves than `max_pending_traces` at startup (or after a smaller limit):
    the restore flushes the oldest as incomplete records, which were thrown away, their rows
    left behind, and their partners later taken as late: the requests vanished."""
    from tests.observer.store.factories import engine_span

    store = MemoryStore()
    halves = [engine_span(i, end=time.time() - 10 + i) for i in range(3)]
    store.write_batch([], halves)
    p = _pending_pipeline(store, max_pending=2)
    p.recover()
    oldest = store.get_record(halves[0].request_id)
    assert oldest is not None
    assert not oldest.complete
    assert [s.span_id for s in store.load_pending()] == [h.span_id for h in halves[1:]]
    assert p.assembler.pending_count == 2


class FailOnceStore(MemoryStore):
    """The in-memory store whose next write fails (rolled back) once `fail` is set."""

    fail = False

    def write_batch(self, *args: object, **kw: object) -> list[RequestRecord]:
        if self.fail:
            self.fail = False
            raise RuntimeError("the database went away")
        return super().write_batch(*args, **kw)  # type: ignore[arg-type]


async def test_a_failed_write_rebuilds_only_this_replicas_halves() -> None:
    """After a rolled-back write the assembler is rebuilt from the store. It took every pending
    row of the database, those of the other replicas too, and then flushed them here as
    incomplete (or evicted them): it now takes back only the halves it held."""
    from tests.observer.store.factories import engine_span

    store = FailOnceStore()
    p = _pending_pipeline(store)
    p.recover()
    mine, theirs = engine_span(1, end=time.time()), engine_span(2, end=time.time())
    p._write([ResolvedBatch((mine,), {}, 0, (), 0)])
    store.write_batch([], [theirs], owner="replica-b")  # another replica on the same database
    store.fail = True
    with pytest.raises(RuntimeError):
        p._write([ResolvedBatch((engine_span(3, end=time.time()),), {}, 0, (), 0)])
    assert [s.span_id for s in p.assembler.pending_spans()] == [mine.span_id]


def test_a_rebuild_leaves_out_stored_records_from_beyond_the_clock_skew() -> None:
    """Records stored before ingest refused end times from the future: a rebuild of the windows
    (a restart, an SLO change) does not count one that ends past `now` + the skew allowance
    (it would count it in the bucket of `now`, again after each rebuild); one within it counts."""
    from tests.observer.store.factories import record

    now = time.time()
    store = MemoryStore()
    store.write_batch([record(0, now - 30), record(1, now + 100), record(2, now + 86_400)])
    settings = load_settings(None, overrides={"ingest": {"max_clock_skew_seconds": 300}}, env={})
    p = Pipeline(settings=settings, store=store, registry=CollectorRegistry(), clock=lambda: now)
    p.recover()
    (acme,) = p.aggregator.tenants(300, now)
    assert acme.requests == 2
