"""Build vLLM-shaped spans with the REAL OpenTelemetry SDK, and send them with the real exporter.

`VllmSpans` makes `llm_request` engine spans exactly as vLLM does (field notes §3) plus the
DESIGN §4 tenant / cached-token attributes, on per-pod resources, and P/D pairs in one trace.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from dataclasses import dataclass, field

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, set_span_in_context
from opentelemetry.trace.status import Status, StatusCode

from observer import conventions as c

NS = 1_000_000_000


@dataclass(frozen=True)
class Req:
    """Ground truth of one request for a test."""

    tenant: str | None
    prompt: int
    output: int
    cached: dict[str, int] = field(default_factory=dict)  # tier -> tokens
    cached_total: int | None = None  # only a total (no tiers)
    ttft: float = 0.2
    e2e: float = 1.0
    queue: float = 0.01
    prefill: float = 0.15
    decode: float = 0.8
    model: str = "llama-3-70b"
    error: bool = False
    start: float = 0.0  # epoch seconds; 0 = "now - 1s" decided by the builder
    request_id: str | None = None


class VllmSpans:
    """Creates spans through real SDK TracerProviders (one per pod resource)."""

    def __init__(self) -> None:
        self.memory = InMemorySpanExporter()
        self._providers: dict[tuple[str, str | None, str], TracerProvider] = {}
        self._n = 0

    def _tracer(self, pod: str, role: str | None, service: str) -> TracerProvider:
        key = (pod, role, service)
        if key not in self._providers:
            attrs: dict[str, str] = {c.RES_SERVICE_NAME: service, c.RES_POD_NAME: pod}
            if role is not None:
                attrs[c.RES_LLMD_ROLE] = role
            tp = TracerProvider(resource=Resource.create(attrs))
            tp.add_span_processor(SimpleSpanProcessor(self.memory))
            self._providers[key] = tp
        return self._providers[key]

    def _engine_attrs(self, r: Req, *, prompt_side: bool, decode_side: bool, rid: str) -> dict[str, object]:
        attrs: dict[str, object] = {
            c.ATTR_REQUEST_ID: rid,
            c.ATTR_REQUEST_MODEL: r.model,
            c.ATTR_LAT_QUEUE: r.queue,
            c.ATTR_LAT_TTFT: r.ttft,
            c.ATTR_LAT_E2E: r.e2e,
            c.ATTR_LAT_PREFILL: r.prefill,
            c.ATTR_LAT_DECODE: r.decode if decode_side else 0.0,
            c.ATTR_LAT_INFERENCE: r.prefill + (r.decode if decode_side else 0.0),
            c.ATTR_PROMPT_TOKENS: r.prompt,
            c.ATTR_COMPLETION_TOKENS: r.output if decode_side else 1,
        }
        if r.tenant is not None:
            attrs[c.ATTR_TENANT_ID] = r.tenant
        if prompt_side:
            for tier, n in r.cached.items():
                attrs[c.ATTR_TIER_HIT[tier]] = n
            if r.cached_total is not None:
                attrs[c.ATTR_CACHED_TOKENS] = r.cached_total
        return attrs

    def _next_id(self) -> str:
        self._n += 1
        return f"req-{self._n}"

    def aggregated(self, r: Req, pod: str = "vllm-0", start: float = 1.7e9) -> str:
        """One engine span (no P/D). Returns the request id."""
        rid = r.request_id or self._next_id()
        tracer = self._tracer(pod, None, "vllm").get_tracer("vllm")
        t0 = int((r.start or start) * NS)
        span = tracer.start_span(
            c.SPAN_VLLM_REQUEST,
            kind=SpanKind.SERVER,
            start_time=t0,
            attributes=self._engine_attrs(r, prompt_side=True, decode_side=True, rid=rid),  # type: ignore[arg-type]
        )
        if r.error:
            span.set_status(Status(StatusCode.ERROR, "engine error"))
        span.end(end_time=t0 + int(r.e2e * NS))
        return rid

    def pd_pair(
        self,
        r: Req,
        prefill_pod: str = "pool-prefill-0",
        decode_pod: str = "pool-decode-0",
        start: float = 1.7e9,
        gap: float = 0.005,
        tenant_on_epp_only: bool = False,
    ) -> tuple[str, str]:
        """A prefill span and a decode span in ONE trace (+ an EPP span). Returns (trace id, decode rid)."""
        rid = r.request_id or self._next_id()
        t0 = int((r.start or start) * NS)
        epp = self._tracer("epp-0", None, c.SERVICE_EPP).get_tracer("epp")
        root = epp.start_span(c.SPAN_EPP_GATEWAY, kind=SpanKind.SERVER, start_time=t0)
        root.set_attribute(c.ATTR_REQUEST_MODEL, r.model)
        root.set_attribute(c.ATTR_EPP_PD_USED, True)
        if r.tenant is not None:
            root.set_attribute(c.ATTR_FAIRNESS_ID, r.tenant)
        ctx = set_span_in_context(root)
        eng = r if not tenant_on_epp_only else Req(**{**r.__dict__, "tenant": None})
        pre_t = self._tracer(prefill_pod, c.ROLE_PREFILL, c.SERVICE_VLLM_PREFILL).get_tracer("vllm")
        pre_end = t0 + int((r.queue + r.prefill) * NS)
        pre = pre_t.start_span(
            c.SPAN_VLLM_REQUEST,
            context=ctx,
            kind=SpanKind.SERVER,
            start_time=t0,
            attributes=self._engine_attrs(eng, prompt_side=True, decode_side=False, rid=rid + "-p"),  # type: ignore[arg-type]
        )
        pre.end(end_time=pre_end)
        dec_t = self._tracer(decode_pod, c.ROLE_DECODE, c.SERVICE_VLLM_DECODE).get_tracer("vllm")
        d0 = pre_end + int(gap * NS)
        dec_attrs = self._engine_attrs(eng, prompt_side=False, decode_side=True, rid=rid)
        dec_attrs[c.ATTR_LAT_PREFILL] = 0.0
        dec_attrs[c.ATTR_LAT_QUEUE] = 0.0
        dec = dec_t.start_span(
            c.SPAN_VLLM_REQUEST, context=ctx, kind=SpanKind.SERVER, start_time=d0, attributes=dec_attrs
        )  # type: ignore[arg-type]
        if r.error:
            dec.set_status(Status(StatusCode.ERROR, "engine error"))
        dec.end(end_time=d0 + int(r.decode * NS))
        root.end(end_time=d0 + int(r.decode * NS))
        return format(root.get_span_context().trace_id, "032x"), rid

    def take(self) -> list[ReadableSpan]:
        spans = list(self.memory.get_finished_spans())
        self.memory.clear()
        return spans


def encode(spans: Sequence[ReadableSpan]) -> bytes:
    return encode_spans(spans).SerializeToString()  # type: ignore[no-any-return]


def gzipped(body: bytes) -> bytes:
    return gzip.compress(body)


def export(
    endpoint: str, spans: Sequence[ReadableSpan], headers: dict[str, str] | None = None
) -> SpanExportResult:
    """Send with the real OTLP/HTTP protobuf exporter (gzip, as collectors commonly do)."""
    from opentelemetry.exporter.otlp.proto.http import Compression

    exporter = OTLPSpanExporter(endpoint=endpoint, headers=headers, compression=Compression.Gzip, timeout=10)
    try:
        return exporter.export(list(spans))
    finally:
        exporter.shutdown()


def remote_parent(trace_id: int, span_id: int) -> object:
    return set_span_in_context(
        NonRecordingSpan(SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(1)))
    )
