"""OTLP/HTTP trace decoding: bytes in, `Span`s out. CPU only, no I/O, no framework.

The receiver calls `decode_traces` from a worker thread and maps `IngestError.status` to the
HTTP answer (field notes §8). Protobuf is walked message by message and JSON dict by dict (no
`json_format` / `MessageToDict` round trip): this is the hot path.

Attribute values are flattened to `observer.model.AttrValue`: arrays become tuples, a kvlist
value under key `k` becomes the attributes `k.<sub>` (nested kvlists inside arrays become a
JSON string), bytes become lowercase hex.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as PbStatus

from observer import conventions as c
from observer.ingest.sanitize import clip, excerpt
from observer.model import AttrValue, RejectReason, Span

__all__ = [
    "BadRequest",
    "DecodedBatch",
    "IngestError",
    "PayloadTooLarge",
    "UnsupportedMediaType",
    "decode_traces",
    "encode_response",
    "error_message",
    "media_type",
    "parse_and_walk",
]

MAX_ERRORS = 5  # reasons kept for partial_success.error_message
_CHUNK = 64 * 1024  # gunzip output chunk
_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)


class IngestError(Exception):
    """A request the receiver must refuse; `status` is the HTTP status code to answer."""

    status: int = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnsupportedMediaType(IngestError):
    status = 415


class PayloadTooLarge(IngestError):
    status = 413


class BadRequest(IngestError):
    status = 400


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """The spans of one export request; invalid spans are counted, not fatal."""

    spans: tuple[Span, ...]
    rejected: int
    errors: tuple[str, ...]


class _Rejects:
    """Counts rejected spans and keeps the first few reasons, each cut to `MAX_REASON_CHARS`
    (a reason may carry an exception's text about a client value)."""

    __slots__ = ("count", "errors")

    def __init__(self) -> None:
        self.count = 0
        self.errors: list[str] = []

    def add(self, reason: str) -> None:
        self.count += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(clip(reason, c.MAX_REASON_CHARS))


# ---------------------------------------------------------------------------------------------
# Envelope: content type, content encoding, size caps
# ---------------------------------------------------------------------------------------------


def media_type(content_type: str | None) -> str:
    """`application/json; charset=utf-8` -> `application/json` (lowercase, no parameters)."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def _gunzip(body: bytes, cap: int) -> bytes:
    """Gunzip every member of `body`, never holding more than `cap` + one chunk of output."""
    out = bytearray()
    data = body
    try:
        while True:
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            while data:
                piece = d.decompress(data, min(_CHUNK, cap - len(out) + 1))
                out += piece
                if len(out) > cap:
                    raise PayloadTooLarge(f"decompressed body exceeds {cap} bytes")
                data = d.unconsumed_tail
                if d.eof:
                    break
            if not d.eof:
                raise BadRequest("truncated gzip body")
            data = d.unused_data
            if not data:
                return bytes(out)
    except zlib.error as exc:
        raise BadRequest(f"invalid gzip body: {exc}") from None


def _unwrap(body: bytes, content_encoding: str | None, cap: int) -> bytes:
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", c.CE_IDENTITY):
        if len(body) > cap:
            raise PayloadTooLarge(f"body exceeds {cap} bytes")
        return body
    if encoding == c.CE_GZIP:
        return _gunzip(body, cap)
    raise UnsupportedMediaType(f"unsupported Content-Encoding {content_encoding!r} (use gzip or identity)")


def decode_traces(
    body: bytes,
    content_type: str | None,
    content_encoding: str | None,
    max_decompressed_bytes: int,
    max_spans: int,
) -> DecodedBatch:
    """Decode one OTLP/HTTP `ExportTraceServiceRequest` body.

    Raises UnsupportedMediaType (415) for another content type or encoding, PayloadTooLarge (413)
    past `max_decompressed_bytes` or `max_spans`, BadRequest (400) for undecodable bodies. Spans
    with invalid ids or times are rejected (counted in `rejected`), the rest are kept.
    """
    mtype = media_type(content_type)
    if mtype not in (c.CT_PROTOBUF, c.CT_JSON):
        raise UnsupportedMediaType(
            f"unsupported Content-Type {content_type!r} (use {c.CT_PROTOBUF} or {c.CT_JSON})"
        )
    data = _unwrap(body, content_encoding, max_decompressed_bytes)
    if mtype == c.CT_PROTOBUF:
        return _decode_protobuf(data, max_spans)
    return _decode_json(data, max_spans)


# ---------------------------------------------------------------------------------------------
# Protobuf
# ---------------------------------------------------------------------------------------------


def _parse_request(data: bytes) -> Any:
    req = ExportTraceServiceRequest()
    try:
        req.ParseFromString(data)
    except Exception as exc:  # google.protobuf DecodeError (and a few others from upb on garbage)
        raise BadRequest(f"invalid protobuf ExportTraceServiceRequest: {exc}") from None
    return req


_PB_SCALARS = frozenset(("string_value", "int_value", "double_value", "bool_value"))


def _pb_value(v: Any) -> AttrValue:
    kind = v.WhichOneof("value")
    if kind in _PB_SCALARS:
        scalar: AttrValue = getattr(v, kind)
        return scalar
    if kind == "array_value":
        return tuple(_pb_value(x) for x in v.array_value.values)
    if kind == "kvlist_value":
        return json.dumps({kv.key: _pb_value(kv.value) for kv in v.kvlist_value.values}, sort_keys=True)
    if kind == "bytes_value":
        return bytes(v.bytes_value).hex()
    return None


def _pb_attrs(
    kvs: Iterable[Any], prefix: str = "", out: dict[str, AttrValue] | None = None
) -> dict[str, AttrValue]:
    if out is None:
        out = {}
    scalars = _PB_SCALARS
    for kv in kvs:
        v = kv.value
        kind = v.WhichOneof("value")
        if kind in scalars:
            out[prefix + kv.key if prefix else kv.key] = getattr(v, kind)
        elif kind == "kvlist_value":
            _pb_attrs(v.kvlist_value.values, f"{prefix}{kv.key}.", out)
        else:
            out[prefix + kv.key] = _pb_value(v)
    return out


def _pb_spans(
    data: bytes, max_spans: int, rej: _Rejects
) -> Iterator[tuple[bytes, bytes, bytes, Any, dict[str, AttrValue]]]:
    """Parse, check the span count, then yield `(trace id, span id, parent id, span, resource
    attributes)` for every span with valid ids and times (the others are counted in `rej`).
    The resource dict is shared by the spans of one resource. Raises before yielding anything."""
    req = _parse_request(data)
    total = sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
    if total > max_spans:
        raise PayloadTooLarge(f"{total} spans in one request exceeds the limit of {max_spans}")
    return _pb_valid(req, rej)


def _pb_valid(req: Any, rej: _Rejects) -> Iterator[tuple[bytes, bytes, bytes, Any, dict[str, AttrValue]]]:
    for rs in req.resource_spans:
        resource = _pb_attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            for sp in ss.spans:
                tid = sp.trace_id
                sid = sp.span_id
                pid = sp.parent_span_id
                if (
                    len(tid) != 16
                    or len(sid) != 8
                    or tid == _ZERO_TRACE
                    or sid == _ZERO_SPAN
                    or (pid and len(pid) != 8)
                ):
                    rej.add(f"{RejectReason.BAD_IDS.value} (span {excerpt(sp.name)})")
                    continue
                if sp.end_time_unix_nano < sp.start_time_unix_nano:
                    rej.add(f"{RejectReason.BAD_TIMES.value} (span {sid.hex()})")
                    continue
                yield tid, sid, pid, sp, resource


def _decode_protobuf(data: bytes, max_spans: int) -> DecodedBatch:
    rej = _Rejects()
    spans: list[Span] = [
        Span(
            trace_id=tid.hex(),
            span_id=sid.hex(),
            parent_span_id=pid.hex() if pid and pid != _ZERO_SPAN else "",
            name=sp.name,
            kind=sp.kind,
            start_time=sp.start_time_unix_nano / 1e9,
            end_time=sp.end_time_unix_nano / 1e9,
            status_code=sp.status.code,
            attributes=_pb_attrs(sp.attributes),
            resource=resource,
        )
        for tid, sid, pid, sp, resource in _pb_spans(data, max_spans, rej)
    ]
    return DecodedBatch(tuple(spans), rej.count, tuple(rej.errors))


# Building blocks for the fused protobuf decode + resolve (observer.ingest.resolve).
Rejects = _Rejects
unwrap_body = _unwrap
pb_spans = _pb_spans
pb_attributes = _pb_attrs


def parse_and_walk(body: bytes) -> int:
    """Benchmark ceiling: protobuf parse + touch every attribute of every span; the span count."""
    req = _parse_request(body)
    n = 0
    for rs in req.resource_spans:
        for kv in rs.resource.attributes:
            _ = (kv.key, kv.value.WhichOneof("value"))
        for ss in rs.scope_spans:
            for sp in ss.spans:
                n += 1
                _ = (sp.trace_id, sp.span_id, sp.name, sp.start_time_unix_nano, sp.end_time_unix_nano)
                for kv in sp.attributes:
                    v = kv.value
                    _ = (kv.key, getattr(v, v.WhichOneof("value") or "string_value"))
    return n


# ---------------------------------------------------------------------------------------------
# JSON (OTLP/JSON: lowerCamelCase keys, snake_case accepted, hex ids, int64 maybe strings)
# ---------------------------------------------------------------------------------------------


def _get(d: Mapping[str, Any], camel: str, snake: str) -> Any:
    v = d.get(camel)
    if v is None:
        v = d.get(snake)
    return v


def _list(v: Any, what: str) -> list[Any]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise BadRequest(f"OTLP/JSON field {what} must be an array")
    return v


def _json_int(v: Any) -> int:
    if isinstance(v, bool):
        raise ValueError("boolean where an integer was expected")
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        return int(v)
    if isinstance(v, float) and v.is_integer():
        return int(v)
    raise ValueError(f"not an integer: {v!r}")


# OTLP/JSON says enums are integers; names (protobuf's JSON mapping) are accepted as well.
_SPAN_KINDS: dict[str, int] = {
    v.name: v.number for v in PbSpan.DESCRIPTOR.enum_types_by_name["SpanKind"].values
}
_STATUS_CODES: dict[str, int] = {
    v.name: v.number for v in PbStatus.DESCRIPTOR.enum_types_by_name["StatusCode"].values
}


def _json_enum(v: Any, names: Mapping[str, int]) -> int:
    if isinstance(v, str) and v in names:
        return names[v]
    return _json_int(v or 0)


def _json_value(v: Any) -> AttrValue:
    if not isinstance(v, dict):
        return None
    for key, val in v.items():
        if key in ("stringValue", "string_value"):
            return str(val)
        if key in ("intValue", "int_value"):
            return _json_int(val)
        if key in ("doubleValue", "double_value"):
            return float(val)  # also "NaN"/"Infinity" strings
        if key in ("boolValue", "bool_value"):
            return bool(val)
        if key in ("arrayValue", "array_value"):
            return tuple(_json_value(x) for x in _list((val or {}).get("values"), "arrayValue.values"))
        if key in ("kvlistValue", "kvlist_value"):
            inner = _json_attrs(_list((val or {}).get("values"), "kvlistValue.values"))
            return json.dumps(inner, sort_keys=True)
        if key in ("bytesValue", "bytes_value"):
            return base64.b64decode(str(val), validate=True).hex()
    return None


def _json_attrs(
    kvs: list[Any], prefix: str = "", out: dict[str, AttrValue] | None = None
) -> dict[str, AttrValue]:
    if out is None:
        out = {}
    for kv in kvs:
        if not isinstance(kv, dict):
            raise ValueError("attribute must be an object")
        key = kv.get("key")
        if not isinstance(key, str):
            raise ValueError("attribute without a string key")
        value = kv.get("value")
        if isinstance(value, dict):
            kvl = _get(value, "kvlistValue", "kvlist_value")
            if isinstance(kvl, dict):
                _json_attrs(_list(kvl.get("values"), "kvlistValue.values"), f"{prefix}{key}.", out)
                continue
        out[prefix + key] = _json_value(value)
    return out


# What a malformed OTLP/JSON field raises while it is read: OverflowError is a JSON integer past
# a double (`{"doubleValue": 1000...0}`, 400 digits: json.loads gives an int, float() refuses it).
_MALFORMED = (ValueError, TypeError, AttributeError, OverflowError, binascii.Error, RecursionError)
_MAX_FIXED64 = 2**64 - 1  # span times are fixed64 nanoseconds


def _hex_id(v: Any, length: int) -> str | None:
    """Lowercase hex id, or None when invalid (wrong length, non-hex, all zero)."""
    if not isinstance(v, str) or len(v) != length:
        return None
    try:
        raw = bytes.fromhex(v)
    except ValueError:
        return None
    if not any(raw):
        return None
    return v.lower()


def _json_span(sp: Any, resource: Mapping[str, AttrValue], rej: _Rejects) -> Span | None:
    if not isinstance(sp, dict):
        rej.add(f"{RejectReason.BAD_VALUE.value}: span is not an object")
        return None
    name = sp.get("name") or ""
    tid = _hex_id(_get(sp, "traceId", "trace_id"), 32)
    sid = _hex_id(_get(sp, "spanId", "span_id"), 16)
    raw_pid = _get(sp, "parentSpanId", "parent_span_id") or ""
    zero_parent = isinstance(raw_pid, str) and not raw_pid.strip("0")
    pid = "" if zero_parent else _hex_id(raw_pid, 16)
    if tid is None or sid is None or pid is None:
        rej.add(f"{RejectReason.BAD_IDS.value} (span {excerpt(name)})")
        return None
    try:
        start = _json_int(_get(sp, "startTimeUnixNano", "start_time_unix_nano") or 0)
        end = _json_int(_get(sp, "endTimeUnixNano", "end_time_unix_nano") or 0)
        if start < 0 or end > _MAX_FIXED64:  # protobuf's fixed64 holds no others
            rej.add(f"{RejectReason.BAD_VALUE.value}: span times outside 0..2**64-1 ns (span {sid})")
            return None
        if end < start:
            rej.add(f"{RejectReason.BAD_TIMES.value} (span {sid})")
            return None
        status = sp.get("status") or {}
        code = _json_enum(status.get("code"), _STATUS_CODES) if isinstance(status, dict) else 0
        return Span(
            trace_id=tid,
            span_id=sid,
            parent_span_id=pid or "",
            name=str(name),
            kind=_json_enum(sp.get("kind"), _SPAN_KINDS),
            start_time=start / 1e9,
            end_time=end / 1e9,
            status_code=code,
            attributes=_json_attrs(_list(sp.get("attributes"), "span.attributes")),
            resource=resource,
        )
    except (BadRequest, *_MALFORMED) as exc:
        rej.add(f"{RejectReason.BAD_VALUE.value}: {exc} (span {sid})")
        return None


def _decode_json(data: bytes, max_spans: int) -> DecodedBatch:
    # json.loads builds every object and array at once, ~25x the bytes of a dense body of empty
    # ones: count them first (a C-speed scan; braces inside strings count too, which only errs
    # towards refusing) so a small compressed body cannot cost gigabytes
    containers = data.count(b"{") + data.count(b"[")
    if containers > c.MAX_JSON_CONTAINERS:
        raise PayloadTooLarge(
            f"OTLP/JSON body with {containers} objects and arrays exceeds the limit of "
            f"{c.MAX_JSON_CONTAINERS} (send protobuf for larger batches)"
        )
    try:
        root = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"invalid JSON body: {exc}") from None
    except RecursionError:
        raise BadRequest("invalid JSON body: nested too deeply") from None
    if not isinstance(root, dict):
        raise BadRequest("OTLP/JSON body must be an object with resourceSpans")
    groups: list[tuple[dict[str, AttrValue], list[Any]]] = []
    total = 0
    for rs in _list(_get(root, "resourceSpans", "resource_spans"), "resourceSpans"):
        if not isinstance(rs, dict):
            raise BadRequest("OTLP/JSON resourceSpans entries must be objects")
        res = rs.get("resource") or {}
        try:
            resource = (
                _json_attrs(_list(res.get("attributes"), "resource.attributes"))
                if isinstance(res, dict)
                else {}
            )
        except _MALFORMED as exc:
            raise BadRequest(f"invalid resource attributes: {exc}") from None
        for ss in _list(_get(rs, "scopeSpans", "scope_spans"), "scopeSpans"):
            if not isinstance(ss, dict):
                raise BadRequest("OTLP/JSON scopeSpans entries must be objects")
            items = _list(ss.get("spans"), "spans")
            total += len(items)
            groups.append((resource, items))
    if total > max_spans:
        raise PayloadTooLarge(f"{total} spans in one request exceeds the limit of {max_spans}")
    spans: list[Span] = []
    rej = _Rejects()
    for resource, items in groups:
        for sp in items:
            span = _json_span(sp, resource, rej)
            if span is not None:
                spans.append(span)
    return DecodedBatch(tuple(spans), rej.count, tuple(rej.errors))


# ---------------------------------------------------------------------------------------------
# Response
# ---------------------------------------------------------------------------------------------


def error_message(errors: Sequence[str]) -> str:
    """`partial_success.error_message` from a batch's reject reasons: the first `MAX_ERRORS`
    joined with `; `, at most `MAX_ERROR_MESSAGE_CHARS` characters (docs/ingest.md "Untrusted
    strings")."""
    return clip("; ".join(errors[:MAX_ERRORS]), c.MAX_ERROR_MESSAGE_CHARS)


def encode_response(rejected: int, message: str, content_type: str) -> bytes:
    """`ExportTraceServiceResponse` in the request's content type (JSON or else protobuf).

    `partial_success` is set when `rejected > 0` (or a warning `message` is given)."""
    partial = rejected > 0 or bool(message)
    if media_type(content_type) == c.CT_JSON:
        if not partial:
            return b"{}"
        return json.dumps(
            {"partialSuccess": {"rejectedSpans": str(rejected), "errorMessage": message}},
            separators=(",", ":"),
        ).encode()
    resp = ExportTraceServiceResponse()
    if partial:
        resp.partial_success.rejected_spans = rejected
        resp.partial_success.error_message = message
    data: bytes = resp.SerializeToString()
    return data
