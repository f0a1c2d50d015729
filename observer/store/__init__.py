"""Storage of request records, pending P/D spans, SLOs and per-minute rollups.

`RecordStore` is what the service needs; `Store` (SQLAlchemy: SQLite or PostgreSQL, see
docs/storage.md) and `MemoryStore` (in-memory, same semantics) implement it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from observer.model import EngineSpan, RequestRecord, SloSpec
from observer.store.memory import MemoryStore
from observer.store.repository import Store
from observer.store.types import RollupRow, RollupWatermark, StoreRejected


class RecordStore(Protocol):
    """Durable state of pd-observer. Write methods are called from one writer thread."""

    def upgrade(self) -> None:
        """Bring the schema to the newest revision (no-op for the in-memory store)."""
        ...

    def write_batch(
        self,
        records: Sequence[RequestRecord],
        pending_added: Sequence[EngineSpan] = (),
        pending_released: Sequence[str] = (),
        *,
        owner: str = "",
    ) -> list[RequestRecord]:
        """Atomically store new records (deduplicated by request_id), add pending spans (held by
        the ingest replica `owner`) and release pending spans; return only the records that were
        not stored before. Raises StoreRejected when the database refuses the data itself
        (nothing is written)."""
        ...

    def load_pending(self, owner: str | None = None) -> list[EngineSpan]:
        """The pending spans `owner` holds (every one with None), oldest end time first."""
        ...

    def claim_pending(
        self, owner: str, now: float, gone_after: float, *, limit: int, sweep: bool = False
    ) -> list[EngineSpan]:
        """Record `owner`'s heartbeat, take over at most `limit` pending spans of gone ingest
        replicas and return them (see `Store.claim_pending`)."""
        ...

    def live_replicas(self, now: float, gone_after: float) -> list[str]:
        """The ingest replicas with a heartbeat at most `gone_after` old at `now`, sorted."""
        ...

    def retire(self, owner: str) -> None:
        """`owner` stops: other replicas take over its pending spans at their next claim."""
        ...

    def clock(self) -> float | None:
        """The database server's clock (epoch seconds); None for a store with no clock of its own
        (SQLite and in memory: one host). Heartbeats compare the replicas' clocks, so the
        pipeline checks its own against this one (docs/ingest.md, "Several replicas")."""
        ...

    def records_since(self, t: float, chunk_size: int = ...) -> Iterator[RequestRecord]:
        """Records with end_time >= t in end-time order (for rebuilding windows on restart)."""
        ...

    def get_record(self, request_id: str) -> RequestRecord | None: ...

    def records_by_trace(self, trace_id: str) -> list[RequestRecord]: ...

    def count_records(self) -> int: ...

    def list_slos(self) -> list[SloSpec]: ...

    def replace_slos(self, specs: Sequence[SloSpec]) -> None:
        """PUT: the stored SLO set becomes exactly `specs`."""
        ...

    def slos_initialized(self) -> bool: ...

    def seed_slos(self, specs: Sequence[SloSpec]) -> list[SloSpec]:
        """Store `specs` only the first time; afterwards return the stored set (the DB wins)."""
        ...

    def watermark(self) -> RollupWatermark | None: ...

    def rollup(self, up_to: float) -> int: ...

    def rollups(
        self, since: float, until: float | None = None, tenant: str | None = None
    ) -> list[RollupRow]: ...

    def apply_retention(
        self, now: float, record_retention_s: int, rollup_retention_s: int, chunk_size: int = ...
    ) -> tuple[int, int]: ...

    def close(self) -> None: ...


def _conforms(memory: MemoryStore, sql: Store) -> tuple[RecordStore, RecordStore]:
    """Never called: mypy checks here that both adapters implement RecordStore."""
    return memory, sql


__all__ = ["MemoryStore", "RecordStore", "RollupRow", "RollupWatermark", "Store", "StoreRejected"]
