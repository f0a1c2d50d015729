"""Conversions between `observer.model` values and table rows / JSON. Pure, no I/O."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from observer.model import EngineSpan, RequestRecord, SloSpec, TierTokens
from observer.store.types import RollupRow

_SPAN_VERSION = 1


def record_to_row(r: RequestRecord) -> dict[str, Any]:
    """Column values of table `requests` (without `seq`)."""
    return {
        "request_id": r.request_id,
        "trace_id": r.trace_id,
        "tenant": r.tenant,
        "model": r.model,
        "start_time": r.start_time,
        "end_time": r.end_time,
        "prompt_tokens": r.prompt_tokens,
        "output_tokens": r.output_tokens,
        "cached_hbm": r.cached.hbm,
        "cached_dram": r.cached.dram,
        "cached_disk": r.cached.disk,
        "cached_remote": r.cached.remote,
        "cached_unknown": r.cached.unknown,
        "ttft": r.ttft,
        "itl": r.itl,
        "e2e": r.e2e,
        "queue": r.queue,
        "prefill": r.prefill,
        "kv_transfer": r.kv_transfer,
        "decode": r.decode,
        "error": r.error,
        "disaggregated": r.disaggregated,
        "prefill_pod": r.prefill_pod,
        "decode_pod": r.decode_pod,
        "complete": r.complete,
    }


RECORD_COLUMNS: tuple[str, ...] = (
    "request_id",
    "trace_id",
    "tenant",
    "model",
    "start_time",
    "end_time",
    "prompt_tokens",
    "output_tokens",
    "cached_hbm",
    "cached_dram",
    "cached_disk",
    "cached_remote",
    "cached_unknown",
    "ttft",
    "itl",
    "e2e",
    "queue",
    "prefill",
    "kv_transfer",
    "decode",
    "error",
    "disaggregated",
    "prefill_pod",
    "decode_pod",
    "complete",
)


def record_to_tuple(r: RequestRecord) -> tuple[Any, ...]:
    """`record_to_row` as a tuple in RECORD_COLUMNS order (the fast executemany path).

    A plain tuple display: ~0.17 µs per record on the benchmark machine, faster than
    `operator.attrgetter` with dotted names (~0.40 µs) or building the dict of `record_to_row`."""
    c = r.cached
    return (
        r.request_id,
        r.trace_id,
        r.tenant,
        r.model,
        r.start_time,
        r.end_time,
        r.prompt_tokens,
        r.output_tokens,
        c.hbm,
        c.dram,
        c.disk,
        c.remote,
        c.unknown,
        r.ttft,
        r.itl,
        r.e2e,
        r.queue,
        r.prefill,
        r.kv_transfer,
        r.decode,
        r.error,
        r.disaggregated,
        r.prefill_pod,
        r.decode_pod,
        r.complete,
    )


def _tiers(row: Mapping[Any, Any]) -> TierTokens:
    return TierTokens(
        int(row["cached_hbm"]),
        int(row["cached_dram"]),
        int(row["cached_disk"]),
        int(row["cached_remote"]),
        int(row["cached_unknown"]),
    )


def _opt(v: Any) -> float | None:
    return None if v is None else float(v)


def row_to_record(row: Mapping[Any, Any]) -> RequestRecord:
    """Inverse of `record_to_row` (extra columns such as `seq` are ignored)."""
    return RequestRecord(
        request_id=row["request_id"],
        trace_id=row["trace_id"],
        tenant=row["tenant"],
        model=row["model"],
        start_time=float(row["start_time"]),
        end_time=float(row["end_time"]),
        prompt_tokens=int(row["prompt_tokens"]),
        output_tokens=int(row["output_tokens"]),
        cached=_tiers(row),
        ttft=_opt(row["ttft"]),
        itl=_opt(row["itl"]),
        e2e=_opt(row["e2e"]),
        queue=_opt(row["queue"]),
        prefill=_opt(row["prefill"]),
        kv_transfer=_opt(row["kv_transfer"]),
        decode=_opt(row["decode"]),
        error=bool(row["error"]),
        disaggregated=bool(row["disaggregated"]),
        prefill_pod=row["prefill_pod"],
        decode_pod=row["decode_pod"],
        complete=bool(row["complete"]),
    )


def row_to_rollup(row: Mapping[Any, Any]) -> RollupRow:
    sketches = row["sketches"]
    return RollupRow(
        minute_start=float(row["minute_start"]),
        tenant=row["tenant"],
        model=row["model"],
        requests=int(row["requests"]),
        prompt_tokens=int(row["prompt_tokens"]),
        output_tokens=int(row["output_tokens"]),
        cached=_tiers(row),
        errors=int(row["errors"]),
        sketches=None if sketches is None else bytes(sketches),
    )


def encode_engine_span(s: EngineSpan) -> str:
    """Compact JSON of an EngineSpan (column pending_spans.payload); versioned with key `v`."""
    return json.dumps(
        {
            "v": _SPAN_VERSION,
            "trace_id": s.trace_id,
            "span_id": s.span_id,
            "request_id": s.request_id,
            "role": s.role,
            "tenant": s.tenant,
            "model": s.model,
            "pod": s.pod,
            "start_time": s.start_time,
            "end_time": s.end_time,
            "prompt_tokens": s.prompt_tokens,
            "output_tokens": s.output_tokens,
            "cached": [s.cached.hbm, s.cached.dram, s.cached.disk, s.cached.remote, s.cached.unknown],
            "queue": s.queue,
            "prefill": s.prefill,
            "decode": s.decode,
            "ttft": s.ttft,
            "e2e": s.e2e,
            "error": s.error,
        },
        separators=(",", ":"),
    )


def decode_engine_span(payload: str) -> EngineSpan:
    """Inverse of `encode_engine_span`. Raises ValueError on an unknown version or bad payload."""
    d = json.loads(payload)
    if not isinstance(d, dict) or d.get("v") != _SPAN_VERSION:
        raise ValueError(
            f"unsupported pending span payload version: {d.get('v') if isinstance(d, dict) else d!r}"
        )
    hbm, dram, disk, remote, unknown = (int(x) for x in d["cached"])
    return EngineSpan(
        trace_id=d["trace_id"],
        span_id=d["span_id"],
        request_id=d["request_id"],
        role=d["role"],
        tenant=d["tenant"],
        model=d["model"],
        pod=d["pod"],
        start_time=float(d["start_time"]),
        end_time=float(d["end_time"]),
        prompt_tokens=int(d["prompt_tokens"]),
        output_tokens=int(d["output_tokens"]),
        cached=TierTokens(hbm, dram, disk, remote, unknown),
        queue=_opt(d["queue"]),
        prefill=_opt(d["prefill"]),
        decode=_opt(d["decode"]),
        ttft=_opt(d["ttft"]),
        e2e=_opt(d["e2e"]),
        error=bool(d["error"]),
    )


def slo_to_row(spec: SloSpec, position: int) -> dict[str, Any]:
    return {
        "name": spec.name,
        "position": position,
        "sli": spec.sli,
        "objective": spec.objective,
        "threshold_seconds": spec.threshold_seconds,
        "tenants": json.dumps(list(spec.tenants)),
        "description": spec.description,
    }


def row_to_slo(row: Mapping[Any, Any]) -> SloSpec:
    return SloSpec(
        name=row["name"],
        sli=row["sli"],
        objective=float(row["objective"]),
        threshold_seconds=_opt(row["threshold_seconds"]),
        tenants=tuple(str(t) for t in json.loads(row["tenants"])),
        description=row["description"],
    )
