"""The inlined `Aggregator.add` gives exactly what the one-record-at-a-time code did.

Oracle: `ReferenceAggregator` (reference.py), the aggregator's `_add` before the rewrite. Both
are fed the same random stream (tenant folding beyond K, model folding beyond M, a literal `other`
tenant and model, end times
across minute and hour boundaries, out of time order, in the future, older than the longest
window, NaN/inf/negative/None latencies, errors, tenant-scoped SLOs, sketch bin collapse,
`expire` and `set_slos`), and their whole state is compared: every bucket and cell in order,
every sketch (bins, count, exact sum, min, max, floor), totals, slots and the fold counter. The
same stream fed one record per `add` call must give the same state too.
"""

from __future__ import annotations

import contextlib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from observer import conventions as c
from observer.aggregate import Aggregator, QuantileSketch
from observer.config import AggregationSettings
from observer.model import RequestRecord, SloSpec, TierTokens

from .reference import ReferenceAggregator

SLO_SETS: tuple[tuple[SloSpec, ...], ...] = (
    (
        SloSpec("ttft", c.SLI_TTFT, 0.99, 0.5),
        SloSpec("itl", c.SLI_ITL, 0.99, 0.1),
        SloSpec("avail", c.SLI_ERROR, 0.999),
    ),
    (
        SloSpec("e2e-acme", c.SLI_E2E, 0.9, 3.0, tenants=("t0", "t1")),
        SloSpec("avail-other", c.SLI_ERROR, 0.99, tenants=("t5", "other")),
        SloSpec("ttft", c.SLI_TTFT, 0.99, 0.5),
    ),
    (),
)

_latency = st.one_of(
    st.none(),
    st.floats(1e-3, 1e3),
    st.sampled_from((0.0, -0.01, 1e-10, 2.0, float("nan"), float("inf"), float("-inf"))),
)


@st.composite
def record(draw: st.DrawFn, now: float, n: int) -> RequestRecord:
    end = now + draw(
        st.one_of(
            st.floats(-400.0, 5.0),  # fine buckets, a few in the future (clock skew)
            st.floats(-4000.0, 0.0),  # coarse buckets and older than the longest window
            st.sampled_from((-60.0, -300.0, -3600.0, -3600.0 + 1e-9, 0.0)),  # bucket edges
        )
    )
    tenant = draw(st.sampled_from(("t0", "t1", "t2", "t3", "t4", "t5", "t6", c.OTHER_TENANT)))
    lat: dict[str, Any] = {m: draw(_latency) for m in c.LATENCY_METRICS}
    return RequestRecord(
        request_id=f"r{n}",
        trace_id=f"{n:032x}",
        tenant=tenant,
        model=draw(st.sampled_from(("m1", "m2", "m3", c.OTHER_MODEL))),
        start_time=end - 1.0,
        end_time=end,
        prompt_tokens=draw(st.integers(0, 9000)),
        output_tokens=draw(st.integers(0, 900)),
        cached=TierTokens(*(draw(st.integers(0, 50)) for _ in c.TIERS)),
        error=draw(st.booleans()),
        **lat,
    )


@st.composite
def stream(draw: st.DrawFn) -> list[tuple[str, float, Any]]:
    now = draw(st.sampled_from((3590.0, 7195.5, 10_000.0)))
    ops: list[tuple[str, float, Any]] = []
    n = 0
    for _ in range(draw(st.integers(1, 6))):
        now += draw(st.sampled_from((0.0, 0.5, 5.0, 10.0, 61.0, 400.0, 3000.0)))
        kind = draw(st.sampled_from(("add", "add", "add", "expire", "set_slos")))
        if kind == "add":
            k = draw(st.integers(0, 40))
            ops.append(("add", now, [draw(record(now, n + i)) for i in range(k)]))
            n += k
        elif kind == "expire":
            ops.append(("expire", now, None))
        else:
            k = draw(st.integers(0, 10))
            batch = [draw(record(now, n + i)) for i in range(k)]
            n += k
            ops.append(("set_slos", now, (draw(st.sampled_from(SLO_SETS)), batch)))
    return ops


def state(agg: Aggregator) -> Any:
    """Everything the aggregator holds, in order (dict order is observable through queries)."""

    def cells(buckets: dict[int, dict[tuple[str, str], Any]]) -> list[Any]:
        return [
            (
                idx,
                [
                    (
                        key,
                        cell.requests,
                        cell.prompt,
                        cell.output,
                        cell.errors,
                        list(cell.cached),
                        list(cell.slo),
                        [None if sk is None else sk.to_dict() for sk in cell.sketches],
                    )
                    for key, cell in bucket.items()
                ],
            )
            for idx, bucket in buckets.items()
        ]

    totals = [
        (key, t.requests, t.prompt, t.output, t.errors, list(t.cached), list(t.slo))
        for key, t in agg._totals.items()
    ]
    return (
        cells(agg._fine),
        cells(agg._coarse),
        agg._frontier,
        totals,
        sorted(agg._totals_tenants),
        sorted(agg._totals_models),
        list(agg._slots.last.items()),
        list(agg._model_slots.last.items()),
        agg.folded,
        agg.models_folded,
    )


def run(agg: Aggregator, ops: list[tuple[str, float, Any]], one_by_one: bool) -> list[Any]:
    seen = []
    for kind, now, arg in ops:
        if kind == "add":
            if one_by_one:
                agg.add([], now)  # the batch's `add` expires first, even when empty
                for r in arg:
                    agg.add([r], now)
            else:
                agg.add(arg, now)
        elif kind == "expire":
            agg.expire(now)
        else:
            agg.set_slos(arg[0], arg[1], now)
        seen.append(state(agg))
        seen.append([agg.tenants(w, now) for w in (10, 60, 300, 301, 3600)])
        seen.append(agg.totals())
    return seen


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=stream(),
    max_tenants=st.integers(1, 4),
    max_models=st.integers(1, 4),
    slos=st.sampled_from(SLO_SETS),
    accuracy=st.sampled_from((0.04, 0.005)),
)
def test_add_matches_the_reference_and_the_one_by_one_path(
    ops: list[tuple[str, float, Any]],
    max_tenants: int,
    max_models: int,
    slos: tuple[SloSpec, ...],
    accuracy: float,
) -> None:
    # 64 bins at 4 % accuracy is ~2 decades: values over 1e-3..1e3 collapse the low bins
    settings_ = AggregationSettings(
        max_tenants=max_tenants, max_models=max_models, sketch_max_bins=64, sketch_relative_accuracy=accuracy
    )
    expected = run(ReferenceAggregator(settings_, slos), ops, one_by_one=False)
    assert run(Aggregator(settings_, slos), ops, one_by_one=False) == expected
    assert run(Aggregator(settings_, slos), ops, one_by_one=True) == expected


def test_sketch_collapse_is_exercised() -> None:
    """Guard for the test above: its value range does overflow 64 bins at 4 % accuracy."""
    agg = Aggregator(AggregationSettings(sketch_max_bins=64, sketch_relative_accuracy=0.04), ())
    recs = [
        RequestRecord(
            f"r{i}", "t", "a", "m", 0.0, 100.0, 1, 1, TierTokens(),
            10.0 ** (-3 + 6 * i / 99), None, None, None, None, None, None,
        )
        for i in range(100)
    ]  # fmt: skip
    agg.add(recs, 100.0)
    (bucket,) = agg._fine.values()
    (cell,) = bucket.values()
    sk = cell.sketches[0]
    assert sk is not None
    assert sk.bin_count == 64
    assert sk.count == 100


@settings(max_examples=300, deadline=None)
@given(
    chunks=st.lists(st.lists(_latency, max_size=60), max_size=8),
    max_bins=st.sampled_from((2, 3, 64)),
    accuracy=st.sampled_from((0.04, 0.005)),
)
def test_add_values_is_add_per_value(
    chunks: list[list[float | None]], max_bins: int, accuracy: float
) -> None:
    """`add_values` (the aggregator's batch path) == `add` per value; None/NaN/inf skipped."""
    fast = QuantileSketch(accuracy, max_bins)
    slow = QuantileSketch(accuracy, max_bins)
    for chunk in chunks:
        fast.add_values(chunk)
        for v in chunk:
            if v is not None:
                with contextlib.suppress(ValueError):
                    slow.add(v)
        assert fast.to_dict() == slow.to_dict()
