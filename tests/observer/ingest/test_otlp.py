"""observer.ingest.otlp: real SDK encodings, JSON, gzip, caps and malformed input."""

from __future__ import annotations

import base64
import gzip
import json
import tracemalloc
import zlib
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from observer import conventions as c
from observer.ingest.otlp import (
    BadRequest,
    IngestError,
    PayloadTooLarge,
    UnsupportedMediaType,
    decode_traces,
    encode_response,
)
from observer.model import RejectReason

from .otlp_builders import DECODE_RES, PREFILL_RES, SpanSpec, encode, engine_attrs, make_spans

BIG = 64 * 1024 * 1024
T0 = 1_760_000_000.0


def _decode(
    body: bytes, ct: str = c.CT_PROTOBUF, ce: str | None = None, cap: int = BIG, max_spans: int = 10_000
):
    return decode_traces(body, ct, ce, cap, max_spans)


def _specs() -> list[SpanSpec]:
    return [
        SpanSpec(
            c.SPAN_VLLM_REQUEST,
            0xA1B2C3D4E5F60718293A4B5C6D7E8F90,
            T0,
            T0 + 0.25,
            engine_attrs(
                120, 1, request_id="req-1", extra={"tags": ["a", "b"], "ratio": 0.5, "stream": True}
            ),
            PREFILL_RES,
        ),
        SpanSpec(
            c.SPAN_VLLM_REQUEST,
            0xA1B2C3D4E5F60718293A4B5C6D7E8F90,
            T0 + 0.3,
            T0 + 1.5,
            engine_attrs(120, 64, request_id="req-1-d"),
            DECODE_RES,
            error=True,
        ),
    ]


def test_sdk_protobuf_batch_decodes_ids_times_attributes_and_resource() -> None:
    sdk_spans = make_spans(_specs())
    batch = _decode(encode_spans(sdk_spans).SerializeToString())
    assert batch.rejected == 0
    assert batch.errors == ()
    assert len(batch.spans) == 2
    by_pod = {s.resource[c.RES_POD_NAME]: s for s in batch.spans}
    pre, dec = by_pod["vllm-prefill-0"], by_pod["vllm-decode-0"]
    sdk_pre = next(s for s in sdk_spans if s.resource.attributes[c.RES_POD_NAME] == "vllm-prefill-0")
    assert pre.trace_id == "a1b2c3d4e5f60718293a4b5c6d7e8f90"
    assert pre.span_id == format(sdk_pre.context.span_id, "016x")
    assert pre.parent_span_id == format(0xABCDEF, "016x")
    assert pre.name == c.SPAN_VLLM_REQUEST
    assert pre.kind == 2  # SERVER
    assert pre.start_time == pytest.approx(T0, abs=1e-6)
    assert pre.end_time == pytest.approx(T0 + 0.25, abs=1e-6)
    assert pre.attributes[c.ATTR_PROMPT_TOKENS] == 120
    assert pre.attributes[c.ATTR_REQUEST_ID] == "req-1"
    assert pre.attributes["tags"] == ("a", "b")
    assert pre.attributes["ratio"] == 0.5
    assert pre.attributes["stream"] is True
    assert pre.resource[c.RES_SERVICE_NAME] == c.SERVICE_VLLM_PREFILL
    assert pre.status_code == 0
    assert dec.status_code == c.OTLP_STATUS_ERROR


def test_content_type_parameters_and_case_are_ignored() -> None:
    body = encode(_specs())
    assert len(_decode(body, ct="Application/X-Protobuf; charset=utf-8").spans) == 2


@pytest.mark.parametrize("ct", [None, "", "text/plain", "application/grpc", "application/protobuf"])
def test_other_content_types_are_415(ct: str | None) -> None:
    with pytest.raises(UnsupportedMediaType) as err:
        _decode(encode(_specs()), ct=ct)  # type: ignore[arg-type]
    assert err.value.status == 415
    assert "Content-Type" in str(err.value)


def test_gzip_and_identity_encodings() -> None:
    body = encode(_specs())
    assert len(_decode(gzip.compress(body), ce="gzip").spans) == 2
    assert len(_decode(gzip.compress(body), ce=" GZIP ").spans) == 2
    assert len(_decode(body, ce="identity").spans) == 2
    # two concatenated gzip members are one valid gzip stream
    half = len(body) // 2
    assert len(_decode(gzip.compress(body[:half]) + gzip.compress(body[half:]), ce="gzip").spans) == 2


def test_unknown_encoding_is_415() -> None:
    with pytest.raises(UnsupportedMediaType) as err:
        _decode(zlib.compress(encode(_specs())), ce="deflate")
    assert err.value.status == 415


def test_bad_and_truncated_gzip_are_400() -> None:
    body = gzip.compress(encode(_specs()))
    with pytest.raises(BadRequest, match="gzip"):
        _decode(b"not gzip at all", ce="gzip")
    with pytest.raises(BadRequest, match="truncated gzip"):
        _decode(body[: len(body) // 2], ce="gzip")


def test_gzip_bomb_is_413_without_inflating_it() -> None:
    bomb = gzip.compress(bytes(200 * 1024 * 1024), compresslevel=9)  # 200 MiB of zeros, ~200 KiB
    assert len(bomb) < 1024 * 1024
    cap = 1024 * 1024
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge) as err:
            _decode(bomb, ce="gzip", cap=cap)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert err.value.status == 413
    assert peak < 3 * cap  # cap + a chunk (+ the bytearray's slack), never the 200 MiB


def test_uncompressed_body_over_the_cap_is_413() -> None:
    body = encode(_specs())
    with pytest.raises(PayloadTooLarge):
        _decode(body, cap=len(body) - 1)
    assert len(_decode(body, cap=len(body)).spans) == 2


def test_too_many_spans_is_413() -> None:
    with pytest.raises(PayloadTooLarge, match="spans"):
        _decode(encode(_specs()), max_spans=1)


def test_truncated_and_garbage_protobuf_are_400() -> None:
    body = encode(_specs())
    with pytest.raises(BadRequest) as err:
        _decode(body[: len(body) - 7])
    assert err.value.status == 400
    with pytest.raises(BadRequest):
        _decode(b"\xff\xff\xff\xff\xff\xff\xff")
    assert isinstance(err.value, IngestError)


def test_empty_body_is_an_empty_batch() -> None:
    batch = _decode(b"")
    assert batch.spans == ()
    assert batch.rejected == 0


def _raw_request_with_bad_spans() -> bytes:
    req = encode_spans(make_spans(_specs()))
    spans = req.resource_spans[0].scope_spans[0].spans
    good = spans[0]
    bad_len = spans.add()
    bad_len.CopyFrom(good)
    bad_len.trace_id = b"\x01" * 8
    zero = spans.add()
    zero.CopyFrom(good)
    zero.span_id = bytes(8)
    backwards = spans.add()
    backwards.CopyFrom(good)
    backwards.span_id = b"\x02" * 8
    backwards.end_time_unix_nano = backwards.start_time_unix_nano - 1
    data: bytes = req.SerializeToString()
    return data


def test_invalid_spans_are_rejected_and_counted_rest_kept() -> None:
    batch = _decode(_raw_request_with_bad_spans())
    assert len(batch.spans) == 2
    assert batch.rejected == 3
    assert sum(RejectReason.BAD_IDS.value in e for e in batch.errors) == 2
    assert sum(RejectReason.BAD_TIMES.value in e for e in batch.errors) == 1


# ---------------------------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------------------------


def _otlp_json(req: ExportTraceServiceRequest) -> dict[str, Any]:
    """OTLP/JSON from a protobuf request: protobuf JSON mapping, then ids as hex (OTLP rule)."""
    doc = json_format.MessageToDict(req)
    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for sp in ss["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in sp:
                        sp[key] = base64.b64decode(sp[key]).hex().upper()  # hex is case-insensitive
    return doc


def test_json_decodes_like_protobuf() -> None:
    req = encode_spans(make_spans(_specs()))
    doc = _otlp_json(req)
    assert isinstance(doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["startTimeUnixNano"], str)
    from_json = _decode(json.dumps(doc).encode(), ct="application/json; charset=utf-8")
    from_pb = _decode(req.SerializeToString())
    assert from_json.rejected == 0
    assert sorted(from_json.spans, key=lambda s: s.span_id) == sorted(from_pb.spans, key=lambda s: s.span_id)


def _json_span(**over: Any) -> dict[str, Any]:
    span: dict[str, Any] = {
        "traceId": "0af7651916cd43dd8448eb211c80319c",
        "spanId": "b7ad6b7169203331",
        "name": c.SPAN_VLLM_REQUEST,
        "kind": 2,
        "startTimeUnixNano": "1760000000000000000",
        "endTimeUnixNano": 1760000001500000000,
        "status": {"code": 2},
        "someFutureField": {"x": 1},
        "attributes": [
            {"key": "s", "value": {"stringValue": "v"}},
            {"key": "i", "value": {"intValue": "9007199254740993"}},
            {"key": "d", "value": {"doubleValue": 0.25}},
            {"key": "b", "value": {"boolValue": True}},
            {"key": "a", "value": {"arrayValue": {"values": [{"intValue": 1}, {"stringValue": "x"}]}}},
            {"key": "kv", "value": {"kvlistValue": {"values": [{"key": "inner", "value": {"intValue": 3}}]}}},
            {"key": "raw", "value": {"bytesValue": base64.b64encode(b"\x01\xff").decode()}},
            {"key": "empty", "value": {}},
        ],
    }
    span.update(over)
    return span


def _json_body(spans: list[dict[str, Any]], resource: dict[str, Any] | None = None) -> bytes:
    res = resource or {"attributes": [{"key": c.RES_SERVICE_NAME, "value": {"stringValue": "vllm-decode"}}]}
    return json.dumps(
        {"resourceSpans": [{"resource": res, "scopeSpans": [{"scope": {}, "spans": spans}]}]}
    ).encode()


def test_json_any_value_kinds_int64_strings_and_unknown_fields() -> None:
    batch = _decode(_json_body([_json_span()]), ct=c.CT_JSON)
    assert batch.rejected == 0
    (span,) = batch.spans
    assert span.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert span.start_time == 1_760_000_000.0
    assert span.end_time == 1_760_000_001.5
    assert span.status_code == 2
    assert span.kind == 2
    a = span.attributes
    assert a["s"] == "v"
    assert a["i"] == 9007199254740993  # int64 beyond float precision survives
    assert a["d"] == 0.25
    assert a["b"] is True
    assert a["a"] == (1, "x")
    assert a["kv.inner"] == 3  # kvlist flattened with dotted keys
    assert a["raw"] == "01ff"
    assert a["empty"] is None
    assert span.resource == {c.RES_SERVICE_NAME: "vllm-decode"}


def test_json_snake_case_keys_are_accepted() -> None:
    span = {
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "span_id": "b7ad6b7169203331",
        "parent_span_id": "",
        "name": "x",
        "start_time_unix_nano": 1,
        "end_time_unix_nano": 2,
        "attributes": [{"key": "k", "value": {"int_value": "5"}}],
    }
    body = json.dumps({"resource_spans": [{"scope_spans": [{"spans": [span]}]}]}).encode()
    (decoded,) = _decode(body, ct=c.CT_JSON).spans
    assert decoded.attributes == {"k": 5}
    assert decoded.parent_span_id == ""


def test_json_invalid_spans_are_rejected_rest_kept() -> None:
    spans = [
        _json_span(),
        _json_span(spanId="c7ad6b7169203331", parentSpanId="0000000000000000"),
        _json_span(traceId="00000000000000000000000000000000"),
        _json_span(spanId="zzzzzzzzzzzzzzzz"),
        _json_span(spanId="b7ad6b71"),
        _json_span(spanId=12345),
        _json_span(parentSpanId=["x"]),
        _json_span(parentSpanId="abc"),
        _json_span(endTimeUnixNano="1"),
        _json_span(startTimeUnixNano="soon"),
        "not a span",
    ]
    batch = _decode(_json_body(spans), ct=c.CT_JSON)
    assert len(batch.spans) == 2  # an all-zero parent id means "root"
    assert batch.rejected == 9
    assert len(batch.errors) == 5  # first few reasons only


def test_json_numbers_past_a_double_or_fixed64_reject_the_span() -> None:
    """json.loads gives a JSON integer literal of any size as an int: past a double, float() raised
    OverflowError, which no handler caught (a 500); times outside fixed64 cannot come as protobuf."""
    huge = 10**400
    attr = {"key": "d", "value": {"doubleValue": 0}}
    spans = [
        _json_span(startTimeUnixNano=huge, endTimeUnixNano=huge + 1),
        _json_span(startTimeUnixNano=str(2**64), endTimeUnixNano=str(2**64)),
        _json_span(startTimeUnixNano="-1"),
        _json_span(attributes=[attr]),
        _json_span(startTimeUnixNano="0", endTimeUnixNano=str(2**64 - 1)),  # the widest valid span
    ]
    body = _json_body(spans).replace(b'"doubleValue": 0', f'"doubleValue": {huge}'.encode())
    batch = _decode(body, ct=c.CT_JSON)
    assert batch.rejected == 4
    assert all("span times outside 0..2**64-1 ns" in e for e in batch.errors[:3])
    assert "too large" in batch.errors[3]
    assert len(batch.spans) == 1
    resource = {"attributes": [attr]}
    body = _json_body([_json_span()], resource).replace(
        b'"doubleValue": 0', f'"doubleValue": {huge}'.encode()
    )
    with pytest.raises(BadRequest, match="invalid resource attributes"):
        _decode(body, ct=c.CT_JSON)


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[1, 2]", b'{"resourceSpans": 3}', b'{"resourceSpans": [1]}', b"\xff\xfe"],
)
def test_json_malformed_documents_are_400(body: bytes) -> None:
    with pytest.raises(BadRequest):
        _decode(body, ct=c.CT_JSON)


def test_json_gzip() -> None:
    assert len(_decode(gzip.compress(_json_body([_json_span()])), ct=c.CT_JSON, ce="gzip").spans) == 1


# ---------------------------------------------------------------------------------------------
# Response and benchmark ceiling
# ---------------------------------------------------------------------------------------------


def test_encode_response_protobuf_and_json() -> None:
    ok = ExportTraceServiceResponse()
    ok.ParseFromString(encode_response(0, "", c.CT_PROTOBUF))
    assert not ok.HasField("partial_success")
    partial = ExportTraceServiceResponse()
    partial.ParseFromString(encode_response(3, "3 spans rejected", c.CT_PROTOBUF))
    assert partial.partial_success.rejected_spans == 3
    assert partial.partial_success.error_message == "3 spans rejected"
    assert json.loads(encode_response(0, "", "application/json; charset=utf-8")) == {}
    doc = json.loads(encode_response(2, "bad ids", c.CT_JSON))
    assert doc == {"partialSuccess": {"rejectedSpans": "2", "errorMessage": "bad ids"}}
    # the JSON answer is valid OTLP/JSON for the protobuf JSON mapping too
    parsed = json_format.Parse(encode_response(2, "bad ids", c.CT_JSON), ExportTraceServiceResponse())
    assert parsed.partial_success.rejected_spans == 2
