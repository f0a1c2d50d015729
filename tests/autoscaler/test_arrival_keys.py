"""The EPP counter's series stay apart whatever their label values hold."""

from __future__ import annotations

from autoscaler.arrival import epp_series, prom_series
from observer import conventions as c
from observer.sources.scrape import parse_exposition


def test_label_values_holding_the_key_separators_are_separate_series() -> None:
    # joined with "," and "=", these two label sets made one key, and one counter was lost
    name = c.EPP_GENERATIONS[next(iter(c.EPP_GENERATIONS))]["request_total"]
    first, second = sorted((c.EPP_LABEL_MODEL, c.EPP_LABEL_FAIRNESS))
    text = (
        f"# TYPE {name.removesuffix('_total')} counter\n"
        f'{name}{{{first}="a,{second}=t"}} 10\n'
        f'{name}{{{first}="a",{second}="t"}} 5\n'
    )
    series = epp_series(parse_exposition(text), "p")
    assert series is not None
    assert sorted(series.values()) == [5.0, 10.0]
    rows = [
        {"metric": {"a": "x,b=y"}, "value": [0, "10"]},
        {"metric": {"a": "x", "b": "y"}, "value": [0, "5"]},
    ]
    assert sorted(prom_series(rows, ["p"])["p"].values()) == [5.0, 10.0]
