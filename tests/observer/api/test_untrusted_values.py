"""Hostile strings and label cardinality through the real service (uvicorn in a thread, real
OTLP exporter, SQLite and PostgreSQL stores): NUL and lone surrogates are stored and exported,
long values give bounded labels, and model folding bounds the /metrics series. Client text quoted
back in OTLP answers (reject reasons, error statuses) stays short, through the real app."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace.export import SpanExportResult
from prometheus_client.parser import text_string_to_metric_families

from observer import conventions as c
from observer.api.app import create_app
from observer.config import Settings
from observer.model import RejectReason
from observer.store.memory import MemoryStore
from tests.support.otel import Req, VllmSpans, export
from tests.support.server import Running, serve_in_thread

R = c.VALUE_REPLACEMENT
MAX = c.MAX_VALUE_CHARS
KIB400 = 400 * 1024


@pytest.fixture
def svc(tmp_path: Path, db_url: str) -> Iterator[Running]:
    with serve_in_thread(tmp_path, {"store": {"url": db_url}}) as running:
        yield running


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for fam in text_string_to_metric_families(text) for s in fam.samples]


def json_span(tenant: str, request_id: str, start: float) -> bytes:
    span = {
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": "eee19b7ec3c1b174",
        "name": c.SPAN_VLLM_REQUEST,
        "startTimeUnixNano": str(int(start * 1e9)),
        "endTimeUnixNano": str(int((start + 0.9) * 1e9)),
        "attributes": [
            {"key": c.ATTR_TENANT_ID, "value": {"stringValue": tenant}},
            {"key": c.ATTR_REQUEST_ID, "value": {"stringValue": request_id}},
            {"key": c.ATTR_REQUEST_MODEL, "value": {"stringValue": "llama"}},
            {"key": c.ATTR_PROMPT_TOKENS, "value": {"intValue": "100"}},
            {"key": c.ATTR_LAT_E2E, "value": {"doubleValue": 0.9}},
        ],
    }
    resource = {"attributes": [{"key": c.RES_POD_NAME, "value": {"stringValue": "vllm-\x00-0"}}]}
    return json.dumps({"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": [span]}]}]}).encode()


def test_nul_and_lone_surrogate_strings_are_accepted_stored_and_exported(svc: Running) -> None:
    t0 = time.time() - 5
    body = json_span("\ud800", "json-1", t0)
    assert b'"\\ud800"' in body  # what the audit sent: json.loads gives a lone surrogate
    r = svc.post(c.OTLP_TRACES_PATH, content=body, headers={"Content-Type": c.CT_JSON})
    assert r.status_code == 200, r.text
    assert r.json() == {}  # accepted, nothing rejected

    sp = VllmSpans()
    sp.aggregated(Req("x\x00", prompt=200, output=3, start=t0, request_id="pb-1"), pod="pod\x00")
    assert export(svc.url + c.OTLP_TRACES_PATH, sp.take()) == SpanExportResult.SUCCESS

    # stored: the request API reads the records back from the store
    json_rec = svc.get("/api/v1/requests/json-1").json()
    assert (json_rec["tenant"], json_rec["decode_pod"]) == (R, f"vllm-{R}-0")
    pb_rec = svc.get("/api/v1/requests/pb-1").json()
    assert (pb_rec["tenant"], pb_rec["decode_pod"], pb_rec["prompt_tokens"]) == ("x" + R, "pod" + R, 200)
    tenants = svc.tenants()
    assert tenants[R]["requests"] == 1
    assert tenants["x" + R]["requests"] == 1
    metrics = svc.get("/metrics")
    assert metrics.status_code == 200
    requests = {s[1]["tenant"]: s[2] for s in samples(metrics.text) if s[0] == c.M_REQUESTS + "_total"}
    assert requests == {R: 1.0, "x" + R: 1.0}


def test_long_tenants_and_models_give_bounded_labels_and_stay_distinct(svc: Running) -> None:
    """The audit's 10 spans with 400 KiB tenant.id and model (GET /metrics was 287 MB); the
    tenants differ only in their last character and stay 10 distinct tenants."""
    t0 = time.time() - 5
    sp = VllmSpans()
    for i in range(10):
        sp.aggregated(Req("t" * KIB400 + str(i), prompt=100, output=2, model="m" * KIB400 + str(i), start=t0))
    assert export(svc.url + c.OTLP_TRACES_PATH, sp.take()) == SpanExportResult.SUCCESS

    tenants = svc.tenants()
    assert len(tenants) == 10
    assert all(len(t) == MAX and t.startswith("t" * 200) for t in tenants)
    assert all(entry["requests"] == 1 for entry in tenants.values())
    metrics = svc.get("/metrics").text
    assert len(metrics) < 2_000_000
    found = samples(metrics)
    labels = [v for _, lab, _ in found for v in lab.values()]
    assert max(map(len, labels)) == MAX
    per_model = {s[1]["model"] for s in found if s[0] == c.M_REQUESTS + "_total"}
    assert len(per_model) == 10
    # each occurrence is counted: 10 tenants and 10 models on the engine spans, and the same on
    # the trace hints resolved from those spans (request ids and pods were short)
    rewritten = [v for name, _, v in found if name == c.M_INGEST_VALUES_REWRITTEN + "_total"]
    assert rewritten == [40.0]


def test_model_folding_bounds_the_metrics_series(tmp_path: Path) -> None:
    """The audit's 2,000 spans with distinct tenants and models at max_tenants 5: the per-model
    counters hold at most (max_tenants + 1) x (max_models + 1) series."""
    overrides = {"aggregation": {"max_tenants": 5, "max_models": 3}}
    t0 = time.time() - 5
    sp = VllmSpans()
    for i in range(2000):
        sp.aggregated(Req(f"tenant-{i}", prompt=10, output=2, model=f"model-{i}", start=t0))
    with serve_in_thread(tmp_path, overrides) as svc:
        assert export(svc.url + c.OTLP_TRACES_PATH, sp.take()) == SpanExportResult.SUCCESS
        found = samples(svc.get("/metrics").text)
    by_name: dict[str, list[tuple[dict[str, str], float]]] = {}
    for name, labels, value in found:
        by_name.setdefault(name, []).append((labels, value))
    requests = by_name[c.M_REQUESTS + "_total"]
    assert len(requests) <= (5 + 1) * (3 + 1)
    assert sum(v for _, v in requests) == 2000
    assert len({lab["model"] for lab, _ in requests}) == 3 + 1
    assert len(by_name[c.M_CACHED_TOKENS + "_total"]) == len(requests) * len(c.TIERS)
    assert by_name[c.M_MODELS_FOLDED + "_total"] == [({}, 1997.0)]
    assert by_name[c.M_TRACKED_MODELS] == [({}, 3.0)]
    assert by_name[c.M_TENANTS_FOLDED + "_total"] == [({}, 1995.0)]


# --------------------------------------------------------------------------- client text in answers

HUGE_NAME = "llm_request-" + "n" * (4 << 20)  # 4 MiB: 5 spans made a 20 MB answer
QUOTED = repr(HUGE_NAME[: c.REASON_VALUE_CHARS]) + c.MESSAGE_ELLIPSIS


@pytest.fixture
def client() -> Iterator[TestClient]:
    settings = Settings(server={"max_body_bytes": 64 << 20, "max_decompressed_bytes": 64 << 20})
    with TestClient(create_app(settings, MemoryStore())) as test_client:
        yield test_client


def _json_body(spans: list[dict[str, object]], resource: list[dict[str, object]] | None = None) -> bytes:
    rs = {"resource": {"attributes": resource or []}, "scopeSpans": [{"spans": spans}]}
    return json.dumps({"resourceSpans": [rs]}).encode()


def _engine_json(span_id: str, **extra: object) -> dict[str, object]:
    now = int(time.time() * 1e9)
    attrs = [{"key": c.ATTR_PROMPT_TOKENS, "value": {"intValue": "10"}}]
    return {
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": span_id,
        "name": c.SPAN_VLLM_REQUEST,
        "startTimeUnixNano": str(now - 10**9),
        "endTimeUnixNano": str(now),
        "attributes": attrs,
        **extra,
    }


def test_a_huge_span_name_gives_a_small_informative_json_answer(client: TestClient) -> None:
    bad = [_engine_json("not-hex", name=HUGE_NAME) for _ in range(5)]  # invalid span ids
    r = client.post(c.OTLP_TRACES_PATH, content=_json_body(bad), headers={"Content-Type": c.CT_JSON})
    assert r.status_code == 200
    assert len(r.content) < 2_000
    partial = r.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "5"
    message = partial["errorMessage"]
    assert message.startswith(f"{RejectReason.BAD_IDS.value} (span {QUOTED})")
    assert message.count(QUOTED) == 5


def test_a_huge_span_name_gives_a_small_informative_protobuf_answer(client: TestClient) -> None:
    req = ExportTraceServiceRequest()
    spans = req.resource_spans.add().scope_spans.add()
    for _ in range(5):
        sp = spans.spans.add()
        sp.name, sp.trace_id, sp.span_id = HUGE_NAME, bytes(16), b"\x01" * 8  # all-zero trace id
    r = client.post(
        c.OTLP_TRACES_PATH, content=req.SerializeToString(), headers={"Content-Type": c.CT_PROTOBUF}
    )
    assert r.status_code == 200
    assert len(r.content) < 2_000
    resp = ExportTraceServiceResponse.FromString(r.content)
    assert resp.partial_success.rejected_spans == 5
    assert resp.partial_success.error_message.startswith(f"{RejectReason.BAD_IDS.value} (span {QUOTED})")


def test_huge_client_values_give_short_reasons_and_error_statuses(client: TestClient) -> None:
    big = "7x" * (2 << 20)
    tokens = [{"key": c.ATTR_PROMPT_TOKENS, "value": {"stringValue": big}}]
    spans = [
        _engine_json("eee19b7ec3c1b174", attributes=tokens),  # resolve: not a token count
        _engine_json("eee19b7ec3c1b175", attributes=[{"key": "x", "value": {"doubleValue": big}}]),
        _engine_json("eee19b7ec3c1b176"),  # a good one: accepted
    ]
    r = client.post(c.OTLP_TRACES_PATH, content=_json_body(spans), headers={"Content-Type": c.CT_JSON})
    assert r.status_code == 200
    assert len(r.content) < 1_000
    partial = r.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "2"
    reasons = partial["errorMessage"].split("; ")
    quoted = f"{c.ATTR_PROMPT_TOKENS}={big[: c.REASON_VALUE_CHARS]!r}{c.MESSAGE_ELLIPSIS}"
    assert any(quoted in x for x in reasons)
    assert all(len(x) <= c.MAX_REASON_CHARS for x in reasons)
    # a 400 whose message quotes a client value (float()'s text about a resource attribute)
    resource = [{"key": "x", "value": {"doubleValue": big}}]
    body = _json_body([_engine_json("eee19b7ec3c1b177")], resource)
    r = client.post(c.OTLP_TRACES_PATH, content=body, headers={"Content-Type": c.CT_JSON})
    assert r.status_code == 400
    assert len(r.json()["message"]) == c.MAX_ERROR_MESSAGE_CHARS
    assert r.json()["message"].startswith("invalid resource attributes: could not convert string to float")
    # a protobuf error status quoting a client header (415: the unsupported Content-Encoding)
    headers = {"Content-Type": c.CT_PROTOBUF, "Content-Encoding": "br" + "r" * 60_000}
    r = client.post(c.OTLP_TRACES_PATH, content=b"", headers=headers)
    assert r.status_code == 415
    message = status_pb2.Status.FromString(r.content).message
    assert len(message) == c.MAX_ERROR_MESSAGE_CHARS
    assert message.startswith("unsupported Content-Encoding 'brrr")
