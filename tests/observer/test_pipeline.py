"""Pipeline behaviour that needs a controllable store: back-pressure and failed commits."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest
from prometheus_client import CollectorRegistry

from observer import conventions as c
from observer.config import load_settings
from observer.model import EngineSpan, RequestRecord
from observer.pipeline import Pipeline, Throttled
from observer.store import MemoryStore
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
    ) -> list[RequestRecord]:
        self.gate.wait(10)
        if self.fail:
            raise OSError("disk full")
        return super().write_batch(records, pending_added, pending_released)


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
