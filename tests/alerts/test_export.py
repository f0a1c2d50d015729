"""Export for `pd-observer alerts export DIR` and `GET /api/v1/alerts/rules`; settings parsing;
one runbook page per alert."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from alerts.export import ALERTMANAGER_FILE, PROMETHEUS_RULE_FILE, RULES_FILE, build, export, rules_for_api
from alerts.settings import parse_alerts_settings
from observer.config import ConfigError, Settings, load_settings

REPO = Path(__file__).resolve().parents[2]


def test_export_writes_the_three_files(tmp_path: Path, golden_settings: Settings) -> None:
    paths = export(tmp_path / "out", golden_settings)
    assert [p.name for p in paths] == [RULES_FILE, PROMETHEUS_RULE_FILE, ALERTMANAGER_FILE]
    rules = yaml.safe_load(paths[0].read_text())
    obj = yaml.safe_load(paths[1].read_text())
    am = yaml.safe_load(paths[2].read_text())
    assert obj["kind"] == "PrometheusRule"
    assert obj["metadata"]["namespace"] == "monitoring"
    assert obj["spec"] == rules
    assert am["route"]["routes"][0]["receiver"] == "oncall"


def test_api_body_is_json_ready_and_matches_the_rule_file(golden_settings: Settings) -> None:
    body = rules_for_api(golden_settings)
    assert body["window_set"] == "sre-workbook"
    assert body["groups"] == yaml.safe_load(export_text(golden_settings))["groups"]
    assert body["alertmanager"]["inhibit_rules"]
    assert body["warnings"] == []


def export_text(settings: Settings) -> str:
    from alerts.export import render_all

    return render_all(settings)[RULES_FILE]


def test_bad_alert_settings_fail_with_one_line() -> None:
    bad = load_settings(
        overrides={"alerts": {"teams": {"t": {"tenants": ["a"], "receiver": "nobody"}}}}, env={}
    )
    with pytest.raises(ConfigError, match=r"unknown receiver 'nobody'") as exc:
        parse_alerts_settings(bad)
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match=r"alerts\.window_set"):
        parse_alerts_settings({"window_set": ""})
    two = {
        "receivers": {"r": {}},
        "teams": {"a": {"tenants": ["x"], "receiver": "r"}, "b": {"tenants": ["x"], "receiver": "r"}},
    }
    with pytest.raises(ConfigError, match="two teams"):
        parse_alerts_settings(two)
    with pytest.raises(ConfigError, match="unknown window set"):
        build(load_settings(overrides={"alerts": {"window_set": "nope"}}, env={}))


def test_every_alert_has_a_runbook_page_with_what_to_check_and_do(golden_settings: Settings) -> None:
    names = build(golden_settings).rules.alert_names
    for name in names:
        page = REPO / "docs" / "runbooks" / f"{name}.md"
        assert page.is_file(), page
        text = page.read_text()
        for heading in ("## What it means", "## What to check", "## What to do"):
            assert heading in text, (name, heading)
    listed = {p.stem for p in (REPO / "docs" / "runbooks").glob("*.md")}
    assert listed == set(names), "a runbook without an alert, or an alert without a runbook"
