"""Hostile names and values from the `alerts` settings, against the real promtool and amtool.

Each refused value below was accepted before and produced files that the real tools refused
whole (every rule, or the whole Alertmanager configuration, failed to load): now the settings
refuse it with one line naming the field. Values that look odd but are valid still produce files
the tools accept, and routes that match exactly the names configured.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from alerts.export import ALERTMANAGER_FILE, RULES_FILE, export
from alerts.render import dump
from observer.cli import section_parsers
from observer.config import ConfigError, Settings, load_settings
from tests.support.procs import require_binary

pytestmark = pytest.mark.prometheus


def _settings(tmp_path: Path, data: dict[str, Any]) -> Settings:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return load_settings(path, env={}, sections=section_parsers())


def _tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary(args[0]), *args[1:]], check=False, capture_output=True, text=True, timeout=30
    )


def _export_and_check(tmp_path: Path, data: dict[str, Any]) -> Path:
    """Export with the settings `data`; `promtool check rules` and `amtool check-config` pass."""
    out = tmp_path / "out"
    export(out, _settings(tmp_path, data))
    res = _tool("promtool", "check", "rules", str(out / RULES_FILE))
    assert res.returncode == 0, res.stdout + res.stderr
    res = _tool("amtool", "check-config", str(out / ALERTMANAGER_FILE))
    assert res.returncode == 0, res.stdout + res.stderr
    return out


ONCALL = {"oncall": {"webhook_url": "http://127.0.0.1:9/oncall"}}

# (alerts settings, the field the one-line error names); before the fix each was accepted and
# the tool in the comment refused the generated file.
REFUSED = [
    # promtool: annotation "runbook_url": template: ... unexpected "/" in command
    pytest.param(
        {"runbook_base_url": "https://rb.example/{{"}, "alerts.runbook_base_url", id="runbook-template"
    ),
    pytest.param(
        {"runbook_base_url": "https://rb.example/{{ $labels.slo }}/"},
        "alerts.runbook_base_url",
        id="runbook-space",
    ),
    # amtool: invalid character " " in host name / invalid control character in URL / missing host
    pytest.param(
        {"receivers": {"x": {"webhook_url": "http://pager example/h"}}},
        "alerts.receivers.x.webhook_url",
        id="url-space",
    ),
    pytest.param(
        {"receivers": {"x": {"webhook_url": "http://pager/h\nook"}}},
        "alerts.receivers.x.webhook_url",
        id="url-newline",
    ),
    pytest.param(
        {"receivers": {"x": {"webhook_url": "http://"}}}, "alerts.receivers.x.webhook_url", id="url-no-host"
    ),
    # amtool: not a valid duration string: "5m5m" / "1s1m"; repeat_interval cannot be zero
    pytest.param({"group_wait": "5m5m"}, "alerts.group_wait", id="duration-repeated-unit"),
    pytest.param({"group_interval": "1s1m"}, "alerts.group_interval", id="duration-unit-order"),
    pytest.param({"repeat_interval_page": "0s"}, "alerts.repeat_interval_page", id="duration-zero-interval"),
    pytest.param({"group_interval": ""}, "alerts.group_interval", id="duration-empty"),
    # promtool: parse error: not a valid duration string / duration must be greater than 0
    pytest.param(
        {"signals": {"actuation_errors_window": "1s1m"}},
        "alerts.signals.actuation_errors_window",
        id="range-order",
    ),
    pytest.param(
        {"signals": {"actuation_errors_window": "0s"}},
        "alerts.signals.actuation_errors_window",
        id="range-zero",
    ),
    pytest.param({"signals": {"cascade_for": "5m5m"}}, "alerts.signals.cascade_for", id="for-repeated-unit"),
    pytest.param({"signals": {"stuck_for": " 5m"}}, "alerts.signals.stuck_for", id="for-whitespace"),
    # amtool: invalid label name "bad label" in group_by list; wildcard with other labels
    pytest.param({"group_by": ["alertname", "bad label"]}, "alerts.group_by", id="group-by-not-a-label"),
    pytest.param({"group_by": ["alertname", 'x"}']}, "alerts.group_by", id="group-by-quote"),
    pytest.param({"group_by": ["...", "alertname"]}, "alerts.group_by", id="group-by-wildcard-mixed"),
    # a number given as true/false was read as 1 (a KV threshold of 100 %)
    pytest.param(
        {"signals": {"kv_saturation_usage": True}}, "alerts.signals.kv_saturation_usage", id="bool-number"
    ),
    # amtool: missing name in receiver
    pytest.param({"receivers": {"": {}}, "page_receiver": ""}, "alerts.receivers", id="receiver-empty"),
]


@pytest.mark.parametrize(("alerts", "field"), REFUSED)
def test_a_value_the_tools_would_refuse_is_refused_in_one_line(
    tmp_path: Path, alerts: dict[str, Any], field: str
) -> None:
    with pytest.raises(ConfigError) as err:
        _settings(tmp_path, {"alerts": alerts})
    msg = str(err.value)
    assert "\n" not in msg
    assert f"{field}:" in msg, msg


def test_valid_but_unusual_values_give_files_the_tools_accept(tmp_path: Path) -> None:
    """Percent-escapes, `$`, unicode (RTL mark, non-BMP) in URLs; Prometheus durations with several
    units (a `for` of 1h30m was refused by generation: "bad duration '1h30m'"), `ms`, `...`."""
    alerts = {
        "runbook_base_url": "https://rb.example/%7B%7B/$x/\u200f\U0001f600/",
        "receivers": {
            "oncall": {"webhook_url": "http://exämple.test:9/h?a=%20&b=$c"},
            'team "x" \u202e': {"webhook_url": "http://127.0.0.1:9/t"},
        },
        "page_receiver": "oncall",
        "ticket_receiver": 'team "x" \u202e',
        "group_wait": "500ms",
        "group_interval": "1h30m",
        "group_by": ["..."],
        "signals": {"cascade_for": "1h30m", "actuation_errors_window": "1h30m", "leaderless_for": "0s"},
    }
    out = _export_and_check(tmp_path, {"alerts": alerts})
    rules = yaml.safe_load((out / RULES_FILE).read_text())
    by_alert = {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert by_alert["PdObserverCachePartitionCascade"]["for"] == "90m"
    assert "[1h30m]" in by_alert["PdObserverAutoscalerActuationFailing"]["expr"]
    assert "for" not in by_alert["PdObserverAutoscalerLeaderless"]
    assert by_alert["PdObserverDecodeStarvation"]["annotations"]["runbook_url"] == (
        "https://rb.example/%7B%7B/$x/\u200f\U0001f600/PdObserverDecodeStarvation.md"
    )
    am = yaml.safe_load((out / ALERTMANAGER_FILE).read_text())
    assert am["route"]["routes"][1]["receiver"] == 'team "x" \u202e'


@pytest.mark.parametrize(
    ("tenant", "receiver"),
    [
        ("team.x", "team"),
        ("teamXx", "oncall"),  # the dot is literal
        ("team.x.y", "oncall"),  # anchored
        ("a:b-c_d", "team"),
        ("a:b-c_dd", "oncall"),
        ("alice+ops@example.com", "team"),  # an e-mail address as the tenant id
        ("aliceops@example.com", "oncall"),  # the + is literal
        ("alice+ops@exampleXcom", "oncall"),
    ],
)
def test_team_routes_match_only_the_names_configured(tmp_path: Path, tenant: str, receiver: str) -> None:
    alerts = {
        "receivers": {**ONCALL, "team": {}},
        "page_receiver": "oncall",
        "teams": {"t": {"tenants": ["team.x", "a:b-c_d", "alice+ops@example.com"], "receiver": "team"}},
    }
    out = _export_and_check(tmp_path, {"alerts": alerts})
    res = _tool(
        "amtool",
        "config",
        "routes",
        "test",
        f"--config.file={out / ALERTMANAGER_FILE}",
        f"--verify.receivers={receiver}",
        "severity=page",
        f"tenant={tenant}",
    )
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize(
    "name",
    [
        'a"b',
        "a\\b",
        "a}b",
        "a{b",
        "a,b",
        "a=~b",
        "a\nb",
        "a$b",
        "{{ $labels.x }}",
        "a%b",
        "a b",
        "a|b",
        "a*b",
        "",
        "é",
    ],
)
def test_slo_and_team_names_outside_the_name_pattern_are_refused(tmp_path: Path, name: str) -> None:
    """SLO names and team tenants/pools go into PromQL selectors, rule labels (templates) and
    Alertmanager regex matchers: anything but `[A-Za-z0-9_.:-]+` is refused, naming the field."""
    with pytest.raises(ConfigError, match=r"^invalid configuration in .*: slos\.0\.name: "):
        _settings(tmp_path, {"slos": [{"name": name, "sli": "error", "objective": 0.99}]})
    team = {"receivers": {"x": {}}, "teams": {"t": {"tenants": [name], "receiver": "x"}}}
    with pytest.raises(ConfigError, match=r"^invalid configuration in .*: alerts\.teams\.t: "):
        _settings(tmp_path, {"alerts": team})


@pytest.mark.parametrize(
    "text",
    [
        "a\x85\nb",  # NEL: PyYAML wrote it raw into a literal block and read it back as "\n"
        "x\n\x85y",
        "p\u2028\nq",
        "c\r\nd",
        "\x85alone",
        'expr{a="b"}\n/\nx',
        "\U0001f600\n\u200f\u202e",
    ],
)
def test_rendered_yaml_reads_back_the_same_text(text: str) -> None:
    doc = {"groups": [{"name": text, "rules": [{"alert": "A", "expr": text, "labels": {"x": text}}]}]}
    assert yaml.safe_load(dump(doc)) == doc
