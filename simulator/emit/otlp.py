"""OTLP spans for the twin's requests, through the real OpenTelemetry SDK.

One trace per `CompletedRequest`, with deterministic ids derived from `trace_seed`:

```
gateway.request            (SERVER, service llm-d-epp)       arrival .. decode.finished
├─ llm_d.pd_proxy.prefill  (INTERNAL, service routing-proxy)  arrival .. prefill.finished      [P/D]
│  └─ llm_request          (SERVER, service vllm-prefill)     prefill.arrival .. prefill.finished
└─ llm_d.pd_proxy.decode   (INTERNAL, service routing-proxy)  prefill.finished .. decode.finished [P/D]
   └─ llm_request          (SERVER, service vllm-decode)      decode.arrival .. decode.finished
```

Without disaggregation the decode engine's `llm_request` is a direct child of `gateway.request`.
Each pod has its own `TracerProvider` (resource: `service.name`, `k8s.pod.name`, `llm_d.role`,
`k8s.namespace.name`); all providers share one span processor, so one export batch holds
spans of many pods.

Delivery is pluggable: `OtlpSpanEmitter.to_endpoint` uses the real `OTLPSpanExporter`
(HTTP/protobuf) behind the SDK's background `BatchSpanProcessor` (paced mode);
`OtlpSpanEmitter.to_bytes` encodes batches with the SDK's OTLP protobuf encoder and hands the
bytes to a callable, synchronously, every `batch_size` spans (fast mode: no threads).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue

from observer import conventions as c
from simulator.emit.otlpwire import FastSpanEncoder
from simulator.events import ArrivedRequest, CompletedRequest, EngineTiming, FleetEvent, KvEvent, PodSnapshot

_M64 = (1 << 64) - 1
_NS = 1_000_000_000
DEFAULT_NAMESPACE = "llm-d"
DEFAULT_EPP_POD = "llm-d-epp-0"
DEFAULT_CONNECTOR = "nixlv2"
ERROR_TYPE_SIMULATED = "simulated_error"


def _mix64(x: int) -> int:
    """splitmix64 finaliser: a cheap, well-spread 64-bit hash."""
    z = (x + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return (z ^ (z >> 31)) or 1


def trace_id_for(trace_seed: int) -> int:
    """The 128-bit trace id of the request with this seed (never 0)."""
    seed = trace_seed & _M64
    return (_mix64(seed) << 64) | _mix64(seed ^ 0x5DEECE66D)


def span_id_for(trace_seed: int, index: int) -> int:
    """The 64-bit id of the `index`-th span (creation order) of the request with this seed."""
    return _mix64((trace_seed * 16 + index + 0x2545F491) & _M64)


class SeededIdGenerator(IdGenerator):
    """Ids from the current request's seed: `begin(seed)` before creating its spans."""

    def __init__(self) -> None:
        self._seed = 0
        self._index = 0

    def begin(self, trace_seed: int) -> None:
        self._seed = trace_seed
        self._index = 0

    def generate_trace_id(self) -> int:
        return trace_id_for(self._seed)

    def generate_span_id(self) -> int:
        span_id = span_id_for(self._seed, self._index)
        self._index += 1
        return span_id


class BytesSink(Protocol):
    """Receives one OTLP/protobuf `ExportTraceServiceRequest` body per batch."""

    def __call__(self, body: bytes, /) -> None: ...


def sdk_encode(spans: Sequence[ReadableSpan]) -> bytes:
    """The SDK's own OTLP/protobuf encoding of a batch."""
    body: bytes = encode_spans(spans).SerializeToString()
    return body


class BytesSpanExporter(SpanExporter):
    """Encodes spans as an OTLP `ExportTraceServiceRequest` and hands the bytes to a sink.

    `fast=True` (default) uses `otlpwire.FastSpanEncoder` (same message, ~3× faster);
    `fast=False` the SDK's `encode_spans`.
    """

    def __init__(self, sink: BytesSink, *, fast: bool = True) -> None:
        self._sink = sink
        self._stopped = False
        self._encode: Callable[[Sequence[ReadableSpan]], bytes] = (
            FastSpanEncoder().encode if fast else sdk_encode
        )

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._stopped:
            return SpanExportResult.FAILURE
        self._sink(self._encode(spans))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._stopped = True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class SyncBatchSpanProcessor(SpanProcessor):
    """Deterministic, thread-free batching: export every `batch_size` ended spans, or on flush."""

    def __init__(self, exporter: SpanExporter, batch_size: int = 512) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self._exporter = exporter
        self._batch_size = batch_size
        self._buffer: list[ReadableSpan] = []
        self.exported_spans = 0
        self.failed_spans = 0
        self.batches = 0

    def on_end(self, span: ReadableSpan) -> None:
        self._buffer.append(span)
        if len(self._buffer) >= self._batch_size:
            self._export()

    def _export(self) -> None:
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, []
        self.batches += 1
        if self._exporter.export(batch) is SpanExportResult.SUCCESS:
            self.exported_spans += len(batch)
        else:
            self.failed_spans += len(batch)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self._export()
        return True

    def shutdown(self) -> None:
        self._export()
        self._exporter.shutdown()


@dataclass(frozen=True, slots=True)
class _PodKey:
    service: str
    pod: str
    role: str


@dataclass(slots=True)
class EmitterStats:
    """Counters of what the emitter produced."""

    requests: int = 0
    spans: int = 0
    by_service: dict[str, int] = field(default_factory=dict)


def _ns(t: float) -> int:
    return int(t * _NS + 0.5)


class OtlpSpanEmitter:
    """A `FleetSink` that turns each `CompletedRequest` into one OTLP trace (see module doc)."""

    def __init__(
        self,
        processor: SpanProcessor,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        epp_pod: str = DEFAULT_EPP_POD,
        connector: str = DEFAULT_CONNECTOR,
        max_providers: int = 4096,
    ) -> None:
        self._processor = processor
        self._namespace = namespace
        self._epp_pod = epp_pod
        self._connector = connector
        self._ids = SeededIdGenerator()
        self._tracers: dict[_PodKey, Tracer] = {}
        self._max_providers = max_providers
        self.stats = EmitterStats()

    # -- constructors -----------------------------------------------------------------------
    @classmethod
    def to_bytes(
        cls, sink: BytesSink, *, batch_size: int = 512, fast: bool = True, **kwargs: Any
    ) -> OtlpSpanEmitter:
        """Fast, synchronous in-process delivery of OTLP/protobuf bodies to `sink`."""
        return cls(SyncBatchSpanProcessor(BytesSpanExporter(sink, fast=fast), batch_size), **kwargs)

    @classmethod
    def to_exporter(cls, exporter: SpanExporter, *, batch_size: int = 512, **kwargs: Any) -> OtlpSpanEmitter:
        """Synchronous batching into any SDK `SpanExporter` (e.g. `InMemorySpanExporter`)."""
        return cls(SyncBatchSpanProcessor(exporter, batch_size), **kwargs)

    @classmethod
    def to_endpoint(
        cls,
        endpoint: str,
        *,
        batch_size: int = 512,
        schedule_delay_millis: int = 1000,
        timeout: float = 10.0,
        **kwargs: Any,
    ) -> OtlpSpanEmitter:
        """Real OTLP/HTTP delivery (`.../v1/traces`) by the SDK exporter in a background thread."""
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint, timeout=timeout)
        processor = BatchSpanProcessor(
            exporter,
            max_export_batch_size=batch_size,
            schedule_delay_millis=schedule_delay_millis,
            max_queue_size=max(65_536, batch_size * 8),  # bounded; paced demo at 100x stays well below
        )
        return cls(processor, **kwargs)

    # -- FleetSink ----------------------------------------------------------------------------
    def request_arrived(self, arrival: ArrivedRequest) -> None:
        return None  # a request's spans are emitted whole at completion (start = its arrival)

    def request_completed(self, request: CompletedRequest) -> None:
        self._ids.begin(request.trace_seed)
        end = request.decode.finished
        pd = request.prefill is not None
        gw_attrs: dict[str, AttributeValue] = {
            c.ATTR_REQUEST_ID: request.request_id,
            c.ATTR_REQUEST_MODEL: request.model,
            c.ATTR_FAIRNESS_ID: request.tenant,
            c.ATTR_EPP_PD_USED: pd,
        }
        if request.prefill is not None:
            gw_attrs[c.ATTR_EPP_PD_PREFILL_ADDR] = request.prefill.pod
        epp = self._tracer(c.SERVICE_EPP, self._epp_pod, "")
        root = epp.start_span(
            c.SPAN_EPP_GATEWAY, kind=SpanKind.SERVER, attributes=gw_attrs, start_time=_ns(request.arrival)
        )
        root_ctx = trace.set_span_in_context(root)
        n = 1
        if request.prefill is not None:
            pre = request.prefill
            proxy = self._tracer(c.SERVICE_ROUTING_PROXY, request.decode.pod, c.ROLE_DECODE)
            side_attrs: dict[str, AttributeValue] = {
                c.ATTR_SIDECAR_REQUEST_ID: request.request_id,
                c.ATTR_SIDECAR_PREFILL_TARGET: pre.pod,
                c.ATTR_SIDECAR_CONNECTOR: self._connector,
                c.ATTR_SIDECAR_PREFILL_MS: (pre.finished - pre.arrival) * 1000.0,
            }
            sp = proxy.start_span(
                c.SPAN_SIDECAR_PREFILL,
                context=root_ctx,
                kind=SpanKind.INTERNAL,
                attributes=side_attrs,
                start_time=_ns(request.arrival),
            )
            self._engine_span(request, pre, trace.set_span_in_context(sp), cached=True)
            sp.end(end_time=_ns(pre.finished))
            sd = proxy.start_span(
                c.SPAN_SIDECAR_DECODE,
                context=root_ctx,
                kind=SpanKind.INTERNAL,
                attributes={
                    c.ATTR_SIDECAR_REQUEST_ID: request.request_id,
                    c.ATTR_SIDECAR_CONNECTOR: self._connector,
                    c.ATTR_SIDECAR_TRUE_TTFT_MS: request.ttft * 1000.0,
                },
                start_time=_ns(pre.finished),
            )
            self._engine_span(request, request.decode, trace.set_span_in_context(sd), cached=False)
            if request.error:
                sd.set_status(Status(StatusCode.ERROR))
            sd.end(end_time=_ns(end))
            n += 4
        else:
            self._engine_span(request, request.decode, root_ctx, cached=True)
            n += 1
        if request.error:
            root.set_status(Status(StatusCode.ERROR, ERROR_TYPE_SIMULATED))
            root.set_attribute(c.ATTR_ERROR_TYPE, ERROR_TYPE_SIMULATED)
        root.end(end_time=_ns(end))
        self.stats.requests += 1
        self.stats.spans += n

    def _engine_span(self, request: CompletedRequest, t: EngineTiming, ctx: Context, *, cached: bool) -> None:
        service = c.SERVICE_VLLM_PREFILL if t.role == c.ROLE_PREFILL else c.SERVICE_VLLM_DECODE
        tracer = self._tracer(service, t.pod, t.role)
        attrs: dict[str, AttributeValue] = {
            c.ATTR_REQUEST_ID: request.request_id,
            c.ATTR_REQUEST_MODEL: request.model,
            c.ATTR_RESPONSE_MODEL: request.model,
            c.ATTR_TENANT_ID: request.tenant,
            c.ATTR_PROMPT_TOKENS: t.prompt_tokens,
            c.ATTR_COMPLETION_TOKENS: t.output_tokens,
            c.ATTR_MAX_TOKENS: max(t.output_tokens, 1),
            c.ATTR_LAT_QUEUE: t.scheduled - t.arrival,
            c.ATTR_LAT_TTFT: t.first_token - t.arrival,
            c.ATTR_LAT_E2E: t.finished - t.arrival,
            c.ATTR_LAT_PREFILL: t.first_token - t.scheduled,
            c.ATTR_LAT_DECODE: t.finished - t.first_token,
            c.ATTR_LAT_INFERENCE: t.finished - t.scheduled,
        }
        if cached:
            tiers: Mapping[str, int] = request.cached_by_tier
            attrs[c.ATTR_CACHED_TOKENS] = sum(tiers.values())
            for tier, tokens in tiers.items():
                key = c.ATTR_TIER_HIT.get(tier)
                if key is not None:
                    attrs[key] = tokens
        span = tracer.start_span(
            c.SPAN_VLLM_REQUEST,
            context=ctx,
            kind=SpanKind.SERVER,
            attributes=attrs,
            start_time=_ns(t.arrival),
        )
        if request.error and t is request.decode:
            span.set_status(Status(StatusCode.ERROR, ERROR_TYPE_SIMULATED))
            span.set_attribute(c.ATTR_ERROR_TYPE, ERROR_TYPE_SIMULATED)
        span.end(end_time=_ns(t.finished))
        by = self.stats.by_service
        by[service] = by.get(service, 0) + 1

    def pods_sampled(self, now: float, pods: tuple[PodSnapshot, ...]) -> None:
        return None

    def kv_events(self, events: tuple[KvEvent, ...]) -> None:
        return None

    def fleet_event(self, event: FleetEvent) -> None:
        return None

    # -- lifecycle ----------------------------------------------------------------------------
    def flush(self) -> None:
        """Export everything buffered (synchronously for the in-process mode)."""
        self._processor.force_flush()

    def shutdown(self) -> None:
        """Flush and stop the exporter; the emitter must not be used afterwards."""
        self._processor.shutdown()
        self._tracers.clear()

    # -- internals ----------------------------------------------------------------------------
    def _tracer(self, service: str, pod: str, role: str) -> Tracer:
        key = _PodKey(service, pod, role)
        tracer = self._tracers.get(key)
        if tracer is None:
            if len(self._tracers) >= self._max_providers:
                self._tracers.pop(next(iter(self._tracers)))
            attrs: dict[str, AttributeValue] = {
                c.RES_SERVICE_NAME: service,
                c.RES_POD_NAME: pod,
                c.RES_NAMESPACE: self._namespace,
            }
            if role:  # the EPP has no llm-d role
                attrs[c.RES_LLMD_ROLE] = role
            resource = Resource(attrs)
            provider = TracerProvider(resource=resource, id_generator=self._ids, shutdown_on_exit=False)
            provider.add_span_processor(self._processor)
            tracer = provider.get_tracer("pd-observer.simulator")
            self._tracers[key] = tracer
        return tracer


def collecting_sink() -> tuple[list[bytes], Callable[[bytes], None]]:
    """A list and a `BytesSink` appending to it (handy in tests and benchmarks)."""
    bodies: list[bytes] = []
    return bodies, bodies.append
