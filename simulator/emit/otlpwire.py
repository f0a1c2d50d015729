"""A fast OTLP/protobuf encoder for the twin's SDK spans.

Produces the same `ExportTraceServiceRequest` as the SDK's
`opentelemetry.exporter.otlp.proto.common.trace_encoder.encode_spans(...).SerializeToString()`
(tests compare the parsed messages), writing protobuf wire format directly instead of building
protobuf objects: about 3× faster on the twin's spans. It handles scalar attributes
(str, bool, int, float) and spans without events or links — anything else falls back to the SDK
encoder, so the result is always correct.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind

_M64 = (1 << 64) - 1
_FLAGS_HAS_IS_REMOTE = 0x100
_FLAGS_IS_REMOTE = 0x200
_pack_q = struct.Struct("<Q").pack
_pack_d = struct.Struct("<d").pack
_pack_i = struct.Struct("<I").pack


class _Unsupported(Exception):
    pass


_SMALL = tuple(bytes((i,)) for i in range(0x80))  # the one-byte varints


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ld(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field."""
    n = len(payload)
    return tag + (_SMALL[n] if n < 0x80 else _varint(n)) + payload


def _any_value(v: Any) -> bytes:
    if isinstance(v, str):
        return _ld(b"\x0a", v.encode())
    if isinstance(v, bool):
        return b"\x10\x01" if v else b"\x10\x00"
    if isinstance(v, int):
        return b"\x18" + _varint(v & _M64)
    if isinstance(v, float):
        return b"\x21" + _pack_d(v)
    raise _Unsupported(type(v).__name__)


# KeyValue.key fields by attribute name: the twin's spans repeat a few dozen names. Bounded: a
# caller with ever-new names only refills it.
_KEYS: dict[str, bytes] = {}
_MAX_KEYS = 4096


def _key(key: str) -> bytes:
    field = _KEYS.get(key)
    if field is None:
        if len(_KEYS) >= _MAX_KEYS:
            _KEYS.clear()
        field = _KEYS[key] = _ld(b"\x0a", key.encode())
    return field


def _attributes(tag: bytes, attrs: Mapping[str, Any] | None) -> bytes:
    if not attrs:
        return b""
    parts = []
    keys = _KEYS
    for key, value in attrs.items():
        kf = keys.get(key) or _key(key)
        # the AnyValue inline for the common str / float (an unsupported type raises below)
        if type(value) is str:
            raw = value.encode()
            n = len(raw)
            if n < 0x7E:  # AnyValue (2 + n bytes) and its length both fit one-byte lengths
                kv = kf + b"\x12" + _SMALL[n + 2] + b"\x0a" + _SMALL[n] + raw
            else:
                kv = kf + _ld(b"\x12", _ld(b"\x0a", raw))
        elif type(value) is float:
            kv = kf + b"\x12\x09\x21" + _pack_d(value)
        else:
            kv = kf + _ld(b"\x12", _any_value(value))
        n = len(kv)
        parts.append(tag + (_SMALL[n] if n < 0x80 else _varint(n)) + kv)
    return b"".join(parts)


def _span(span: ReadableSpan) -> bytes:
    if span.events or span.links or span.dropped_attributes:
        raise _Unsupported("events/links/dropped attributes")
    ctx = span.get_span_context()
    if ctx is None:
        raise _Unsupported("no span context")
    out = [
        b"\x0a\x10" + ctx.trace_id.to_bytes(16, "big"),
        b"\x12\x08" + ctx.span_id.to_bytes(8, "big"),
    ]
    if ctx.trace_state:
        out.append(_ld(b"\x1a", ",".join(f"{k}={v}" for k, v in ctx.trace_state.items()).encode()))
    parent = span.parent
    flags = _FLAGS_HAS_IS_REMOTE
    if parent is not None:
        out.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
        if parent.is_remote:
            flags |= _FLAGS_IS_REMOTE
    if span.name:
        out.append(_name(span.name))
    kind = span.kind
    out.append(_KINDS.get(kind) or b"\x30" + _varint(kind.value + 1))
    if span.start_time:
        out.append(b"\x39" + _pack_q(span.start_time))
    if span.end_time:
        out.append(b"\x41" + _pack_q(span.end_time))
    out.append(_attributes(b"\x4a", span.attributes))
    st = span.status
    code = st.status_code.value
    if st.description or code:
        status = b""
        if st.description:
            status += _ld(b"\x12", st.description.encode())
        if code:
            status += b"\x18" + _varint(code)
        out.append(_ld(b"\x7a", status))
    else:
        out.append(b"\x7a\x00")  # an empty Status is still written
    out.append(b"\x85\x01" + _pack_i(flags))
    return b"".join(out)


_KINDS = {k: b"\x30" + _varint(k.value + 1) for k in SpanKind}
_NAMES: dict[str, bytes] = {}  # Span.name fields (the twin has five span names); bounded like _KEYS


def _name(name: str) -> bytes:
    field = _NAMES.get(name)
    if field is None:
        if len(_NAMES) >= _MAX_KEYS:
            _NAMES.clear()
        field = _NAMES[name] = _ld(b"\x2a", name.encode())
    return field


def _scope(scope: InstrumentationScope | None) -> bytes:
    if scope is None:  # the SDK encoder still writes an empty scope
        return b"\x0a\x00"
    body = b""
    if scope.name:
        body += _ld(b"\x0a", scope.name.encode())
    if scope.version:
        body += _ld(b"\x12", scope.version.encode())
    body += _attributes(b"\x1a", scope.attributes)
    return _ld(b"\x0a", body)


class FastSpanEncoder:
    """Encodes batches of SDK spans into `ExportTraceServiceRequest` bytes (see module doc).

    Resources and scopes are encoded once per object and cached (bounded by `max_cached`).
    """

    def __init__(self, max_cached: int = 8192) -> None:
        self._resources: dict[int, tuple[Resource, bytes]] = {}
        self._max_cached = max_cached
        self.fallbacks = 0

    def _resource(self, res: Resource) -> bytes:
        hit = self._resources.get(id(res))
        if hit is not None and hit[0] is res:
            return hit[1]
        body = _ld(b"\x0a", _attributes(b"\x0a", res.attributes))
        if len(self._resources) >= self._max_cached:
            self._resources.clear()
        self._resources[id(res)] = (res, body)
        return body

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        try:
            return self._encode(spans)
        except _Unsupported:
            self.fallbacks += 1
            body: bytes = encode_spans(spans).SerializeToString()
            return body

    def _encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        # grouped by object identity (the SDK hashes resources by value: same groups for us,
        # since the emitter has one Resource object per distinct resource)
        groups: dict[int, tuple[Resource, dict[int, tuple[InstrumentationScope | None, list[bytes]]]]] = {}
        for span in spans:
            res = span.resource
            entry = groups.get(id(res))
            if entry is None:
                entry = groups[id(res)] = (res, {})
            scope = span.instrumentation_scope or None
            sentry = entry[1].get(id(scope))
            if sentry is None:
                sentry = entry[1][id(scope)] = (scope, [])
            sentry[1].append(_span(span))
        out = []
        for res, by_scope in groups.values():
            scope_parts = []
            for scope, encoded in by_scope.values():
                body = _scope(scope) + b"".join(_ld(b"\x12", s) for s in encoded)
                if scope is not None and scope.schema_url:
                    body += _ld(b"\x1a", scope.schema_url.encode())
                scope_parts.append(_ld(b"\x12", body))
            rs = self._resource(res) + b"".join(scope_parts)
            if res.schema_url:
                rs += _ld(b"\x1a", res.schema_url.encode())
            out.append(_ld(b"\x0a", rs))
        return b"".join(out)
