"""What feeds the control loop's `RecordWindow` inside `serve` when several ingest replicas share
the store.

Each `serve` replica ingests only the traces the Collector's load balancer sends it. Fed by its
own pipeline alone, the loop inside the leading replica saw 1/N of the fleet's demand and sized
the pools for it. `FleetRecordFeed` adds the other replicas' records, read from the store each
tick, while other replicas are live (their heartbeats, `RecordStore.live_replicas`); alone, it
costs no read.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Sequence
from typing import Protocol

from autoscaler.observe import RecordWindow
from observer.model import RequestRecord
from observer.store import RecordStore

log = logging.getLogger(__name__)


class RecordFeed(Protocol):
    """Adds the records seen since the last call to a `RecordWindow`, once per control tick."""

    def poll(self, now: float) -> int: ...


class FleetRecordFeed:
    """The record window of the loop inside `serve`: this replica's records as its pipeline
    commits them (`add_records`, a `Pipeline.listeners` entry) and, while other ingest replicas
    are live, every record of the window read from the store once per tick (`poll`). A record is
    added once whichever path sees it first (request ids remembered for two windows, at most
    `max_ids`). `complete` is False while the store could not be read with others live: the loop
    must not take the window for the fleet's demand then."""

    def __init__(
        self,
        store: RecordStore,
        window: RecordWindow,
        *,
        owner: str,
        gone_after: float,
        max_ids: int = 1_000_000,
    ) -> None:
        self.store = store
        self.window = window
        self.owner = owner
        self.gone_after = gone_after
        self.max_ids = max_ids
        self.others: tuple[str, ...] = ()  # other live ingest replicas at the last poll
        self.complete = True
        self._lock = threading.Lock()
        self._ids: set[str] = set()
        self._order: deque[tuple[float, str]] = deque()  # (end time, request id), as added

    def add_records(self, records: Sequence[RequestRecord], now: float) -> None:
        """Pipeline listener (writer thread): a set lookup per record."""
        self.window.add_records(self._fresh(records, now), now)

    def poll(self, now: float) -> int:
        """Once per tick: with other ingest replicas live, add the window's records not added yet
        (theirs, and any of this replica's the listener has not passed yet). Returns how many."""
        try:
            others = tuple(o for o in self.store.live_replicas(now, self.gone_after) if o != self.owner)
            fetched = list(self.store.records_since(now - self.window.window_seconds)) if others else []
        except Exception as exc:
            if self.complete:
                log.warning(
                    "could not read the other ingest replicas' records: holding on this replica's view",
                    extra={"error": f"{type(exc).__name__}: {exc}".splitlines()[0]},
                )
            self.complete = not self.others
            return 0
        if others != self.others:
            log.info(
                "other ingest replicas: their records feed the control loop"
                if others
                else "no other ingest replica: the control loop is fed by this replica alone",
                extra={"replicas": list(others)},
            )
        self.others, self.complete = others, True
        fresh = self._fresh(fetched, now)
        self.window.add_records(fresh, now)
        return len(fresh)

    def _fresh(self, records: Sequence[RequestRecord], now: float) -> list[RequestRecord]:
        keep_after = now - 2 * self.window.window_seconds
        with self._lock:
            ids, order = self._ids, self._order
            while order and (order[0][0] < keep_after or len(order) > self.max_ids):
                ids.discard(order.popleft()[1])
            fresh = [r for r in records if r.request_id not in ids]
            for r in fresh:
                ids.add(r.request_id)
                order.append((r.end_time, r.request_id))
        return fresh
