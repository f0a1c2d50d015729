"""The fast OTLP wire encoder produces exactly the SDK encoder's message."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from simulator.emit.otlp import OtlpSpanEmitter, sdk_encode
from simulator.emit.otlpwire import FastSpanEncoder

from .factories import local_request, pd_request


def _parse(body: bytes) -> ExportTraceServiceRequest:
    msg = ExportTraceServiceRequest()
    msg.ParseFromString(body)
    return msg


def test_fast_encoder_equals_sdk_encoder_on_twin_spans() -> None:
    mem = InMemorySpanExporter()
    em = OtlpSpanEmitter.to_exporter(mem, batch_size=10_000)
    for i in range(30):
        em.request_completed(pd_request(i, tenant=f"t{i % 4}", error=(i % 7 == 0)))
        em.request_completed(local_request(i))
    em.flush()
    spans = mem.get_finished_spans()
    assert len(spans) == 30 * 7
    enc = FastSpanEncoder()
    fast, sdk = _parse(enc.encode(spans)), _parse(sdk_encode(spans))
    assert fast == sdk
    assert enc.fallbacks == 0
    assert len(fast.resource_spans) > 3  # several pods' resources in one batch


def test_fast_encoder_handles_edge_values_and_falls_back_for_events() -> None:
    mem = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": "x", "n": -5}), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(mem))
    tracer = provider.get_tracer("t", "1.2")
    s = tracer.start_span(
        "edge",
        kind=SpanKind.CLIENT,
        attributes={"neg": -1, "zero": 0, "f": 0.0, "no": False, "empty": "", "big": 2**62, "ü": "ñ"},
        start_time=1,
    )
    s.set_status(Status(StatusCode.ERROR, "boom"))
    s.end(end_time=2)
    enc = FastSpanEncoder()
    spans = mem.get_finished_spans()
    assert _parse(enc.encode(spans)) == _parse(sdk_encode(spans))
    assert enc.fallbacks == 0
    with_event = tracer.start_span("ev", start_time=3)
    with_event.add_event("e", {"k": "v"}, timestamp=4)
    with_event.end(end_time=5)
    spans = mem.get_finished_spans()
    assert _parse(enc.encode(spans)) == _parse(sdk_encode(spans))
    assert enc.fallbacks == 1


def test_bytes_emitter_fast_and_sdk_modes_send_the_same_messages() -> None:
    out: dict[bool, list[bytes]] = {True: [], False: []}
    for fast in (True, False):
        em = OtlpSpanEmitter.to_bytes(out[fast].append, batch_size=16, fast=fast)
        for i in range(10):
            em.request_completed(pd_request(i))
        em.shutdown()
    assert [_parse(b) for b in out[True]] == [_parse(b) for b in out[False]]
