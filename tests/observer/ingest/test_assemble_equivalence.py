"""The inlined `TraceAssembler.add` hot path emits exactly what the general rules did.

Oracle: `ReferenceAssembler` (test_assemble_reference.py), the assembler before the rewrite.
Random streams of batches cover P/D halves in one batch and across batches, retried prefills,
duplicates (same span id), decode-only hints, hints arriving late, the `max_pending` bound,
the dedupe memory bound (`remember`), timeouts and restores.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from observer import conventions as c
from observer.ingest import assemble
from observer.ingest.assemble import AssembleResult, TraceAssembler
from observer.model import EngineSpan, RequestRecord, TierTokens, TraceHints
from tests.observer.ingest.test_assemble_reference import ReferenceAssembler

_RESULT_FIELDS = tuple(f.name for f in dataclasses.fields(AssembleResult))


def _same(new: AssembleResult, ref: Any) -> None:
    for name in _RESULT_FIELDS:
        assert getattr(new, name) == getattr(ref, name), name


def _opt_float(lo: float, hi: float) -> st.SearchStrategy[float | None]:
    return st.one_of(st.none(), st.floats(lo, hi, allow_nan=False, allow_infinity=False))


@st.composite
def engine_span(draw: st.DrawFn, n: int, traces: int) -> EngineSpan:
    role = draw(st.sampled_from((None, c.ROLE_PREFILL, c.ROLE_DECODE, c.ROLE_PREFILL, c.ROLE_DECODE)))
    trace = f"t{draw(st.integers(0, traces - 1))}"
    start = draw(st.floats(0.0, 50.0))
    end = start + draw(st.floats(0.0, 5.0))
    return EngineSpan(
        trace_id=trace,
        span_id=f"s{n}",
        request_id=draw(st.sampled_from((f"r{n}", f"req-{trace}", f"req-{trace}-p"))),
        role=role,
        tenant=draw(st.sampled_from((None, "", "acme", "beta"))),
        model=draw(st.sampled_from((c.UNKNOWN_MODEL, "m1", "m2"))),
        pod=draw(st.sampled_from(("p0", "p1"))),
        start_time=start,
        end_time=end,
        prompt_tokens=draw(st.integers(0, 5000)),
        output_tokens=draw(st.integers(0, 4)),
        cached=TierTokens(hbm=draw(st.integers(0, 10)), remote=draw(st.integers(0, 3))),
        queue=draw(_opt_float(0.0, 0.1)),
        prefill=draw(st.one_of(st.none(), st.just(0.0), st.floats(0.0, 1.0))),
        decode=draw(_opt_float(0.0, 5.0)),
        ttft=draw(_opt_float(0.0, 1.0)),
        e2e=draw(_opt_float(0.0, 6.0)),
        error=draw(st.booleans()),
    )


@st.composite
def hint(draw: st.DrawFn, traces: int) -> TraceHints:
    return TraceHints(
        trace_id=f"t{draw(st.integers(0, traces - 1))}",
        tenant=draw(st.sampled_from((None, "acme", "gamma"))),
        model=draw(st.sampled_from((None, "m1", "m3"))),
        disaggregated=draw(st.sampled_from((None, True, False))),
    )


@st.composite
def stream(draw: st.DrawFn) -> list[tuple[str, Any]]:
    """Operations: ("add", (spans, hints)), ("expire", None), ("restore", spans)."""
    traces = draw(st.integers(1, 12))
    made: list[EngineSpan] = []
    ops: list[tuple[str, Any]] = []
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(("add", "add", "add", "expire", "restore")))
        if kind == "add":
            spans: list[EngineSpan] = []
            for _ in range(draw(st.integers(0, 10))):
                if made and draw(st.integers(0, 9)) == 0:
                    spans.append(draw(st.sampled_from(made)))  # a duplicate (collector retry)
                else:
                    s = draw(engine_span(len(made), traces))
                    made.append(s)
                    spans.append(s)
            hints = {h.trace_id: h for h in draw(st.lists(hint(traces), max_size=4))}
            ops.append(("add", (spans, hints)))
        elif kind == "restore":
            ops.append(("restore", draw(st.lists(engine_span(len(made) + 1000, traces), max_size=3))))
        else:
            ops.append(("expire", None))
    return ops


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=stream(),
    max_pending=st.integers(1, 6),
    remember=st.integers(1, 30),
    timeout=st.sampled_from((0.5, 2.0, 100.0)),
)
def test_add_matches_the_reference_assembler(
    ops: list[tuple[str, Any]], max_pending: int, remember: int, timeout: float
) -> None:
    new = TraceAssembler(max_pending, timeout, remember)
    ref = ReferenceAssembler(max_pending, timeout, remember)
    now = 0.0
    for kind, arg in ops:
        now += 1.0
        if kind == "add":
            spans, hints = arg
            _same(new.add(spans, hints, now), ref.add(spans, hints, now))
        elif kind == "expire":
            _same(new.expire(now), ref.expire(now))
        else:
            _same(new.restore(arg, now), ref.restore(arg, now))
        assert new.pending_count == ref.pending_count
        assert new.pending_spans() == ref.pending_spans()
    _same(new.expire(now + 1000.0), ref.expire(now + 1000.0))


def test_pd_pairs_in_one_batch_leave_no_pending_churn() -> None:
    pre = EngineSpan(
        "t", "a", "r-p", c.ROLE_PREFILL, "acme", "m", "p", 0.0, 1.0, 10, 1, TierTokens(),
        0.1, 0.5, None, 0.6, 1.0, False,
    )  # fmt: skip
    dec = EngineSpan(
        "t", "b", "r", c.ROLE_DECODE, None, "m", "d", 1.1, 3.0, 10, 5, TierTokens(),
        None, 0.0, 1.5, 0.2, 1.9, False,
    )  # fmt: skip
    asm = TraceAssembler(10, 30.0)
    res = asm.add([pre, dec], {}, 100.0)
    assert len(res.records) == 1
    assert res.records[0].complete
    assert res.pending_added == ()
    assert res.pending_released == ()
    assert asm.pending_count == 0
    # a retried prefill of the stitched request is superseded, not pending
    assert asm.add([dataclasses.replace(pre, span_id="c")], {}, 101.0).superseded == 1


_VALUES: dict[str, Any] = {
    "request_id": "r",
    "trace_id": "t",
    "tenant": "acme",
    "model": "m",
    "start_time": 1.0,
    "end_time": 2.5,
    "prompt_tokens": 7,
    "output_tokens": 3,
    "cached": TierTokens(hbm=2),
    "ttft": 0.1,
    "itl": None,
    "e2e": 1.5,
    "queue": 0.0,
    "prefill": 0.2,
    "kv_transfer": None,
    "decode": 1.2,
    "error": True,
    "disaggregated": True,
    "prefill_pod": "p",
    "decode_pod": None,
    "complete": False,
}


def test_record_builder_equals_the_dataclass_constructor() -> None:
    expected = RequestRecord(**_VALUES)
    built = assemble._build(tuple(_VALUES[n] for n in assemble._RECORD_FIELDS))
    assert type(built) is RequestRecord
    assert built == expected
    assert hash(built) == hash(expected)
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.tenant = "x"  # type: ignore[misc]


def test_record_builder_falls_back_to_the_constructor(monkeypatch: pytest.MonkeyPatch) -> None:
    """If RequestRecord's fields change, values keep their names (plain constructor)."""
    order = tuple(reversed(assemble._RECORD_FIELDS))
    monkeypatch.setattr(assemble, "_RECORD_FIELDS", order)
    build = assemble._record_builder()
    assert build(tuple(_VALUES[n] for n in order)) == RequestRecord(**_VALUES)
