"""Hostile protobuf bodies found by fuzzing the native decoder (benchmarks/fuzz_otlpfast.py,
docs/ingest.md "Fuzzing the native decoder"): each must give what the Python path gives, i.e.
a fallback (None) when the Python path refuses the body or rejects a span."""

from __future__ import annotations

import functools

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from observer import conventions as c
from observer.ingest.otlp import BadRequest
from observer.ingest.resolve import decode_and_resolve

from .otlp_builders import CFG, SpanSpec, encode, engine_attrs, fast, require_native, two_step

BIG = 1 << 24

require_native()


def varint(v: int, extra: int = 0) -> bytes:
    """`v` as a protobuf varint, `extra` bytes longer than needed (still the same value)."""
    out = bytearray()
    while True:
        out.append(v & 0x7F)
        v >>= 7
        if not v:
            break
        out[-1] |= 0x80
    if extra:
        out[-1] |= 0x80
        out += b"\x80" * (extra - 1) + b"\x00"
    return bytes(out)


@functools.cache
def body() -> bytes:
    """One clean batch (the native decoder takes it): an engine span and an EPP span."""
    return encode(
        [
            SpanSpec(
                c.SPAN_VLLM_REQUEST, 7, 1.0, 2.0, engine_attrs(100, 5, request_id="r1"), {c.RES_POD_NAME: "p"}
            ),
            SpanSpec(c.SPAN_EPP_GATEWAY, 7, 1.0, 2.0, {c.ATTR_TENANT_ID: "t"}, {c.RES_SERVICE_NAME: "epp"}),
        ]
    )


def read_varint(data: bytes, i: int) -> tuple[int, int]:
    """(value, index after it) of the varint at `data[i]`."""
    value = shift = 0
    while True:
        b = data[i]
        value |= (b & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if not b & 0x80:
            return value, i


def split_first_field(data: bytes) -> tuple[int, int, bytes]:
    """(tag, length, payload + rest) of the first field (a ResourceSpans, field 1, wire type 2)."""
    tag, i = read_varint(data, 0)
    n, i = read_varint(data, i)
    return tag, n, data[i:]


def assert_same_400(data: bytes) -> None:
    with pytest.raises(BadRequest) as ref:
        two_step(data)
    assert fast(data) is None  # the native decoder declines: the Python path answers
    with pytest.raises(BadRequest) as got:
        decode_and_resolve(data, c.CT_PROTOBUF, None, max_decompressed_bytes=BIG, max_spans=99, cfg=CFG)
    assert got.value.message == ref.value.message


def test_the_clean_body_takes_the_fast_path() -> None:
    data = body()
    got = fast(data)
    assert got is not None
    assert got == two_step(data)


@pytest.mark.parametrize("extra", [0, 1, 2, 3])
def test_tags_and_lengths_of_up_to_5_bytes_are_read_like_upb(extra: int) -> None:
    """A varint written longer than needed is still its value: upb takes tags and lengths of up to
    5 bytes, and so does the native decoder."""
    tag, n, rest = split_first_field(body())
    for data in (varint(tag, extra) + varint(n) + rest, varint(tag) + varint(n, extra) + rest):
        assert len(varint(tag, extra)) <= 5
        assert len(varint(n, extra)) <= 5
        got = fast(data)
        assert got is not None
        assert got == two_step(data) == two_step(body())


@pytest.mark.parametrize("extra", [5, 6, 9])
def test_a_tag_longer_than_5_bytes_is_the_python_paths_400(extra: int) -> None:
    """Found by fuzzing: a tag in 6 to 10 bytes (`0x8a 0x80 0x80 0x80 0x80 0x00`: field 1, wire
    type 2) was accepted by the native decoder, which returned the batch's spans, while upb (the
    Python path) refuses the body as corrupt wire format (400)."""
    tag, n, rest = split_first_field(body())
    assert len(varint(tag, extra)) > 5
    assert_same_400(varint(tag, extra) + varint(n) + rest)


@pytest.mark.parametrize("extra", [4, 6, 8])
def test_a_length_longer_than_5_bytes_is_the_python_paths_400(extra: int) -> None:
    """Found by fuzzing: the same for a length prefix (a ResourceSpans' length in 6+ bytes)."""
    tag, n, rest = split_first_field(body())
    assert len(varint(n, extra)) > 5
    assert_same_400(varint(tag) + varint(n, extra) + rest)


def field(number: int, payload: bytes) -> bytes:
    return varint((number << 3) | 2) + varint(len(payload)) + payload


def test_a_long_tag_inside_a_span_is_the_python_paths_400() -> None:
    """The rule holds at every level: an unknown field of a span whose tag takes 7 bytes."""
    req = ExportTraceServiceRequest()
    req.ParseFromString(body())
    rs = req.resource_spans[0]
    spans = [sp.SerializeToString() for sp in rs.scope_spans[0].spans]
    resource = field(1, rs.resource.SerializeToString())

    def with_span_junk(junk: bytes) -> bytes:
        scope = b"".join(field(2, sp + junk) for sp in spans)
        return field(1, resource + field(2, scope))

    assert fast(with_span_junk(b"")) == two_step(with_span_junk(b""))
    ok = varint(4004 << 3, 2) + b"\x01"  # field 4004, varint: a 3-byte tag written in 5 bytes
    got = fast(with_span_junk(ok))
    assert got is not None
    assert got == two_step(with_span_junk(ok))
    assert_same_400(with_span_junk(varint(4004 << 3, 4) + b"\x01"))  # in 7 bytes


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x8a\x80\x80\x80\x80\x00\x00", id="tag-in-6-bytes"),
        pytest.param(b"\x0a\x80\x80\x80\x80\x80\x00", id="length-in-6-bytes"),
    ],
)
def test_the_fuzzers_minimal_inputs(data: bytes) -> None:
    """The 7-byte bodies the fuzzer reduced it to: one empty ResourceSpans whose tag or length is
    written in 6 bytes. The native decoder answered an empty batch (200) where the Python path
    answers 400."""
    assert_same_400(data)
