"""Loading: window sets (packaged data files) and SLO specs (settings, Sloth prometheus/v1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from alerts.spec import (
    format_duration,
    load_window_set,
    packaged_window_sets,
    parse_duration,
    slos_from_settings,
    slos_from_sloth,
)
from observer import conventions as c
from observer.config import ConfigError, Settings

SLOTH_SPEC = """
version: "prometheus/v1"
service: "llm"
labels:
  owner: "serving-team"
slos:
  - name: "requests-availability"
    objective: 99.9
    description: "Common SLO based on availability for HTTP request responses."
    sli:
      events:
        error_query: sum(rate(vllm:request_success_total{finished_reason="abort"}[{{.window}}]))
        total_query: sum(rate(vllm:request_success_total[{{.window}}]))
    alerting:
      name: LlmHighErrorRate
      page_alert: {labels: {severity: pageteam}}
      ticket_alert: {labels: {severity: slack}}
  - name: "ttft-500ms"
    objective: 99
    sli:
      events:
        error_query: |
          sum(rate(vllm:time_to_first_token_seconds_count[{{.window}}]))
          -
          sum(rate(vllm:time_to_first_token_seconds_bucket{le="0.5"}[{{.window}}]))
        total_query: sum(rate(vllm:time_to_first_token_seconds_count[{{.window}}]))
    alerting: {name: LlmSlowFirstToken}
  - name: "itl-explicit"
    objective: 95.5
    labels: {pd_observer_sli: itl, pd_observer_threshold_seconds: "0.08", tenant: "acme,globex"}
    sli: {raw: {error_ratio_query: "whatever"}}
    alerting: {name: X}
"""


def test_sre_workbook_window_set_is_the_documented_one() -> None:
    ws = load_window_set("sre-workbook")
    got = [(w.severity, w.long, w.short, w.factor, w.for_seconds) for w in ws.windows]
    assert got == [
        ("page", "1h", "5m", 14.4, 0),
        ("page", "6h", "30m", 6.0, 0),
        ("ticket", "1d", "2h", 3.0, 0),
        ("ticket", "3d", "6h", 1.0, 0),
    ]
    assert ws.period_seconds == 30 * 86400
    assert ws.durations == ("5m", "30m", "1h", "2h", "6h", "1d", "3d")


def test_pyrra_window_set_holds_alerts_with_for() -> None:
    ws = load_window_set("pyrra")
    assert [(w.factor, w.for_seconds) for w in ws.windows] == [(14, 120), (7, 900), (2, 3600), (1, 10800)]
    assert {"pyrra", "sre-workbook"} <= set(packaged_window_sets())


def test_window_set_from_a_file_and_unknown_name(tmp_path: Path) -> None:
    f = tmp_path / "mine.yaml"
    f.write_text("name: mine\nperiod: 7d\nwindows:\n  - {severity: page, long: 1h, short: 5m, factor: 10}\n")
    ws = load_window_set(str(f))
    assert ws.name == "mine"
    assert ws.period_seconds == 7 * 86400
    with pytest.raises(ConfigError, match="unknown window set"):
        load_window_set("nope")
    f.write_text("windows:\n  - {severity: page, long: 1x, short: 5m, factor: 10}\n")
    with pytest.raises(ConfigError, match="bad duration"):
        load_window_set(str(f))


@pytest.mark.parametrize(("text", "secs"), [("5m", 300), ("1h", 3600), ("3d", 259200), ("90s", 90)])
def test_durations_round_trip(text: str, secs: int) -> None:
    assert parse_duration(text) == secs
    assert format_duration(secs) == text


def test_slos_from_settings_are_the_configured_slos() -> None:
    specs = slos_from_settings(Settings())
    assert [s.name for s in specs] == ["ttft-2s", "itl-100ms", "availability"]
    assert specs[0].threshold_seconds == 2.0


def test_sloth_spec_import_maps_objective_sli_and_exact_threshold() -> None:
    avail, ttft, itl = slos_from_sloth(SLOTH_SPEC)
    assert (avail.name, avail.sli, avail.objective, avail.threshold_seconds) == (
        "requests-availability",
        c.SLI_ERROR,
        0.999,
        None,
    )
    assert avail.description.startswith("Common SLO")
    # a latency SLI over the vLLM histogram: judged per request at exactly the bucket's bound
    assert (ttft.sli, ttft.objective, ttft.threshold_seconds) == (c.SLI_TTFT, 0.99, 0.5)
    assert (itl.sli, itl.objective, itl.threshold_seconds, itl.tenants) == (
        c.SLI_ITL,
        0.955,
        0.08,
        ("acme", "globex"),
    )


def test_sloth_spec_rejects_other_versions() -> None:
    with pytest.raises(ConfigError, match="prometheus/v1"):
        slos_from_sloth("version: sloth.slok.dev/v1\nslos: []\n")
    with pytest.raises(ConfigError, match="name and objective"):
        slos_from_sloth('version: "prometheus/v1"\nslos:\n  - {name: x}\n')
