"""OTLP span emitter: real SDK spans, real OTLP encoding, real HTTP exporter."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as PbStatus
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from observer import conventions as c
from simulator.emit.otlp import OtlpSpanEmitter, collecting_sink, span_id_for, trace_id_for
from tests.support.httpstub import running

from .factories import local_request, pd_request


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind)


def decode_bodies(bodies: list[bytes]) -> list[dict[str, Any]]:
    """Flatten OTLP requests into dicts: name, kind, ids, attrs, resource, status."""
    out: list[dict[str, Any]] = []
    for body in bodies:
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        for rs in req.resource_spans:
            res = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    out.append(
                        {
                            "name": s.name,
                            "kind": s.kind,
                            "trace_id": s.trace_id.hex(),
                            "span_id": s.span_id.hex(),
                            "parent": s.parent_span_id.hex(),
                            "start": s.start_time_unix_nano,
                            "end": s.end_time_unix_nano,
                            "attrs": {kv.key: _value(kv.value) for kv in s.attributes},
                            "res": res,
                            "status": s.status.code,
                        }
                    )
    return out


def test_pd_request_is_one_trace_with_epp_sidecar_and_two_engine_spans() -> None:
    bodies, sink = collecting_sink()
    em = OtlpSpanEmitter.to_bytes(sink, batch_size=100)
    req = pd_request(0)
    em.request_completed(req)
    assert bodies == []  # batched: nothing sent before flush
    em.flush()
    spans = decode_bodies(bodies)
    assert len(spans) == 5
    assert {s["trace_id"] for s in spans} == {f"{trace_id_for(req.trace_seed):032x}"}
    by_id = {s["span_id"]: s for s in spans}
    names = sorted(s["name"] for s in spans)
    assert names == sorted(
        [
            c.SPAN_EPP_GATEWAY,
            c.SPAN_SIDECAR_PREFILL,
            c.SPAN_SIDECAR_DECODE,
            c.SPAN_VLLM_REQUEST,
            c.SPAN_VLLM_REQUEST,
        ]
    )
    (root,) = [s for s in spans if s["parent"] == ""]
    assert root["name"] == c.SPAN_EPP_GATEWAY
    assert root["kind"] == PbSpan.SPAN_KIND_SERVER
    assert root["attrs"][c.ATTR_FAIRNESS_ID] == "acme"
    assert root["attrs"][c.ATTR_REQUEST_MODEL] == "llama-3-70b"
    assert root["attrs"][c.ATTR_EPP_PD_USED] is True
    assert root["res"][c.RES_SERVICE_NAME] == c.SERVICE_EPP
    assert root["start"] == round(req.arrival * 1e9)
    assert root["end"] == round(req.decode.finished * 1e9)

    engines = {s["res"][c.RES_LLMD_ROLE]: s for s in spans if s["name"] == c.SPAN_VLLM_REQUEST}
    pre, dec = engines[c.ROLE_PREFILL], engines[c.ROLE_DECODE]
    # engine spans hang under the sidecar spans, which hang under the gateway span
    assert by_id[pre["parent"]]["name"] == c.SPAN_SIDECAR_PREFILL
    assert by_id[dec["parent"]]["name"] == c.SPAN_SIDECAR_DECODE
    assert by_id[pre["parent"]]["parent"] == root["span_id"]
    assert by_id[pre["parent"]]["res"][c.RES_SERVICE_NAME] == c.SERVICE_ROUTING_PROXY
    assert by_id[pre["parent"]]["attrs"][c.ATTR_SIDECAR_PREFILL_TARGET] == "pd-prefill-0"
    for s in (pre, dec):
        assert s["kind"] == PbSpan.SPAN_KIND_SERVER
        assert s["attrs"][c.ATTR_TENANT_ID] == "acme"
        assert s["res"][c.RES_NAMESPACE] == "llm-d"
    assert pre["res"][c.RES_SERVICE_NAME] == c.SERVICE_VLLM_PREFILL
    assert pre["res"][c.RES_POD_NAME] == "pd-prefill-0"
    assert dec["res"][c.RES_SERVICE_NAME] == c.SERVICE_VLLM_DECODE
    assert dec["res"][c.RES_POD_NAME] == "pd-decode-0"
    # real vLLM gen_ai.* attributes
    pa = pre["attrs"]
    assert pa[c.ATTR_PROMPT_TOKENS] == 2000
    assert pa[c.ATTR_COMPLETION_TOKENS] == 1
    assert pa[c.ATTR_LAT_QUEUE] == pytest.approx(0.008, abs=1e-6)
    assert pa[c.ATTR_LAT_TTFT] == pytest.approx(0.108, abs=1e-6)
    assert pa[c.ATTR_LAT_PREFILL] == pytest.approx(0.100, abs=1e-6)
    assert pa[c.ATTR_LAT_E2E] == pytest.approx(0.109, abs=1e-6)
    # cached tokens: prefill side only for P/D (never double counted)
    assert pa[c.ATTR_CACHED_TOKENS] == 1536
    assert pa[c.ATTR_TIER_HIT[c.TIER_HBM]] == 1024
    assert pa[c.ATTR_TIER_HIT[c.TIER_DRAM]] == 512
    da = dec["attrs"]
    assert c.ATTR_CACHED_TOKENS not in da
    assert da[c.ATTR_COMPLETION_TOKENS] == 101
    assert da[c.ATTR_LAT_DECODE] == pytest.approx(1.0, abs=1e-6)
    assert da[c.ATTR_LAT_INFERENCE] == pytest.approx(1.019, abs=1e-6)
    assert dec["start"] == round(req.decode.arrival * 1e9)
    assert all(s["status"] == PbStatus.STATUS_CODE_UNSET for s in spans)


def test_local_prefill_request_has_gateway_and_one_engine_span() -> None:
    mem = InMemorySpanExporter()
    em = OtlpSpanEmitter.to_exporter(mem, batch_size=1)
    em.request_completed(local_request(3))
    spans = mem.get_finished_spans()  # batch_size=1: exported as they end
    assert [s.name for s in spans] == [c.SPAN_VLLM_REQUEST, c.SPAN_EPP_GATEWAY]
    eng, gw = spans
    assert eng.parent is not None
    assert eng.parent.span_id == gw.context.span_id
    assert gw.attributes is not None
    assert gw.attributes[c.ATTR_EPP_PD_USED] is False
    assert eng.attributes is not None
    assert eng.attributes[c.ATTR_CACHED_TOKENS] == 256
    assert eng.attributes[c.ATTR_TIER_HIT[c.TIER_HBM]] == 256
    assert eng.resource.attributes[c.RES_LLMD_ROLE] == c.ROLE_DECODE
    assert em.stats.spans == 2


def test_error_request_marks_gateway_and_decode_engine_error() -> None:
    bodies, sink = collecting_sink()
    em = OtlpSpanEmitter.to_bytes(sink)
    em.request_completed(pd_request(1, error=True))
    em.flush()
    spans = decode_bodies(bodies)
    errored = {
        (s["name"], s["res"].get(c.RES_LLMD_ROLE)) for s in spans if s["status"] == PbStatus.STATUS_CODE_ERROR
    }
    assert (c.SPAN_EPP_GATEWAY, None) in errored
    assert (c.SPAN_VLLM_REQUEST, c.ROLE_DECODE) in errored
    assert (c.SPAN_VLLM_REQUEST, c.ROLE_PREFILL) not in errored


def test_ids_are_deterministic_and_distinct_per_request() -> None:
    def run() -> list[dict[str, Any]]:
        bodies, sink = collecting_sink()
        em = OtlpSpanEmitter.to_bytes(sink, batch_size=7)
        for i in range(20):
            em.request_completed(pd_request(i) if i % 2 else local_request(i))
        em.shutdown()
        return decode_bodies(bodies)

    a, b = run(), run()
    assert [(s["trace_id"], s["span_id"], s["parent"]) for s in a] == [
        (s["trace_id"], s["span_id"], s["parent"]) for s in b
    ]
    assert len({s["trace_id"] for s in a}) == 20
    assert len({s["span_id"] for s in a}) == len(a) == 10 * 5 + 10 * 2
    req = pd_request(1)
    assert any(s["span_id"] == f"{span_id_for(req.trace_seed, 0):016x}" for s in a)


def test_sync_batching_sends_every_n_spans_without_threads() -> None:
    bodies, sink = collecting_sink()
    before = threading.active_count()
    em = OtlpSpanEmitter.to_bytes(sink, batch_size=10)
    for i in range(4):
        em.request_completed(pd_request(i))  # 20 spans -> 2 batches of 10
    assert len(bodies) == 2
    assert threading.active_count() == before
    em.request_completed(local_request(0))
    assert len(bodies) == 2
    em.flush()
    assert len(bodies) == 3
    assert len(decode_bodies(bodies)) == 22


class _Receiver(BaseHTTPRequestHandler):
    bodies: list[bytes]
    headers_seen: list[dict[str, str]]

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        type(self).bodies.append(raw)
        type(self).headers_seen.append({k.lower(): v for k, v in self.headers.items()})
        out = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", c.CT_PROTOBUF)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def otlp_receiver() -> Iterator[tuple[str, type[_Receiver]]]:
    handler = type("Recv", (_Receiver,), {"bodies": [], "headers_seen": []})
    with running(handler) as url:
        yield f"{url}{c.OTLP_TRACES_PATH}", handler


def test_real_otlp_http_exporter_delivers_to_a_loopback_receiver(
    otlp_receiver: tuple[str, type[_Receiver]],
) -> None:
    url, handler = otlp_receiver
    em = OtlpSpanEmitter.to_endpoint(url, batch_size=64, schedule_delay_millis=50)
    for i in range(10):
        em.request_completed(pd_request(i, tenant=f"t{i % 3}"))
    em.shutdown()  # flushes through the real OTLPSpanExporter
    assert handler.headers_seen
    assert handler.headers_seen[0]["content-type"] == c.CT_PROTOBUF
    spans = decode_bodies(handler.bodies)
    assert len(spans) == 50
    traces = {s["trace_id"] for s in spans}
    assert traces == {f"{trace_id_for(pd_request(i).trace_seed):032x}" for i in range(10)}
    tenants = {s["attrs"][c.ATTR_FAIRNESS_ID] for s in spans if s["name"] == c.SPAN_EPP_GATEWAY}
    assert tenants == {"t0", "t1", "t2"}
