"""The service over HTTP, driven by the real OpenTelemetry SDK exporter (issue 2 "Show")."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace.export import SpanExportResult
from prometheus_client.parser import text_string_to_metric_families

from observer import conventions as c
from tests.support.otel import Req, VllmSpans, encode, export
from tests.support.server import Running, serve_in_thread

PB = {"Content-Type": c.CT_PROTOBUF}


def now_start() -> float:
    return time.time() - 5.0


@pytest.fixture
def svc(tmp_path: Path) -> Running:
    with serve_in_thread(tmp_path) as running:
        yield running  # type: ignore[misc]


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_real_exporter_aggregated_and_pd_requests_give_exact_hit_rates_and_tiers(svc: Running) -> None:
    sp = VllmSpans()
    t0 = now_start()
    # tenant-a: two aggregated requests, tiers given per tier.
    sp.aggregated(Req("tenant-a", prompt=1000, output=50, cached={"hbm": 600, "dram": 100}, start=t0))
    sp.aggregated(
        Req("tenant-a", prompt=3000, output=10, cached={"hbm": 300, "disk": 200, "remote": 100}, start=t0)
    )
    # tenant-b: a P/D pair (counted once) whose cached tokens come from the prefill side,
    # and an aggregated request with only a cached total (-> unknown tier).
    sp.pd_pair(Req("tenant-b", prompt=2000, output=100, cached={"hbm": 1500}, start=t0))
    sp.aggregated(Req("tenant-b", prompt=1000, output=20, cached_total=250, start=t0))
    # tenant-c: P/D pair whose tenant is only on the EPP span of the same trace.
    sp.pd_pair(
        Req("tenant-c", prompt=4000, output=40, cached={"dram": 1000}, start=t0), tenant_on_epp_only=True
    )
    assert export(svc.url + c.OTLP_TRACES_PATH, sp.take()) == SpanExportResult.SUCCESS

    tenants = svc.tenants()
    a, b, cc = tenants["tenant-a"], tenants["tenant-b"], tenants["tenant-c"]
    assert a["requests"] == 2
    assert a["prompt_tokens"] == 4000
    assert a["cached_tokens"] == 1300
    assert a["prefix_hit_rate"] == pytest.approx(1300 / 4000)
    assert a["cached_tokens_by_tier"] == {"hbm": 900, "dram": 100, "disk": 200, "remote": 100, "unknown": 0}
    assert b["requests"] == 2, "a P/D pair is one request"
    assert b["prompt_tokens"] == 3000
    assert b["cached_tokens_by_tier"] == {"hbm": 1500, "dram": 0, "disk": 0, "remote": 0, "unknown": 250}
    assert b["prefix_hit_rate"] == pytest.approx(1750 / 3000)
    assert cc["requests"] == 1
    assert cc["cached_tokens_by_tier"]["dram"] == 1000
    assert "unknown" not in tenants

    m = metric_samples(svc.get("/metrics").text)
    assert m[("pd_observer_requests_total", (("model", "llama-3-70b"), ("tenant", "tenant-b")))] == 2
    assert m[("pd_observer_prompt_tokens_total", (("model", "llama-3-70b"), ("tenant", "tenant-a")))] == 4000
    key = (
        "pd_observer_cached_tokens_total",
        (("model", "llama-3-70b"), ("tenant", "tenant-a"), ("tier", "hbm")),
    )
    assert m[key] == 900
    unk = (
        "pd_observer_cached_tokens_total",
        (("model", "llama-3-70b"), ("tenant", "tenant-b"), ("tier", "unknown")),
    )
    assert m[unk] == 250


def test_request_phase_breakdown_for_a_pd_pair(svc: Running) -> None:
    sp = VllmSpans()
    r = Req(
        "tenant-a",
        prompt=2000,
        output=101,
        queue=0.02,
        prefill=0.3,
        decode=1.0,
        start=now_start(),
        request_id="pd-1",
    )
    sp.pd_pair(r, gap=0.01)
    assert export(svc.url + c.OTLP_TRACES_PATH, sp.take()) == SpanExportResult.SUCCESS
    body = svc.get("/api/v1/requests/pd-1").json()
    assert body["disaggregated"] is True
    assert body["prompt_tokens"] == 2000
    assert body["output_tokens"] == 101
    ph = body["phases_seconds"]
    assert ph["prefill"] == pytest.approx(0.3)
    assert ph["kv_transfer"] == pytest.approx(0.01, abs=1e-6)
    assert ph["decode"] == pytest.approx(1.0)
    assert body["itl_seconds"] == pytest.approx(1.0 / 100)
    assert svc.get("/api/v1/requests/nope").status_code == 404


def test_json_and_gzip_bodies(svc: Running) -> None:
    sp = VllmSpans()
    sp.aggregated(Req("json-tenant", prompt=100, output=5, cached={"hbm": 40}, start=now_start()))
    pb = encode(sp.take())
    from google.protobuf.json_format import MessageToJson
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    msg = ExportTraceServiceRequest()
    msg.ParseFromString(pb)
    # OTLP/JSON: hex ids (json_format gives base64, so convert), lowerCamelCase keys.
    doc = json.loads(MessageToJson(msg))
    import base64

    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for s in ss["spans"]:
                s["traceId"] = base64.b64decode(s["traceId"]).hex()
                s["spanId"] = base64.b64decode(s["spanId"]).hex()
                s.pop("parentSpanId", None)
                s["someFutureField"] = {"ignored": True}
    body = json.dumps(doc).encode()
    r = svc.post(
        c.OTLP_TRACES_PATH,
        content=gzip.compress(body),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert svc.tenants()["json-tenant"]["cached_tokens"] == 40

    sp.aggregated(Req("gz-tenant", prompt=100, output=5, start=now_start()))
    r = svc.post(
        c.OTLP_TRACES_PATH,
        content=gzip.compress(encode(sp.take())),
        headers={**PB, "Content-Encoding": "gzip"},
    )
    assert r.status_code == 200
    assert svc.tenants()["gz-tenant"]["requests"] == 1


def test_bad_inputs_get_the_right_status_and_nothing_crashes(svc: Running) -> None:
    sp = VllmSpans()
    sp.aggregated(Req("t", prompt=100, output=5, start=now_start()))
    good = encode(sp.take())

    r = svc.post(c.OTLP_TRACES_PATH, content=b"\x00\xffgarbage\x13\x37", headers=PB)
    assert r.status_code == 400
    st = status_pb2.Status()
    st.ParseFromString(r.content)
    assert st.code == 400
    assert st.message

    assert svc.post(c.OTLP_TRACES_PATH, content=good[: len(good) // 2], headers=PB).status_code == 400
    assert (
        svc.post(
            c.OTLP_TRACES_PATH, content=b"{not json", headers={"Content-Type": "application/json"}
        ).status_code
        == 400
    )
    assert (
        svc.post(c.OTLP_TRACES_PATH, content=good, headers={"Content-Type": "text/plain"}).status_code == 415
    )
    assert (
        svc.post(c.OTLP_TRACES_PATH, content=good, headers={**PB, "Content-Encoding": "br"}).status_code
        == 415
    )
    assert (
        svc.post(
            c.OTLP_TRACES_PATH, content=b"not gzip", headers={**PB, "Content-Encoding": "gzip"}
        ).status_code
        == 400
    )
    # oversize body (default cap 16 MiB)
    assert svc.post(c.OTLP_TRACES_PATH, content=b"\x00" * (17 * 1024 * 1024), headers=PB).status_code == 413
    # gzip bomb: 200 MiB of zeros in ~200 KiB
    bomb = gzip.compress(b"\x00" * (200 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 1024 * 1024
    assert (
        svc.post(c.OTLP_TRACES_PATH, content=bomb, headers={**PB, "Content-Encoding": "gzip"}).status_code
        == 413
    )
    # the service is still fine and nothing was counted from the bad bodies
    assert svc.get("/healthz").status_code == 200
    assert "t" not in svc.tenants()


def test_partial_success_keeps_valid_spans_of_the_same_batch(svc: Running) -> None:
    sp = VllmSpans()
    t0 = now_start()
    sp.aggregated(Req("ok-tenant", prompt=500, output=5, cached={"hbm": 100}, start=t0))
    sp.aggregated(Req("ok-tenant", prompt=500, output=5, start=t0))
    spans = sp.take()
    # An engine span with no prompt token count cannot be used.
    from opentelemetry.sdk.trace import TracerProvider

    tp = TracerProvider()
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    mem = InMemorySpanExporter()
    tp.add_span_processor(SimpleSpanProcessor(mem))
    bad = tp.get_tracer("vllm").start_span(
        c.SPAN_VLLM_REQUEST, attributes={c.ATTR_TENANT_ID: "ok-tenant", c.ATTR_LAT_E2E: 1.0}
    )
    bad.end()
    r = svc.post(c.OTLP_TRACES_PATH, content=encode([*spans, *mem.get_finished_spans()]), headers=PB)
    assert r.status_code == 200
    resp = ExportTraceServiceResponse()
    resp.ParseFromString(r.content)
    assert resp.partial_success.rejected_spans == 1
    assert resp.partial_success.error_message
    t = svc.tenants()["ok-tenant"]
    assert t["requests"] == 2
    assert t["cached_tokens"] == 100


def test_engine_spans_from_the_future_are_rejected_and_not_counted_again_by_a_rebuild(tmp_path: Path) -> None:
    """An engine span ending past the receiver's clock plus ingest.max_clock_skew_seconds is
    rejected through partial_success; within the skew it is kept. A rebuild of the windows from
    the store (here an SLO change) finds no stored record from the future to count again."""
    with serve_in_thread(tmp_path, {"ingest": {"max_clock_skew_seconds": 60}}) as svc:
        sp = VllmSpans()
        now = time.time()
        sp.aggregated(Req("skew", prompt=100, output=2, start=now - 5))
        sp.aggregated(Req("skew", prompt=200, output=2, start=now + 29))  # ends ~30 s ahead: kept
        sp.aggregated(Req("skew", prompt=400, output=2, start=now + 3600))  # an hour ahead: rejected
        r = svc.post(c.OTLP_TRACES_PATH, content=encode(sp.take()), headers=PB)
        assert r.status_code == 200
        resp = ExportTraceServiceResponse.FromString(r.content)
        assert resp.partial_success.rejected_spans == 1
        assert "ingest.max_clock_skew_seconds" in resp.partial_success.error_message
        assert svc.tenants()["skew"]["prompt_tokens"] == 300
        put = svc.put(
            "/api/v1/slos",
            json={"slos": [{"name": "fast", "sli": "ttft", "objective": 0.9, "threshold_seconds": 1}]},
        )
        assert put.status_code == 200
        assert svc.tenants()["skew"]["prompt_tokens"] == 300  # rebuilt from the store: once each


def test_slo_attainment_is_judged_per_request_at_the_exact_threshold(svc: Running) -> None:
    put = svc.put(
        "/api/v1/slos",
        json={
            "slos": [
                {"name": "ttft-500ms", "sli": "ttft", "objective": 0.9, "threshold_seconds": 0.5},
                {"name": "avail", "sli": "error", "objective": 0.99},
            ]
        },
    )
    assert put.status_code == 200, put.text
    sp = VllmSpans()
    t0 = now_start()
    for ttft in (0.5, 0.5, 0.4999, 0.5001):  # exactly at the threshold is good
        sp.aggregated(Req("slo-t", prompt=10, output=2, ttft=ttft, start=t0))
    sp.aggregated(Req("slo-t", prompt=10, output=2, ttft=0.1, error=True, start=t0))
    assert export(svc.url + c.OTLP_TRACES_PATH, sp.take()) == SpanExportResult.SUCCESS
    slo = svc.tenants()["slo-t"]["slo"]
    assert slo["ttft-500ms"]["attainment"] == pytest.approx(3 / 4)
    assert slo["ttft-500ms"]["burn_rate"] == pytest.approx((1 - 3 / 4) / (1 - 0.9))
    assert slo["avail"]["attainment"] == pytest.approx(4 / 5)
    assert svc.get("/api/v1/slos").json()["slos"][0]["name"] == "ttft-500ms"
    bad = svc.put(
        "/api/v1/slos",
        json={"slos": [{"name": "x", "sli": "ttft", "objective": 1.5, "threshold_seconds": 1}]},
    )
    assert bad.status_code == 422
    assert "objective" in bad.json()["detail"]


def test_window_parameter_is_validated(svc: Running) -> None:
    assert svc.get("/api/v1/tenants", params={"window": 0}).status_code == 422
    assert svc.get("/api/v1/tenants", params={"window": 999999}).status_code == 400
    body = svc.get("/api/v1/tenants", params={"window": 60}).json()
    assert body == {"window_seconds": 60, "tenants": []}
    assert svc.get("/api/v1/tenants/ghost").status_code == 404
    assert svc.get("/docs").status_code == 200
    assert svc.get("/openapi.json").json()["info"]["title"] == "pd-observer"


def test_bearer_token_guards_ingest_and_api(tmp_path: Path) -> None:
    with serve_in_thread(tmp_path, {"server": {"auth_token": "s3cret"}}) as svc:
        sp = VllmSpans()
        sp.aggregated(Req("auth-t", prompt=10, output=2, start=now_start()))
        spans = sp.take()
        refused = svc.post(c.OTLP_TRACES_PATH, content=encode(spans), headers=PB)
        assert refused.status_code == 401
        assert refused.headers["content-type"] == c.CT_PROTOBUF  # an OTLP client's error, in its encoding
        assert status_pb2.Status.FromString(refused.content).message == "missing or invalid bearer token"
        as_json = svc.post(c.OTLP_TRACES_PATH, content=b"{}", headers={"Content-Type": c.CT_JSON})
        assert (as_json.status_code, as_json.json()["code"]) == (401, 401)
        scraped = svc.get("/metrics", headers={"Authorization": "Bearer s3cret"}).text
        assert metric_samples(scraped)[(c.M_INGEST_BATCHES + "_total", (("status", "unauthorized"),))] == 2
        assert svc.get("/api/v1/tenants").status_code == 401
        assert svc.get("/metrics").status_code == 401
        assert svc.get("/healthz").status_code == 200
        ok = export(svc.url + c.OTLP_TRACES_PATH, spans, headers={"Authorization": "Bearer s3cret"})
        assert ok == SpanExportResult.SUCCESS
        r = svc.get("/api/v1/tenants", params={"window": 300}, headers={"Authorization": "Bearer s3cret"})
        assert r.json()["tenants"][0]["tenant"] == "auth-t"
