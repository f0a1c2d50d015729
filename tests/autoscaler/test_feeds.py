"""The control loop inside `serve` with several ingest replicas on one store (`FleetRecordFeed`):
the leader saw only the records its own replica ingested (1/N of the fleet's demand) and sized
the pools for that; it now adds the other live replicas' records from the store, each once."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient

from autoscaler.audit import MemoryAuditLog
from autoscaler.feeds import FleetRecordFeed
from autoscaler.loop import Controller
from autoscaler.observe import RecordWindow, pool_by_pod_prefix
from autoscaler.ports import InMemoryScaleTarget, ManualClock
from autoscaler.service import attach
from autoscaler.types import RoleStatus
from observer import conventions as c
from observer.model import RequestRecord
from observer.store import MemoryStore
from tests.autoscaler.inservice import llama_settings, observe_factory
from tests.observer.store.factories import record

GONE = 60.0
T = 10_000.0


def rec(i: int, end: float, prefix: str) -> RequestRecord:
    base = record(i, end, prefix=prefix)
    return replace(base, prefill_pod="llama-prefill-1", decode_pod="llama-decode-2")


class CountingStore(MemoryStore):
    """Counts the window reads; fails them while `fail` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.fail = False

    def records_since(self, t: float, chunk_size: int = 1000) -> Iterator[RequestRecord]:
        self.reads += 1
        if self.fail:
            raise OSError("the database went away")
        return super().records_since(t, chunk_size)


def feed_on(store: MemoryStore) -> tuple[FleetRecordFeed, RecordWindow]:
    window = RecordWindow(pool_by_pod_prefix(["llama"]), window_seconds=60.0)
    window.start(T - 60)
    return FleetRecordFeed(store, window, owner="a", gone_after=GONE), window


def ids(window: RecordWindow, now: float) -> list[str]:
    return sorted(r.request_id for r in window.window("llama", now))


def test_alone_the_window_is_this_replicas_records_and_the_store_is_not_read() -> None:
    store = CountingStore()
    store.claim_pending("a", T, GONE, limit=1)  # this replica's heartbeat
    feed, window = feed_on(store)
    feed.add_records([rec(1, T - 5, "a")], T)
    assert feed.poll(T) == 0
    assert store.reads == 0
    assert ids(window, T) == ["a-1"]
    assert feed.complete


def test_with_another_live_replica_its_records_are_added_and_each_record_once() -> None:
    store = CountingStore()
    store.claim_pending("a", T, GONE, limit=1)
    store.claim_pending("b", T, GONE, limit=1)
    mine = [rec(i, T - 30 + i, "a") for i in range(3)]
    theirs = [rec(i, T - 30 + i, "b") for i in range(4)]
    feed, window = feed_on(store)
    feed.add_records(mine[:2], T - 20)  # committed here and passed to the listener...
    store.write_batch(mine + theirs)  # ...and all of them in the store
    assert feed.poll(T) == 5  # b's four and mine[2], which the listener has not passed yet
    feed.add_records(mine[2:], T)  # the listener comes after the poll: not added twice
    assert feed.poll(T + 1) == 0
    assert ids(window, T + 1) == sorted(r.request_id for r in mine + theirs)
    assert feed.others == ("b",)
    # b stops: the store is no longer read, and b's records age out of the window
    store.retire("b")
    reads = store.reads
    assert feed.poll(T + 2) == 0
    assert store.reads == reads
    assert feed.others == ()


def test_an_unreadable_store_with_others_live_is_not_the_fleets_demand() -> None:
    store = CountingStore()
    store.claim_pending("a", T, GONE, limit=1)
    store.claim_pending("b", T, GONE, limit=1)
    feed, _ = feed_on(store)
    assert feed.poll(T) == 0
    assert feed.complete
    store.fail = True
    feed.poll(T + 15)
    assert not feed.complete  # the loop holds (stale) rather than size for a part of the fleet
    store.fail = False
    feed.poll(T + 30)
    assert feed.complete


def test_ids_are_remembered_for_two_windows_and_at_most_max_ids() -> None:
    store = MemoryStore()
    window = RecordWindow(pool_by_pod_prefix(["llama"]), window_seconds=60.0)
    feed = FleetRecordFeed(store, window, owner="a", gone_after=GONE, max_ids=100)
    feed.add_records([rec(i, T + i * 0.01, "a") for i in range(100)], T)
    feed.add_records([rec(1000, T + 121, "a")], T + 125)  # the first 100 are two windows old
    assert len(feed._ids) == 1
    feed.add_records([rec(i, T + 130 + i * 0.01, "b") for i in range(150)], T + 131)
    assert len(feed._ids) <= 151


@pytest.mark.parametrize("other_live", [True, False])
def test_the_loop_inside_serve_sizes_for_every_live_replicas_records(other_live: bool) -> None:
    """End to end through `attach` and the pipeline: replica b's records (written by b to the
    shared store) count in the demand of the loop inside replica a while b is live."""
    settings = llama_settings(ingest={"replica_id": "a"})
    scale = InMemoryScaleTarget({("llama", r): RoleStatus(3, 3) for r in (c.ROLE_PREFILL, c.ROLE_DECODE)})
    clock = ManualClock(T)
    made: list[Controller] = []
    factory = observe_factory(scale, clock, made)

    store = MemoryStore()
    att = attach(settings, controller_factory=factory, audit_log=MemoryAuditLog(), background=False)
    from observer.api.app import create_app

    app = create_app(
        settings, store, extra_routers=list(att.routers), on_startup=list(att.on_startup), clock=clock.now
    )
    with TestClient(app) as client:
        pipeline = app.state.pipeline
        mine = [rec(i, T - 10 + i * 0.1, "a") for i in range(30)]
        store.write_batch(mine)
        pipeline.listeners[-1](mine, T)  # as the pipeline passes its commits
        store.claim_pending("b", T if other_live else T - 2 * GONE, GONE, limit=1)  # b's heartbeat
        store.write_batch([rec(i, T - 10 + i * 0.1, "b") for i in range(90)])  # b's commits
        made[0].tick()
        body = client.get("/api/v1/decisions").json()["decisions"]
    assert body[0]["inputs"]["demand"]["requests_per_s"] > 0
    # b ingested 3/4 of the fleet: counted while b is live, aged out once b is gone
    assert len(att.window.window("llama", T)) == (120 if other_live else 30)
