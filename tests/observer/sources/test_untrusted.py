"""The sources' string boundary (observer/sources/untrusted.py, prometheus.clean_rows): ingest's
`clean_value` rule, counted per source, the clean case untouched (same objects)."""

from __future__ import annotations

import json

from observer import conventions as c
from observer.sources.prometheus import clean_rows
from observer.sources.untrusted import ValueCleaner, clean_value, text_or_none

R = c.VALUE_REPLACEMENT


def test_value_cleaner_is_clean_value_counting_its_rewrites() -> None:
    cleaner = ValueCleaner(c.SOURCE_SCRAPE)
    ok = "vllm-decode-0"
    assert cleaner(ok) is ok
    assert cleaner("a\x00") == "a" + R
    long = "p" * 10_000
    assert cleaner(long) == clean_value(long)
    assert cleaner.count == 2


def test_text_or_none_takes_strings_only() -> None:
    assert text_or_none("pool-a") == "pool-a"
    assert text_or_none("\ud800") == R
    assert text_or_none(["a"]) is None
    assert text_or_none(7) is None
    assert text_or_none(None) is None


def test_clean_rows_keeps_a_clean_answer_and_fixes_a_hostile_one() -> None:
    clean = [{"metric": {"__name__": "x", "pod": "vllm-0"}, "value": [1.0, "0.5"]}]
    assert clean_rows(clean) is clean
    # what a Prometheus-compatible API may send: JSON escapes that decode to lone surrogates,
    # non-string label values, rows without a metric object
    text = (
        '[{"metric": {"pod": "ok"}, "value": [1, "1"]},'
        ' {"metric": {"pod": "vllm-\\ud800", "n": 3, "z": null}, "value": [1, "2"]},'
        ' {"value": [1, "3"]}]'
    )
    rows = json.loads(text)
    cleaner = ValueCleaner(c.SOURCE_PROMETHEUS)
    out = clean_rows(rows, cleaner)
    assert out[0] is rows[0]
    assert out[1] == {"metric": {"pod": "vllm-" + R}, "value": [1, "2"]}
    assert out[2] == {"metric": {}, "value": [1, "3"]}
    assert cleaner.count == 1
    assert rows[1]["metric"]["pod"] == "vllm-\ud800"  # the answer itself is not modified
