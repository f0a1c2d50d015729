"""In-memory `RecordStore` with the same semantics as the SQL `Store` (for core tests and demos).

Thread-safe (one lock). Memory is bounded only by retention, like the SQL store.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator, Sequence

from observer.model import EngineSpan, RequestRecord, SloSpec
from observer.store.types import DEFAULT_CHUNK, RollupRow, RollupWatermark, minute_floor


class MemoryStore:
    """Dict-backed store. Records keep an insertion sequence number like the SQL `seq`."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._records: dict[str, tuple[int, RequestRecord]] = {}
        self._order: list[tuple[float, int, str]] = []  # (end_time, seq, request_id), sorted
        self._seq = 0
        self._pending: dict[str, tuple[str, EngineSpan]] = {}  # span id -> (owner, span)
        self._beats: dict[str, float] = {}  # ingest replica -> heartbeat
        self._slos: list[SloSpec] | None = None
        self._rollups: dict[tuple[float, str, str], RollupRow] = {}
        self._watermark: RollupWatermark | None = None

    def upgrade(self) -> None:
        """Nothing to migrate in memory."""

    def close(self) -> None:
        """Nothing to release."""

    def write_batch(
        self,
        records: Sequence[RequestRecord],
        pending_added: Sequence[EngineSpan] = (),
        pending_released: Sequence[str] = (),
        *,
        owner: str = "",
    ) -> list[RequestRecord]:
        with self._lock:
            new: list[RequestRecord] = []
            for r in records:
                if r.request_id in self._records:
                    continue
                self._seq += 1
                self._records[r.request_id] = (self._seq, r)
                bisect.insort(self._order, (r.end_time, self._seq, r.request_id))
                new.append(r)
            for p in pending_added:
                self._pending.setdefault(p.span_id, (owner, p))
            for span_id in pending_released:
                self._pending.pop(span_id, None)
            return new

    def load_pending(self, owner: str | None = None) -> list[EngineSpan]:
        with self._lock:
            held = [p for o, p in self._pending.values() if owner is None or o == owner]
        return sorted(held, key=_pending_order)

    def claim_pending(
        self, owner: str, now: float, gone_after: float, *, limit: int, sweep: bool = False
    ) -> list[EngineSpan]:
        """As `Store.claim_pending`."""
        with self._lock:
            self._beats[owner] = now
            beats = {o for o, t in self._beats.items() if t < now - gone_after and o != owner}
            gone = beats | {""}
            if sweep:
                gone.update(o for o, _ in self._pending.values() if o not in self._beats)
            gone.discard(owner)
            taken = [p for o, p in self._pending.values() if o in gone][:limit]
            for p in taken:
                self._pending[p.span_id] = (owner, p)
            held = {o for o, _ in self._pending.values()}
            for o in beats - held:
                del self._beats[o]
        return sorted(taken, key=_pending_order)

    def live_replicas(self, now: float, gone_after: float) -> list[str]:
        with self._lock:
            return sorted(o for o, t in self._beats.items() if t >= now - gone_after)

    def retire(self, owner: str) -> None:
        with self._lock:
            self._beats[owner] = 0.0

    def clock(self) -> float | None:
        return None

    def records_since(self, t: float, chunk_size: int = DEFAULT_CHUNK) -> Iterator[RequestRecord]:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        with self._lock:
            i = bisect.bisect_left(self._order, (t, -1, ""))
            out = [self._records[rid][1] for _, _, rid in self._order[i:]]
        yield from out

    def get_record(self, request_id: str) -> RequestRecord | None:
        with self._lock:
            hit = self._records.get(request_id)
            return None if hit is None else hit[1]

    def records_by_trace(self, trace_id: str) -> list[RequestRecord]:
        with self._lock:
            hits = [(r.end_time, seq, r) for seq, r in self._records.values() if r.trace_id == trace_id]
        return [r for _, _, r in sorted(hits, key=lambda h: (h[0], h[1]))]

    def count_records(self) -> int:
        with self._lock:
            return len(self._records)

    def list_slos(self) -> list[SloSpec]:
        with self._lock:
            return list(self._slos or ())

    def replace_slos(self, specs: Sequence[SloSpec]) -> None:
        _check_unique(specs)
        with self._lock:
            self._slos = list(specs)

    def slos_initialized(self) -> bool:
        with self._lock:
            return self._slos is not None

    def seed_slos(self, specs: Sequence[SloSpec]) -> list[SloSpec]:
        _check_unique(specs)
        with self._lock:
            if self._slos is None:
                self._slos = list(specs)
            return list(self._slos)

    def watermark(self) -> RollupWatermark | None:
        with self._lock:
            return self._watermark

    def rollup(self, up_to: float) -> int:
        with self._lock:
            wm = self._watermark
            new_time = minute_floor(up_to) if wm is None else max(wm.time, minute_floor(up_to))
            new_seq = self._seq if wm is None else max(wm.seq, self._seq)
            n = 0
            for seq, r in self._records.values():
                if wm is None:
                    take = r.end_time < new_time
                else:
                    take = (wm.time <= r.end_time < new_time) or (r.end_time < wm.time and seq > wm.seq)
                if take and seq <= new_seq:
                    row = RollupRow.of(r)
                    key = (row.minute_start, row.tenant, row.model)
                    old = self._rollups.get(key)
                    self._rollups[key] = row if old is None else old + row
                    n += 1
            self._watermark = RollupWatermark(new_time, new_seq)
            return n

    def rollups(self, since: float, until: float | None = None, tenant: str | None = None) -> list[RollupRow]:
        with self._lock:
            rows = [
                r
                for r in self._rollups.values()
                if r.minute_start >= since
                and (until is None or r.minute_start < until)
                and (tenant is None or r.tenant == tenant)
            ]
        return sorted(rows, key=lambda r: (r.minute_start, r.tenant, r.model))

    def apply_retention(
        self, now: float, record_retention_s: int, rollup_retention_s: int, chunk_size: int = DEFAULT_CHUNK
    ) -> tuple[int, int]:
        rec_cut = minute_floor(now - record_retention_s)
        with self._lock:
            self.rollup(rec_cut)
            guard = self._watermark.seq if self._watermark is not None else 0
            doomed = [rid for rid, (seq, r) in self._records.items() if r.end_time < rec_cut and seq <= guard]
            for rid in doomed:
                seq, r = self._records.pop(rid)
                i = bisect.bisect_left(self._order, (r.end_time, seq, rid))
                del self._order[i]
            old = [k for k, r in self._rollups.items() if r.minute_start < now - rollup_retention_s]
            for k in old:
                del self._rollups[k]
            return len(doomed), len(old)


def _check_unique(specs: Sequence[SloSpec]) -> None:
    names = [x.name for x in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate SLO names: {', '.join(dupes)}")


def _pending_order(p: EngineSpan) -> tuple[float, str]:
    return (p.end_time, p.span_id)
