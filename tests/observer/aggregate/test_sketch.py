"""QuantileSketch: accuracy against exact rank quantiles, merge, serialisation, bounds."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from observer.aggregate.sketch import MIN_INDEXABLE, QuantileSketch, quantile_rank

QS = (0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0)


def exact(values: list[float], q: float) -> float:
    """Value of rank ceil(q*n) (the sketch's documented convention)."""
    ordered = sorted(max(v, 0.0) for v in values)
    return ordered[quantile_rank(q, len(ordered)) - 1]


def close(estimate: float | None, truth: float, rel: float = 0.01) -> bool:
    assert estimate is not None
    if truth <= MIN_INDEXABLE:
        return abs(estimate - truth) <= MIN_INDEXABLE
    return abs(estimate - truth) <= rel * truth


positive = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False)
heavy = st.builds(lambda u: 1e-3 / (1.0 - u) ** 2, st.floats(min_value=0.0, max_value=0.999999))
values = st.lists(
    st.one_of(positive, heavy, st.just(0.0), st.sampled_from([0.5, 1.0, 2.0])), min_size=1, max_size=400
)


@settings(max_examples=150, deadline=None)
@given(values)
def test_every_quantile_within_one_percent_of_exact(vals: list[float]) -> None:
    sk = QuantileSketch(0.005, 2048)
    for v in vals:
        sk.add(v)
    for q in QS:
        assert close(sk.quantile(q), exact(vals, q)), (q, sk.quantile(q), exact(vals, q))
    assert sk.quantiles(QS) == tuple(sk.quantile(q) for q in QS)
    assert sk.count == len(vals)
    assert sk.min == min(vals)
    assert sk.max == max(vals)
    assert math.isclose(sk.sum, sum(vals), rel_tol=1e-9, abs_tol=1e-12)


@settings(max_examples=100, deadline=None)
@given(values, values)
def test_merge_equals_adding_all(a: list[float], b: list[float]) -> None:
    left, right, both = QuantileSketch(), QuantileSketch(), QuantileSketch()
    for v in a:
        left.add(v)
        both.add(v)
    for v in b:
        right.add(v)
        both.add(v)
    left.merge(right)
    assert left == both
    assert left.quantiles(QS) == both.quantiles(QS)


@settings(max_examples=100, deadline=None)
@given(values)
def test_serialisation_round_trips(vals: list[float]) -> None:
    sk = QuantileSketch(0.005, 64)  # small bound so some examples collapse
    for v in vals:
        sk.add(v)
    via_json = QuantileSketch.from_json(json.dumps(sk.to_dict()))
    via_bytes = QuantileSketch.from_bytes(sk.to_bytes())
    for other in (via_json, via_bytes, sk.copy()):
        assert other == sk
        assert other.quantiles(QS) == sk.quantiles(QS)
    assert len(sk.to_bytes()) < 64 + 12 * sk.bin_count


def test_empty_sketch() -> None:
    sk = QuantileSketch()
    assert sk.quantile(0.5) is None
    assert sk.quantiles((0.5, 0.99)) == (None, None)
    assert (sk.count, sk.sum, sk.min, sk.max) == (0, 0.0, None, None)
    assert QuantileSketch.from_bytes(sk.to_bytes()) == sk
    assert QuantileSketch.from_dict(sk.to_dict()) == sk


def test_rank_convention() -> None:
    assert quantile_rank(0.5, 4) == 2
    assert quantile_rank(0.5, 5) == 3
    assert quantile_rank(0.0, 5) == 1
    assert quantile_rank(1.0, 5) == 5
    assert quantile_rank(0.07, 100) == 7  # 0.07*100 == 7.000000000000001 in floats
    assert quantile_rank(0.99, 100) == 99
    with pytest.raises(ValueError, match="within"):
        quantile_rank(1.5, 3)


def test_zero_tiny_and_negative_values_go_to_the_zero_bin() -> None:
    sk = QuantileSketch()
    for v in (0.0, 1e-12, -0.003, 5.0):
        sk.add(v)
    assert sk.bin_count == 1
    assert sk.quantile(0.5) == 0.0
    assert sk.min == 0.0  # negative clamped
    assert sk.quantile(1.0) == 5.0


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_rejected_without_counting(bad: float) -> None:
    sk = QuantileSketch()
    with pytest.raises(ValueError, match="cannot add"):
        sk.add(bad)
    assert sk.count == 0


def test_bins_are_bounded_and_high_quantiles_stay_accurate() -> None:
    sk = QuantileSketch(0.005, 64)
    vals = [10 ** (i / 100) for i in range(-600, 600)]  # 12 decades: far more than 64 bins
    for v in vals:
        sk.add(v)
    assert sk.bin_count <= 64
    for q in (0.99, 0.999):
        assert close(sk.quantile(q), exact(vals, q))
    # a low quantile landed in the collapsed bin: no guarantee, but still within [min, max]
    low = sk.quantile(0.1)
    assert low is not None
    assert min(vals) <= low <= max(vals)
    merged = QuantileSketch(0.005, 64)
    merged.merge(sk)
    merged.add(1e-9 * 5)
    assert merged.bin_count <= 64


def test_merge_rejects_different_accuracy() -> None:
    with pytest.raises(ValueError, match="relative accuracy"):
        QuantileSketch(0.005).merge(QuantileSketch(0.01))


def test_corrupt_serialisations_are_rejected() -> None:
    sk = QuantileSketch()
    sk.add(1.0)
    data = sk.to_dict()
    data["n"] = 5
    with pytest.raises(ValueError, match="add up"):
        QuantileSketch.from_dict(data)
    with pytest.raises(ValueError, match="length"):
        QuantileSketch.from_bytes(sk.to_bytes()[:-1])
    with pytest.raises(ValueError, match="version"):
        QuantileSketch.from_dict({**sk.to_dict(), "v": 99})


def test_large_random_stream_accuracy() -> None:
    rng = random.Random(3)
    vals = [rng.lognormvariate(-1, 1.5) for _ in range(20_000)] + [0.0] * 50
    sk = QuantileSketch()
    for v in vals:
        sk.add(v)
    for q in QS:
        assert close(sk.quantile(q), exact(vals, q), rel=0.005 + 1e-9)
