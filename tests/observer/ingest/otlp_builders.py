"""Real OTLP encodings for ingest tests: spans made by the OpenTelemetry SDK, encoded by the
OTLP exporter's own encoder (the bytes a vLLM/EPP exporter would POST)."""

from __future__ import annotations

import gzip
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)

from observer import conventions as c
from observer.config import IngestSettings
from observer.ingest import fastpath
from observer.ingest.otlp import decode_traces
from observer.ingest.resolve import ResolveConfig, ResolvedBatch, resolve_batch
from tests.support.procs import missing

NS = 1_000_000_000
CFG = ResolveConfig.from_settings(IngestSettings())


def require_native() -> None:
    """At a module's top level: the native decoder must be active (a failure in CI, the module
    skipped locally)."""
    if fastpath.compiled(CFG) is None:
        missing(
            f"native decoder inactive: observer.ingest._otlpfast not built (pip install -e . with a C "
            f"compiler) or {fastpath.DISABLE_ENV}=0",
            module=True,
        )


def fast(data: bytes, cfg: ResolveConfig = CFG, max_spans: int = 1 << 20) -> ResolvedBatch | None:
    """The native decoder's answer, as a ResolvedBatch (None: it declines, the Python path answers)."""
    out = fastpath.decode(data, max_spans, cfg)
    return None if out is None else ResolvedBatch(out[0], out[1], 0, (), out[2], out[3])


@dataclass
class SpanSpec:
    name: str
    trace_id: int
    start: float  # epoch seconds
    end: float
    attributes: Mapping[str, Any] = field(default_factory=dict)
    resource: Mapping[str, Any] = field(default_factory=dict)
    parent_span_id: int | None = None
    error: bool = False
    kind: SpanKind = SpanKind.SERVER


def make_spans(specs: Sequence[SpanSpec]) -> list[ReadableSpan]:
    """Finished SDK spans, one TracerProvider per distinct resource."""
    out: list[ReadableSpan] = []
    providers: dict[tuple[tuple[str, Any], ...], tuple[TracerProvider, InMemorySpanExporter]] = {}
    for spec in specs:
        key = tuple(sorted(spec.resource.items()))
        if key not in providers:
            exporter = InMemorySpanExporter()
            provider = TracerProvider(resource=Resource.create(dict(spec.resource)))
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            providers[key] = (provider, exporter)
        provider, exporter = providers[key]
        parent = SpanContext(
            trace_id=spec.trace_id,
            span_id=spec.parent_span_id or 0xABCDEF,
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
        ctx = set_span_in_context(NonRecordingSpan(parent))
        tracer = provider.get_tracer("pd-observer-tests")
        span = tracer.start_span(
            spec.name,
            context=ctx,
            kind=spec.kind,
            attributes=dict(spec.attributes),
            start_time=int(spec.start * NS),
        )
        if spec.error:
            span.set_status(Status(StatusCode.ERROR, "boom"))
        span.end(end_time=int(spec.end * NS))
    for provider, exporter in providers.values():
        out.extend(exporter.get_finished_spans())
        provider.shutdown()
    return out


def encode(specs: Sequence[SpanSpec]) -> bytes:
    data: bytes = encode_spans(make_spans(specs)).SerializeToString()
    return data


def gz(data: bytes) -> bytes:
    return gzip.compress(data)


PREFILL_RES = {c.RES_SERVICE_NAME: c.SERVICE_VLLM_PREFILL, c.RES_POD_NAME: "vllm-prefill-0"}
DECODE_RES = {c.RES_SERVICE_NAME: c.SERVICE_VLLM_DECODE, c.RES_POD_NAME: "vllm-decode-0"}
EPP_RES = {c.RES_SERVICE_NAME: c.SERVICE_EPP}


def engine_attrs(
    prompt: int,
    output: int,
    *,
    queue: float = 0.01,
    prefill: float = 0.1,
    decode: float = 0.5,
    ttft: float = 0.12,
    e2e: float = 0.7,
    request_id: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        c.ATTR_PROMPT_TOKENS: prompt,
        c.ATTR_COMPLETION_TOKENS: output,
        c.ATTR_LAT_QUEUE: queue,
        c.ATTR_LAT_PREFILL: prefill,
        c.ATTR_LAT_DECODE: decode,
        c.ATTR_LAT_TTFT: ttft,
        c.ATTR_LAT_E2E: e2e,
        c.ATTR_RESPONSE_MODEL: "llama-3-8b",
    }
    if request_id is not None:
        attrs[c.ATTR_REQUEST_ID] = request_id
    attrs.update(extra or {})
    return attrs


def two_step(
    body: bytes,
    content_type: str = c.CT_PROTOBUF,
    content_encoding: str | None = None,
    cfg: ResolveConfig | None = None,
    max_spans: int = 1 << 20,
) -> ResolvedBatch:
    """`decode_traces` then `resolve_batch`, rejects merged: what `decode_and_resolve` (the fused
    and native paths) must give."""
    decoded = decode_traces(body, content_type, content_encoding, 1 << 24, max_spans)
    res = resolve_batch(decoded.spans, cfg or ResolveConfig.from_settings(IngestSettings()))
    return ResolvedBatch(
        res.engine,
        res.hints,
        res.rejected + decoded.rejected,
        decoded.errors + res.errors,
        res.ignored,
        res.rewritten,
    )
