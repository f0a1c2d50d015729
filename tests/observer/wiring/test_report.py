"""The HTML report and its SVG charts (pure)."""

from __future__ import annotations

import re

from observer.wiring.report import charts, line_chart, render_report


def _sample(t: float, ttft: float | None) -> dict[str, object]:
    tenants = [] if ttft is None else [{"tenant": "a", "requests": 3, "hit_rate": 0.5, "ttft_p90": ttft}]
    return {
        "elapsed": t,
        "rps": t / 10,
        "tenants": tenants,
        "pools": [{"role": "decode", "ready": 2}, {"role": "prefill", "ready": 1}],
    }


def test_line_chart_breaks_on_missing_values_and_draws_threshold() -> None:
    svg = line_chart("t", {"s": [(0, 1.0), (1, 2.0), (2, None), (3, 1.0), (4, 1.5)]}, hlines=[(1.8, "SLO")])
    assert svg.count("<polyline") == 2  # the gap splits the line
    assert 'class="threshold"' in svg
    assert svg.startswith("<svg")
    assert svg.endswith("</svg>")


def test_report_has_every_chart_with_data_and_escapes_names() -> None:
    data = {
        "scenario": "story<x>",
        "slo_ttft_seconds": 2.0,
        "samples": [_sample(t, None if t == 20 else t / 10) for t in range(0, 60, 10)],
        "events": [{"elapsed": 20.0, "kind": "phase", "text": "prefill-burst"}],
        "alerts": [{"elapsed": 30.0, "name": "PdObserverSloBurn", "state": "firing"}],
        "summary": {"tenants": [{"tenant": "a", "requests": 3, "hit_rate": 0.5}]},
    }
    got = charts(data)
    assert set(got) == {"load", "replicas", "ttft", "hit_rate", "alerts"}
    for cid in ("load", "replicas", "ttft", "hit_rate"):
        assert "<polyline" in got[cid], cid
    assert "prefill-burst" in got["ttft"]  # phase marker
    page = render_report(data)
    assert "story&lt;x&gt;" in page
    assert "story<x>" not in page
    assert "<script" not in page
    assert "http://" not in re.sub(r'xmlns="http://www.w3.org/2000/svg"', "", page)
