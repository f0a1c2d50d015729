"""Round trips of the store's serializations (pure)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from observer import conventions as c
from observer.model import EngineSpan, TierTokens
from observer.store import codec

from .factories import engine_span, record, slo

_f = st.floats(min_value=0, max_value=1e6, allow_nan=False)
_opt_f = st.none() | _f
_n = st.integers(min_value=0, max_value=2**40)
_txt = st.text(max_size=30)

spans = st.builds(
    EngineSpan,
    trace_id=st.text("0123456789abcdef", min_size=32, max_size=32),
    span_id=st.text("0123456789abcdef", min_size=16, max_size=16),
    request_id=_txt,
    role=st.sampled_from([c.ROLE_PREFILL, c.ROLE_DECODE, None]),
    tenant=st.none() | _txt,
    model=_txt,
    pod=_txt,
    start_time=_f,
    end_time=_f,
    prompt_tokens=_n,
    output_tokens=_n,
    cached=st.builds(TierTokens, _n, _n, _n, _n, _n),
    queue=_opt_f,
    prefill=_opt_f,
    decode=_opt_f,
    ttft=_opt_f,
    e2e=_opt_f,
    error=st.booleans(),
)


@given(spans)
def test_engine_span_round_trip(span: EngineSpan) -> None:
    assert codec.decode_engine_span(codec.encode_engine_span(span)) == span


def test_engine_span_unknown_version_is_rejected() -> None:
    payload = json.loads(codec.encode_engine_span(engine_span(1)))
    payload["v"] = 99
    with pytest.raises(ValueError, match="version"):
        codec.decode_engine_span(json.dumps(payload))


def test_record_row_round_trip() -> None:
    r = record(5, 123.5, error=True)
    row = codec.record_to_row(r)
    assert row["cached_hbm"] == r.cached.hbm
    assert row["cached_unknown"] == r.cached.unknown
    assert codec.row_to_record({**row, "seq": 9}) == r


def test_slo_row_round_trip() -> None:
    s = slo("x", 0.9, ("a", "b"))
    assert codec.row_to_slo(codec.slo_to_row(s, 3)) == s
