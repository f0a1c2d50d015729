"""Untrusted strings from spans (observer.ingest.sanitize): NUL and lone surrogates replaced, long
values cut with a hash suffix, the same on every decode path (native, Python fused, generic); and
client text quoted back in answers (`clip`, `excerpt`) kept short and encodable."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from observer import conventions as c
from observer.config import IngestSettings
from observer.ingest import fastpath
from observer.ingest.otlp import decode_traces
from observer.ingest.resolve import ResolveConfig, ResolvedBatch, decode_and_resolve, resolve_batch
from observer.ingest.sanitize import clean_value, clip, excerpt, sanitize
from observer.model import EngineSpan, TraceHints

from .otlp_builders import EPP_RES, SpanSpec, encode, engine_attrs

CFG = ResolveConfig.from_settings(IngestSettings())
# the same resolution, but a config the native decoder cannot express: the Python fused path runs
CFG_PY = dataclasses.replace(CFG, tier_keys=((c.TIER_HBM, "x.hbm"), (c.TIER_HBM, "y.hbm")))
BIG = 1 << 26
MAX = c.MAX_VALUE_CHARS
R = c.VALUE_REPLACEMENT
SUFFIX = re.compile(re.escape(c.VALUE_TRUNCATION_MARK) + f"[0-9a-f]{{{c.VALUE_HASH_CHARS}}}$")
KIB400 = 400 * 1024


def safe(s: str) -> bool:
    s.encode("utf-8")  # raises on a lone surrogate
    return "\x00" not in s and len(s) <= MAX


# --------------------------------------------------------------------------- clean_value


@pytest.mark.parametrize("s", ["acme", "", "Zürich-α", "😀 tenant", "x" * MAX, "é" * MAX, "a\x01b\n"])
def test_clean_values_are_returned_as_the_same_object(s: str) -> None:
    assert clean_value(s) is s


def test_nul_and_lone_surrogates_are_replaced() -> None:
    assert clean_value("x\x00") == "x" + R
    assert clean_value("\ud800") == R
    assert clean_value("a\udfffb\x00é") == f"a{R}b{R}é"
    assert clean_value("\ud83d\ude00") == R + R  # a pair left unjoined is two lone surrogates


def test_long_values_are_cut_to_the_limit_with_a_hash_of_the_whole_value() -> None:
    long = "t" * KIB400
    out = clean_value(long)
    assert len(out) == MAX
    assert out.startswith("t" * (MAX - 1 - c.VALUE_HASH_CHARS))
    assert SUFFIX.search(out)
    assert clean_value(long) == out  # deterministic
    # two long values that differ only at the very end stay distinct
    assert clean_value("t" * KIB400 + "a") != clean_value("t" * KIB400 + "b")
    assert clean_value("t" * (MAX + 1)) != clean_value("t" * (MAX + 2))
    # the hash is of the original value: NUL vs U+FFFD at the end still differ
    assert clean_value("u" * 300 + "\x00") != clean_value("u" * 300 + R)
    bad_long = clean_value("\x00" * 1000)
    assert safe(bad_long)
    assert bad_long.startswith(R)


HOSTILE = st.sampled_from(["\x00", "\ud800", "\udbff", "\udc00", "\udfff", R, "é", "😀", "~"])


@given(st.text(alphabet=st.characters(codec=None, exclude_categories=()) | HOSTILE, max_size=600))
def test_any_string_becomes_safe_and_stays_put_once_safe(s: str) -> None:
    out = clean_value(s)
    assert safe(out)
    assert clean_value(out) == out  # idempotent
    if len(s) <= MAX and "\x00" not in s and not re.search("[\ud800-\udfff]", s):
        assert out is s


@given(st.text(max_size=40), st.text(max_size=40))
def test_distinct_long_values_stay_distinct(a: str, b: str) -> None:
    prefix = "p" * MAX
    if a != b:
        assert clean_value(prefix + a) != clean_value(prefix + b)


def test_sanitize_returns_a_clean_batch_unchanged() -> None:
    e = _engine("t", "m", "p", "r")
    engine, hints = (e,), {"0" * 32: TraceHints("0" * 32, "t", None, None)}
    out = sanitize(engine, hints)
    assert out[0] is engine
    assert out[1] is hints
    assert out[2] == 0


def test_sanitize_rewrites_every_string_field_and_counts_them() -> None:
    e = _engine("t\x00", "m" * 1000, "\ud800pod", "r" * 257)
    h = TraceHints("0" * 32, "h\x00", "ok", True)
    engine, hints, n = sanitize((e, _engine("t", "m", "p", "r")), {h.trace_id: h})
    assert n == 5
    first = engine[0]
    assert first.tenant == "t" + R
    assert first.pod == R + "pod"
    assert len(first.model) == MAX
    assert len(first.request_id) == MAX
    assert dataclasses.replace(first, tenant=e.tenant, model=e.model, pod=e.pod, request_id=e.request_id) == e
    assert engine[1] == _engine("t", "m", "p", "r")
    assert hints[h.trace_id] == TraceHints(h.trace_id, "h" + R, "ok", True)


def _engine(tenant: str | None, model: str, pod: str, request_id: str) -> EngineSpan:
    from observer.model import TierTokens

    return EngineSpan(
        "0" * 32, "1" * 16, request_id, None, tenant, model, pod, 1.0, 2.0, 10, 1, TierTokens(),
        None, None, None, None, None, False,
    )  # fmt: skip


# --------------------------------------------------------------------------- every decode path


def hostile_body(*, reject_one: bool = False) -> bytes:
    """Valid spans whose strings need rewriting: NUL, long values, on span and resource attributes
    and on a hint-only (EPP) span of another trace."""
    res = {c.RES_SERVICE_NAME: "vllm", c.RES_POD_NAME: "pod\x00" + "p" * 300}
    specs = [
        SpanSpec(
            c.SPAN_VLLM_REQUEST,
            1,
            1000.0,
            1001.0,
            engine_attrs(100, 5, request_id="r" * 600, extra={c.ATTR_TENANT_ID: "x\x00"}),
            res,
        ),
        SpanSpec(
            c.SPAN_VLLM_REQUEST,
            2,
            1000.0,
            1001.0,
            engine_attrs(100, 5, extra={c.ATTR_TENANT_ID: "t" * KIB400, c.ATTR_RESPONSE_MODEL: "m" * KIB400}),
            res,
        ),
        SpanSpec(c.SPAN_VLLM_REQUEST, 2, 1000.0, 1001.0, engine_attrs(100, 5), {c.RES_POD_NAME: "clean"}),
        SpanSpec(c.SPAN_EPP_GATEWAY, 3, 1000.0, 1001.0, {c.ATTR_TENANT_ID: "\x00epp"}, EPP_RES),
    ]
    if reject_one:  # a span the Python path rejects: the native decoder falls back on the batch
        specs.append(SpanSpec(c.SPAN_VLLM_REQUEST, 4, 1000.0, 1001.0, {c.ATTR_LAT_E2E: 1.0}, res))
    return encode(specs)


def strings(batch: ResolvedBatch) -> list[str]:
    out: list[str] = []
    for e in batch.engine:
        out += [s for s in (e.tenant, e.model, e.pod, e.request_id) if s is not None]
    for h in batch.hints.values():
        out += [s for s in (h.tenant, h.model) if s is not None]
    return out


def generic(body: bytes) -> ResolvedBatch:
    decoded = decode_traces(body, c.CT_PROTOBUF, None, BIG, 1000)
    res = resolve_batch(decoded.spans, CFG)
    return dataclasses.replace(
        res, rejected=res.rejected + decoded.rejected, errors=decoded.errors + res.errors
    )


def fused(body: bytes, cfg: ResolveConfig) -> ResolvedBatch:
    return decode_and_resolve(body, c.CT_PROTOBUF, None, max_decompressed_bytes=BIG, max_spans=1000, cfg=cfg)


def test_every_decode_path_gives_the_same_safe_strings() -> None:
    body = hostile_body()
    ref = generic(body)
    assert fastpath.path(CFG_PY) == "python"
    assert fused(body, CFG_PY) == ref  # Python fused path
    if fastpath.path(CFG) == "native":
        assert fastpath.decode(body, 1000, CFG) is not None  # the native decoder took the batch ...
    assert fused(body, CFG) == ref  # ... and gives the same result
    with_reject = hostile_body(reject_one=True)
    assert fastpath.decode(with_reject, 1000, CFG) is None
    assert fused(with_reject, CFG) == generic(with_reject)  # the native decoder's fallback
    assert generic(with_reject).rejected == 1
    assert generic(with_reject).rewritten == 10

    assert ref.rejected == 0
    assert all(safe(s) for s in strings(ref))
    by_trace = {e.trace_id[-1]: e for e in ref.engine if e.pod != "clean"}
    assert by_trace["1"].tenant == "x" + R
    assert len(by_trace["1"].request_id) == MAX
    assert by_trace["1"].pod.startswith("pod" + R)
    assert SUFFIX.search(by_trace["1"].pod)
    assert len(by_trace["2"].tenant or "") == MAX
    assert len(by_trace["2"].model) == MAX
    assert ref.hints["0" * 31 + "3"].tenant == R + "epp"
    # tenant, request id and pod of span 1; tenant, model and pod of span 2; the hints of traces
    # 1 (tenant), 2 (tenant, model) and 3 (tenant)
    assert ref.rewritten == 10


def test_json_lone_surrogate_is_replaced() -> None:
    span = {
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": "eee19b7ec3c1b174",
        "name": c.SPAN_VLLM_REQUEST,
        "startTimeUnixNano": "1000000000000",
        "endTimeUnixNano": "1001000000000",
        "attributes": [
            {"key": c.ATTR_TENANT_ID, "value": {"stringValue": "\ud800"}},
            {"key": c.ATTR_PROMPT_TOKENS, "value": {"intValue": "10"}},
        ],
    }
    body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode()
    assert b"\\ud800" in body  # escaped in the JSON text, a lone surrogate once parsed
    got = decode_and_resolve(body, c.CT_JSON, None, max_decompressed_bytes=BIG, max_spans=10, cfg=CFG)
    assert [e.tenant for e in got.engine] == [R]
    assert got.hints["5b8efff798038103d269b633813fc60c"].tenant == R
    assert got.rewritten == 2


def test_the_limit_fits_the_store_columns_that_hold_span_strings() -> None:
    from observer.store import schema

    columns = [
        schema.requests.c.request_id,
        schema.requests.c.tenant,
        schema.requests.c.model,
        schema.requests.c.prefill_pod,
        schema.requests.c.decode_pod,
        schema.rollups_minute.c.tenant,
        schema.rollups_minute.c.model,
    ]
    assert all(getattr(col.type, "length", 0) >= MAX for col in columns)


# --------------------------------------------------------------------------- client text in answers

QUOTE = c.REASON_VALUE_CHARS
ELLIPSIS = c.MESSAGE_ELLIPSIS


def test_excerpt_quotes_the_start_of_a_long_value_with_an_ellipsis() -> None:
    assert excerpt("llm_request") == "'llm_request'"
    long = "llm_request-" + "n" * (10 << 20)
    out = excerpt(long)
    assert out == repr(long[:QUOTE]) + ELLIPSIS
    assert out.startswith("'llm_request-nnn")
    # NUL and surrogates come back escaped by the repr: the text is encodable and NUL-free
    assert excerpt("a\x00\ud800") == "'a\\x00\\ud800'"
    # other values: a bounded repr, however large
    assert excerpt(3.5) == "3.5"
    huge_list = list(range(2_000_000))
    assert excerpt(huge_list).startswith("[0, 1, 2")
    assert len(excerpt(huge_list)) <= QUOTE + 1
    assert len(excerpt({"k": "v" * (1 << 20)})) <= QUOTE + 1


@given(st.text(alphabet=st.characters(codec=None, exclude_categories=()) | HOSTILE, max_size=400))
def test_excerpt_is_short_and_encodable(s: str) -> None:
    out = excerpt(s)
    out.encode("utf-8")
    assert "\x00" not in out
    assert len(out) <= len(repr(s[:QUOTE])) + 1


def test_clip_cuts_messages_and_replaces_unencodable_characters() -> None:
    ok = "bad ids (span 'x')"
    assert clip(ok, 300) is ok
    cut = clip("r" * 10_000, 300)
    assert len(cut) == 300
    assert cut.endswith(ELLIPSIS)
    assert cut.startswith("r" * 299)
    assert clip("a\x00b\ud800", 300) == f"a{R}b{R}"
    assert clip("é\udfff" * 1000, 50) == ("é" + R) * 24 + "é" + ELLIPSIS
