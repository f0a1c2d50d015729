"""The standalone autoscaler's record feed (`StoreRecordFeed`): it reads the records from the
store, where a record can be committed well after it ended."""

from __future__ import annotations

from autoscaler.observe import RecordWindow
from autoscaler.service import StoreRecordFeed
from observer.store import MemoryStore
from tests.observer.store.factories import record

T = 1_800_000_000.0


def test_records_committed_after_the_next_poll_are_still_fed_once() -> None:
    """A batch answered 503 or 429 and resent, a P/D half flushed at its 30 s timeout, or clock
    skew: the record ends, a poll passes, then it is committed. Reading only what ended since
    the previous poll (less 5 s) missed it (200 of 600 records under overload)."""
    store = MemoryStore()
    window = RecordWindow(lambda r: "p", window_seconds=60.0)
    feed = StoreRecordFeed(store, window)
    store.write_batch([record(i, T - 20 + i * 0.1, prefix="on-time") for i in range(100)])
    assert feed.poll(T) == 100
    late = [record(i, T - 7, prefix="late") for i in range(400)]  # ended before that poll...
    store.write_batch(late)  # ...committed after it
    assert feed.poll(T + 15) == 400
    assert feed.poll(T + 30) == 0  # each record once
    assert len(window.window("p", T + 30)) == 500
