"""`decode_and_resolve` (the fused protobuf path) gives exactly `decode_traces` + `resolve_batch`."""

from __future__ import annotations

import json
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from observer import conventions as c
from observer.config import IngestSettings
from observer.ingest import fastpath
from observer.ingest.otlp import BadRequest, PayloadTooLarge, UnsupportedMediaType
from observer.ingest.resolve import ResolveConfig, ResolvedBatch, decode_and_resolve
from observer.model import RejectReason

from .otlp_builders import SpanSpec, encode, engine_attrs, gz, two_step

CFG = ResolveConfig.from_settings(IngestSettings())
BIG = 1 << 24
PRE = {c.RES_SERVICE_NAME: c.SERVICE_VLLM_PREFILL, c.RES_POD_NAME: "p-0", c.RES_LLMD_ROLE: c.ROLE_PREFILL}
DEC = {c.RES_SERVICE_NAME: "pool-decode", c.RES_POD_NAME: "d-0", c.ATTR_TENANT_ID: "res-t"}
AGG = {c.RES_SERVICE_NAME: "vllm", c.RES_POD_NAME: "a-0"}
EPP = {c.RES_SERVICE_NAME: c.SERVICE_EPP}


def _specs() -> list[SpanSpec]:
    bad: list[dict[str, Any]] = [
        {c.ATTR_COMPLETION_TOKENS: 5},
        {c.ATTR_PROMPT_TOKENS: -1},
        {c.ATTR_PROMPT_TOKENS: "12"},
        {c.ATTR_PROMPT_TOKENS: "many"},
        {c.ATTR_PROMPT_TOKENS: 1.5},
        {c.ATTR_PROMPT_TOKENS: 2.0, c.ATTR_LAT_TTFT: "0.25"},
        {c.ATTR_PROMPT_TOKENS: True},
        {c.ATTR_PROMPT_TOKENS: 10, c.ATTR_CACHED_TOKENS: 11},
        {c.ATTR_PROMPT_TOKENS: 10, c.ATTR_LAT_TTFT: float("nan")},
        {c.ATTR_PROMPT_TOKENS: 10, c.ATTR_LAT_E2E: float("inf")},
        {c.ATTR_PROMPT_TOKENS: 10, c.ATTR_LAT_QUEUE: -0.1},
        {c.ATTR_PROMPT_TOKENS: 2**60 + 1, c.ATTR_LAT_E2E: 1},
    ]
    out = [
        SpanSpec(c.SPAN_VLLM_REQUEST, 1000 + i, 10.0 + i, 11.0 + i, {c.ATTR_TENANT_ID: f" t{i} ", **a}, AGG)
        for i, a in enumerate(bad)
    ]
    for i in range(6):
        tid = 5000 + i
        tiers = {c.ATTR_TIER_HIT[c.TIER_HBM]: 100, c.ATTR_TIER_HIT[c.TIER_DRAM]: i, c.ATTR_CACHED_TOKENS: 300}
        out += [
            SpanSpec(
                c.SPAN_EPP_GATEWAY,
                tid,
                1.0,
                3.0,
                {c.ATTR_FAIRNESS_ID: "acme", c.ATTR_EPP_PD_USED: "true"},
                EPP,
            ),
            SpanSpec(
                c.SPAN_VLLM_REQUEST, tid, 1.0, 1.5, engine_attrs(500, 1, request_id=f"p{i}", extra=tiers), PRE
            ),
            SpanSpec(c.SPAN_VLLM_REQUEST, tid, 1.6, 3.0, engine_attrs(500, 40, request_id=f"d{i}"), DEC),
            SpanSpec(c.SPAN_EPP_SCORING, tid, 1.0, 1.01, {}, EPP),
        ]
    out.append(
        SpanSpec("other", 9000, 1.0, 2.0, {c.ATTR_LAT_E2E: 1.0, c.ATTR_INPUT_TOKENS: 7}, AGG, error=True)
    )
    return out


def _reference(body: bytes, ct: str, ce: str | None) -> ResolvedBatch:
    return two_step(body, ct, ce, CFG, max_spans=10_000)


def _fused(body: bytes, ct: str, ce: str | None, max_spans: int = 10_000) -> ResolvedBatch:
    return decode_and_resolve(body, ct, ce, max_decompressed_bytes=BIG, max_spans=max_spans, cfg=CFG)


def _with_bad_ids_and_times(body: bytes) -> bytes:
    req = ExportTraceServiceRequest()
    req.ParseFromString(body)
    spans = [sp for rs in req.resource_spans for ss in rs.scope_spans for sp in ss.spans]
    spans[0].trace_id = bytes(16)
    spans[3].span_id = b"\x01\x02"
    spans[5].end_time_unix_nano = spans[5].start_time_unix_nano - 1
    data: bytes = req.SerializeToString()
    return data


@pytest.mark.parametrize("gzipped", [False, True])
@pytest.mark.parametrize("mangle", [False, True])
def test_protobuf_matches_decode_then_resolve(gzipped: bool, mangle: bool) -> None:
    body = encode(_specs())
    if mangle:
        body = _with_bad_ids_and_times(body)
    ce = c.CE_GZIP if gzipped else None
    if gzipped:
        body = gz(body)
    ref = _reference(body, c.CT_PROTOBUF, ce)
    got = _fused(body, c.CT_PROTOBUF, ce)
    assert got == ref
    if mangle:  # bad ids/times are decode rejects: listed first
        assert got.rejected >= 10
        assert got.errors[0].startswith(RejectReason.BAD_IDS.value)
    else:  # "12" and 2.0 with "0.25" are valid: the other 10 (2**60+1 > MAX_TOKENS too) are rejected
        assert got.rejected == 10
    assert len(got.engine) > 10
    assert got.hints  # P/D evidence from the EPP spans and prefill roles


def test_json_goes_through_the_generic_path() -> None:
    body = _json_body()
    got = _fused(body, "application/json; charset=utf-8", None)
    assert got == _reference(body, "application/json; charset=utf-8", None)
    assert got.rejected == 1
    assert [(e.tenant, e.prompt_tokens) for e in got.engine] == [("acme", 12)]


def test_same_refusals() -> None:
    body = encode(_specs())
    with pytest.raises(UnsupportedMediaType):
        _fused(body, "text/plain", None)
    with pytest.raises(UnsupportedMediaType):
        _fused(body, c.CT_PROTOBUF, "br")
    with pytest.raises(PayloadTooLarge):
        _fused(body, c.CT_PROTOBUF, None, max_spans=3)
    with pytest.raises(BadRequest):
        _fused(b"\xff\xff\xff", c.CT_PROTOBUF, None)


def test_engine_spans_ending_after_the_latest_end_are_rejected_on_every_path() -> None:
    """The native path (a clean protobuf batch), the Python protobuf path (a batch with
    resolution rejects) and JSON: engine spans ending after `latest_end` are rejected FUTURE_TIME,
    after the other rejects; their traces' hints stay."""
    specs = _specs()  # specs[:12] are bad; the P/D halves end at 1.5 (prefill) and 3.0 (decode)
    bodies = {
        "native": (encode(specs[12:]), c.CT_PROTOBUF),
        "python": (encode(specs), c.CT_PROTOBUF),
        "json": (_json_body(), c.CT_JSON),  # one engine span, ending at 2.0
    }
    for path, (body, ct) in bodies.items():
        every = decode_and_resolve(body, ct, None, max_decompressed_bytes=BIG, max_spans=10_000, cfg=CFG)
        assert every.engine, path
        if path == "native":  # a clean batch: the native decoder's answer (the suite requires it built)
            assert fastpath.decode(body, 10_000, CFG) is not None

        def upto(latest: float, body: bytes = body, ct: str = ct) -> ResolvedBatch:
            return decode_and_resolve(
                body, ct, None, max_decompressed_bytes=BIG, max_spans=10_000, cfg=CFG, latest_end=latest
            )

        assert upto(max(e.end_time for e in every.engine)) == every, path  # ending at it is not after
        for latest in (1.75, 0.5):
            cut = upto(latest)
            late = [e for e in every.engine if e.end_time > latest]
            assert cut.engine == tuple(e for e in every.engine if e.end_time <= latest), path
            assert cut.rejected == every.rejected + len(late), path
            assert cut.hints == every.hints, path
            assert cut.errors[: len(every.errors)] == every.errors, path  # the other rejects first
            assert len(cut.errors) == min(5, len(every.errors) + len(late)), path
            if len(every.errors) < 5:
                future = cut.errors[len(every.errors)]
                assert future == f"{RejectReason.FUTURE_TIME.value} (span {late[0].span_id})", path


def _json_body() -> bytes:
    """An OTLP/JSON batch: one engine span (tenant acme, 12 prompt tokens, ending at 2.0) and one
    with a bad trace id."""
    doc = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": c.RES_POD_NAME, "value": {"stringValue": "a-0"}}]},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "0af7651916cd43dd8448eb211c80319c",
                                "spanId": "b7ad6b7169203331",
                                "name": c.SPAN_VLLM_REQUEST,
                                "startTimeUnixNano": "1000000000",
                                "endTimeUnixNano": "2000000000",
                                "attributes": [
                                    {"key": c.ATTR_PROMPT_TOKENS, "value": {"intValue": "12"}},
                                    {"key": c.ATTR_TENANT_ID, "value": {"stringValue": "acme"}},
                                ],
                            },
                            {"traceId": "00", "spanId": "b7ad6b7169203331", "name": "bad"},
                        ]
                    }
                ],
            }
        ]
    }
    return json.dumps(doc).encode()
