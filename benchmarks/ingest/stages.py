"""Where the server's time goes: CPU µs per span of each pipeline stage, in process, one thread.

Runs the same stages as `observer.pipeline` (decode+resolve → assemble → store.write_batch on a
SQLite file → aggregator.add) on the benchmark bodies, batch by batch, and charges each stage its
CPU time (`time.process_time`, so time spent descheduled by other load is not counted). The
end-to-end CPU per span of the server minus the sum of these is the HTTP/ASGI/asyncio share.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from observer import conventions as c
from observer.aggregate import Aggregator
from observer.config import Settings
from observer.ingest.assemble import AssembleResult, TraceAssembler
from observer.ingest.otlp import decode_traces, parse_and_walk
from observer.ingest.resolve import ResolveConfig, decode_and_resolve, resolve_batch
from observer.store.repository import Store

BIG = 1 << 30
CEILING = "alone: ceiling parse_and_walk"
UNFUSED = "alone: decode_traces → resolve_batch (generic path)"
FUSED = "alone: decode_and_resolve (fused protobuf path)"
DECODE = "pipeline: decode_and_resolve"
ASSEMBLE = "pipeline: assemble (P/D stitching)"
STORE = "pipeline: store.write_batch (SQLite)"
AGGREGATE = "pipeline: aggregate (windows, SLOs)"
GROUP = 10  # batches per transaction: the harness's 10 connections, the server's largest group here
STORE_GROUPED = f"alone: store.write_batch, {GROUP} batches per transaction (SQLite)"
STAGES = (CEILING, UNFUSED, FUSED, DECODE, ASSEMBLE, STORE, AGGREGATE, STORE_GROUPED)
PIPELINE = (DECODE, ASSEMBLE, STORE, AGGREGATE)  # what the server runs per batch


def stage_costs(bodies: Sequence[bytes], spans_per_batch: int, now: float) -> dict[str, float]:
    """CPU µs per span of each stage (and of the ceiling and the unfused decode → resolve)."""
    settings = Settings()
    cfg = ResolveConfig.from_settings(settings.ingest)
    cost: dict[str, float] = dict.fromkeys(STAGES, 0.0)
    clock = time.process_time
    for body in bodies:
        t0 = clock()
        parse_and_walk(body)
        t1 = clock()
        resolve_batch(decode_traces(body, c.CT_PROTOBUF, None, BIG, 1 << 20).spans, cfg)
        t2 = clock()
        decode_and_resolve(body, c.CT_PROTOBUF, None, max_decompressed_bytes=BIG, max_spans=1 << 20, cfg=cfg)
        cost[CEILING] += t1 - t0
        cost[UNFUSED] += t2 - t1
        cost[FUSED] += clock() - t2
    assembler = TraceAssembler(settings.ingest.max_pending_traces, settings.ingest.pending_timeout_seconds)
    aggregator = Aggregator(settings.aggregation, settings.slo_specs())
    results: list[AssembleResult] = []
    with tempfile.TemporaryDirectory(prefix="ingest-stages-") as tmp:
        store = Store.open(f"sqlite:///{Path(tmp) / 'stages.db'}")
        try:
            store.upgrade()
            for body in bodies:
                t0 = clock()
                batch = decode_and_resolve(
                    body, c.CT_PROTOBUF, None, max_decompressed_bytes=BIG, max_spans=1 << 20, cfg=cfg
                )
                t1 = clock()
                res = assembler.add(batch.engine, batch.hints, now)
                t2 = clock()
                results.append(res)
                new = store.write_batch(res.records, res.pending_added, res.pending_released)
                t3 = clock()
                aggregator.add(new, now)
                t4 = clock()
                cost[DECODE] += t1 - t0
                cost[ASSEMBLE] += t2 - t1
                cost[STORE] += t3 - t2
                cost[AGGREGATE] += t4 - t3
        finally:
            store.close()
        cost[STORE_GROUPED] = _grouped_writes(Path(tmp) / "grouped.db", results, clock)
    spans = len(bodies) * spans_per_batch
    return {name: 1e6 * secs / spans for name, secs in cost.items()}


def _grouped_writes(path: Path, results: Sequence[AssembleResult], clock: Callable[[], float]) -> float:
    """CPU seconds to store the same assembler results `GROUP` batches per transaction (one
    `write_batch` per group, as the server's group commit does when batches are in flight)."""
    store = Store.open(f"sqlite:///{path}")
    try:
        store.upgrade()
        spent = 0.0
        for i in range(0, len(results), GROUP):
            group = results[i : i + GROUP]
            records = [r for res in group for r in res.records]
            added = [p for res in group for p in res.pending_added]
            released = [sid for res in group for sid in res.pending_released]
            t0 = clock()
            store.write_batch(records, added, released)
            spent += clock() - t0
        return spent
    finally:
        store.close()
