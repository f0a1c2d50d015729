"""The generated rules, checked and unit-tested with the real promtool.

One `promtool test rules` run covers every alert, firing and not firing, with realistic
counter and gauge series. Expected annotations are rendered from the generated templates
(which use only `{{ $labels.X }}` and `{{ printf "%.2f" $value }}`), so the test also proves
the evidence values shown to the operator.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from alerts.generate import AlertRule, RuleSet, generate
from alerts.render import render_rules
from alerts.settings import AlertsSettings
from alerts.spec import load_window_set
from observer import conventions as c
from observer.model import SloSpec
from tests.support.procs import require_binary, run_prometheus

pytestmark = pytest.mark.prometheus

SLOS = (
    SloSpec(name="ttft-2s", sli=c.SLI_TTFT, objective=0.99, threshold_seconds=2.0),
    SloSpec(name="availability", sli=c.SLI_ERROR, objective=0.999, tenants=("acme", "alice+ops@example.com")),
)
SETTINGS = AlertsSettings(runbook_base_url="https://runbooks.test/pd/")
TOTAL = c.COUNTER_SUFFIX


def _render(template: str, labels: dict[str, str], value: float) -> str:
    out = template.replace('{{ printf "%.2f" $value }}', f"{value:.2f}")
    out = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), out)
    assert "{{" not in out, f"template the test cannot predict: {template}"
    return out


def _series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    body = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{body}}}", "values": values}


@dataclass(frozen=True)
class Fired:
    rule: AlertRule
    labels: dict[str, str]  # labels of the result series
    value: float

    def as_exp(self) -> dict[str, Any]:
        labels = {**self.labels, **dict(self.rule.labels)}
        ann = {k: _render(v, labels, self.value) for k, v in self.rule.annotations}
        return {"exp_labels": labels, "exp_annotations": ann}


def _rule(rules: RuleSet, alert: str, **labels: str) -> AlertRule:
    found = [r for r in rules.alerts if r.alert == alert and all(r.label(k) == v for k, v in labels.items())]
    assert len(found) == 1, (alert, labels, found)
    return found[0]


def _evals(at: str, alerts: list[str], fired: list[Fired]) -> list[dict[str, Any]]:
    return [
        {
            "eval_time": at,
            "alertname": name,
            "exp_alerts": [f.as_exp() for f in fired if f.rule.alert == name],
        }
        for name in alerts
    ]


def _slo_counters(slo: str, tenant: str, requests: str, errors: str) -> list[dict[str, str]]:
    labels = {c.LABEL_SLO: slo, c.LABEL_TENANT: tenant}
    return [
        _series(c.M_SLO_REQUESTS + TOTAL, labels, requests),
        _series(c.M_SLO_ERRORS + TOTAL, labels, errors),
    ]


def burn_test(rules: RuleSet) -> dict[str, Any]:
    """SRE-workbook windows: burn 20x fires all four pairs, 4x only the tickets, 0.5x nothing;
    errors that stopped 10 minutes ago keep the 1h window high but the 5m window silences the page."""
    series = [
        *_slo_counters("ttft-2s", "acme", "0+100x600", "0+20x600"),  # burn 20
        *_slo_counters("ttft-2s", "globex", "0+100x600", "0+4x600"),  # burn 4
        *_slo_counters("ttft-2s", "initech", "0+100x600", "0+0.5x600"),  # burn 0.5
        *_slo_counters("ttft-2s", "hooli", "0+100x600", "0+20x60 1200+0x540"),  # stopped at 1h
        # availability applies to acme and alice+ops@example.com only: another tenant burning it
        # must not alert, a look-alike neither (`+` and `.` are literal)
        *_slo_counters("availability", "globex", "0+100x600", "0+50x600"),
        *_slo_counters("availability", "acme", "0+1000x600", "0+0x600"),
        *_slo_counters("availability", "alice+ops@example.com", "0+100x600", "0+50x600"),  # burn 500
        *_slo_counters("availability", "aliceops@example.com", "0+100x600", "0+50x600"),
        *_slo_counters("availability", "alice+ops@exampleXcom", "0+100x600", "0+50x600"),
    ]
    a = c.ALERT_SLO_BURN
    pairs = [("1h", "5m"), ("6h", "30m"), ("1d", "2h"), ("3d", "6h")]
    slo = {c.LABEL_SLO: "ttft-2s"}
    acme = [
        Fired(_rule(rules, a, slo="ttft-2s", long_window=lw), {**slo, "tenant": "acme"}, 20.0)
        for lw, _ in pairs
    ]
    globex = [
        Fired(_rule(rules, a, slo="ttft-2s", long_window=lw), {**slo, "tenant": "globex"}, 4.0)
        for lw, _ in pairs[2:]
    ]
    # at 1h10m hooli: 1h ratio 1000/6000 (16.7x) but 5m ratio 0 -> no 1h/5m page;
    # 6h, 2h, 3d windows hold all 1200 errors of 7000 requests (17.14x) and their short windows too.
    hooli = [
        Fired(_rule(rules, a, slo="ttft-2s", long_window=lw), {**slo, "tenant": "hooli"}, 1200 / 7000 / 0.01)
        for lw, _ in pairs[1:]
    ]
    avail = {c.LABEL_SLO: "availability", "tenant": "alice+ops@example.com"}
    alice = [
        Fired(_rule(rules, a, slo="availability", long_window=lw), avail, 0.5 / 0.001) for lw, _ in pairs
    ]
    return {
        "name": "error budget burn (sre-workbook)",
        "interval": "1m",
        "input_series": series,
        "alert_rule_test": [
            *_evals("0m", [a], []),
            *_evals("1h10m", [a], [*acme, *globex, *hooli, *alice]),
            *_evals("7h", [a], [*acme, *globex, *alice]),
        ],
    }


def signals_test(rules: RuleSet) -> dict[str, Any]:
    pool_a, pool_b = {c.LABEL_POOL: "pool-a"}, {c.LABEL_POOL: "pool-b"}
    flapping = " ".join("3" if i % 2 == 0 else "4" for i in range(36))
    series = [
        _series(c.M_CASCADE, {c.LABEL_TENANT: "acme"}, "0x4 1x30"),
        _series(c.M_CASCADE, {c.LABEL_TENANT: "globex"}, "0x35"),
        _series(c.M_DECODE_STARVATION, pool_a, "1x35"),
        _series(c.M_DECODE_STARVATION, pool_b, "0x35"),
        _series(c.M_DECODE_PRESSURE, pool_a, "1x35"),
        _series(c.M_DECODE_PRESSURE, pool_b, "0x35"),
        _series(
            c.M_POD_TIER_USAGE, {**pool_a, "pod": "d-0", "role": "decode", "tier": c.TIER_HBM}, "0.95x35"
        ),
        _series(c.M_POD_TIER_USAGE, {**pool_a, "pod": "d-1", "role": "decode", "tier": c.TIER_HBM}, "0.5x35"),
        _series(
            c.M_POD_TIER_USAGE, {**pool_a, "pod": "d-1", "role": "decode", "tier": c.TIER_DRAM}, "0.99x35"
        ),
        _series(c.M_POD_QUEUE, {**pool_a, "pod": "p-0", "role": c.ROLE_PREFILL}, "8x35"),
        _series(c.M_POD_QUEUE, {**pool_a, "pod": "p-1", "role": c.ROLE_PREFILL}, "6x35"),
        _series(c.M_POD_QUEUE, {**pool_a, "pod": "d-0", "role": c.ROLE_DECODE}, "100x35"),
        _series(c.M_POD_QUEUE, {**pool_b, "pod": "p-2", "role": c.ROLE_PREFILL}, "2x35"),
        _series(c.M_PD_RATIO_NEEDED, pool_a, "3x35"),
        _series(c.M_PD_RATIO_DEPLOYED, pool_a, "1.5x35"),
        _series(c.M_PD_RATIO_NEEDED, pool_b, "1x35"),
        _series(c.M_PD_RATIO_DEPLOYED, pool_b, "1x35"),
        _series(c.M_PD_RATIO_NEEDED, {c.LABEL_POOL: "pool-c"}, "0.5x35"),
        _series(c.M_PD_RATIO_DEPLOYED, {c.LABEL_POOL: "pool-c"}, "1x35"),
        _series(c.M_SOURCE_UP, {c.LABEL_SOURCE: "prometheus"}, "1x35"),
        _series(c.M_SOURCE_UP, {c.LABEL_SOURCE: "kvevents"}, "0x35"),
        _series(c.M_SOURCE_AGE, {c.LABEL_SOURCE: "prometheus"}, "30x35"),
        _series(c.M_SOURCE_AGE, {c.LABEL_SOURCE: "traces"}, "500x35"),
        _series(c.M_DESIRED_REPLICAS, {**pool_a, "role": c.ROLE_PREFILL}, "4x35"),
        _series(c.M_CURRENT_REPLICAS, {**pool_a, "role": c.ROLE_PREFILL}, "2x35"),
        # pool-a's decode flaps 3 <-> 4 every minute (each applied): thrashing
        _series(c.M_DESIRED_REPLICAS, {**pool_a, "role": c.ROLE_DECODE}, flapping),
        _series(c.M_CURRENT_REPLICAS, {**pool_a, "role": c.ROLE_DECODE}, flapping),
        _series(c.M_DECISIONS + TOTAL, {**pool_a, "reason": "scale_up"}, "0+1x35"),
        # pool-b is stable: its loop records a `steady` hold every tick, no scaling decision
        _series(c.M_DESIRED_REPLICAS, {**pool_b, "role": c.ROLE_DECODE}, "2x35"),
        _series(c.M_CURRENT_REPLICAS, {**pool_b, "role": c.ROLE_DECODE}, "2x35"),
        _series(c.M_DECISIONS + TOTAL, {**pool_b, "reason": "steady"}, "0+4x35"),
        _series(c.M_ACTUATION_ERRORS + TOTAL, pool_a, "0x19 1x15"),
        _series(c.M_ACTUATION_ERRORS + TOTAL, pool_b, "0x35"),
        # two `serve` instances run the loop, both standing by (the Lease cannot be taken)
        _series(c.M_AUTOSCALER_LEADER, {"instance": "a"}, "0x35"),
        _series(c.M_AUTOSCALER_LEADER, {"instance": "b"}, "0x35"),
    ]
    blind = c.ALERT_OBSERVER_BLIND
    fired = [
        Fired(_rule(rules, c.ALERT_CACHE_CASCADE), {c.LABEL_TENANT: "acme"}, 1),
        Fired(_rule(rules, c.ALERT_DECODE_STARVATION), pool_a, 1),
        Fired(_rule(rules, c.ALERT_DECODE_PRESSURE), pool_a, 1),
        Fired(_rule(rules, c.ALERT_KV_SATURATION), {**pool_a, "pod": "d-0", "role": "decode"}, 0.95),
        Fired(_rule(rules, c.ALERT_PREFILL_QUEUE), pool_a, 7),
        Fired(_rule(rules, c.ALERT_PD_IMBALANCE), pool_a, 2),
        Fired(_rule(rules, c.ALERT_PD_IMBALANCE), {c.LABEL_POOL: "pool-c"}, 0.5),
        Fired(_rule(rules, blind, reason=c.BLIND_REASON_DOWN), {c.LABEL_SOURCE: "kvevents"}, 0),
        Fired(_rule(rules, blind, reason=c.BLIND_REASON_STALE), {c.LABEL_SOURCE: "traces"}, 500),
        Fired(_rule(rules, c.ALERT_AUTOSCALER_STUCK), {**pool_a, "role": c.ROLE_PREFILL}, 2),
        Fired(_rule(rules, c.ALERT_AUTOSCALER_THRASHING), pool_a, 25),
        Fired(_rule(rules, c.ALERT_AUTOSCALER_ACTUATION), pool_a, 1),
        Fired(_rule(rules, c.ALERT_AUTOSCALER_LEADERLESS), {}, 0),
    ]
    names = sorted({a.alert for a in rules.alerts} - {c.ALERT_SLO_BURN})
    return {
        "name": "signal and autoscaler alerts",
        "interval": "1m",
        "input_series": series,
        # 1m: every condition is still pending (or not met): nothing fires
        "alert_rule_test": [*_evals("1m", names, []), *_evals("25m", names, fired)],
    }


def absent_test(rules: RuleSet) -> dict[str, Any]:
    rule = _rule(rules, c.ALERT_OBSERVER_BLIND, reason=c.BLIND_REASON_ABSENT)
    return {
        "name": "observer metrics absent",
        "interval": "1m",
        "input_series": [_series("up", {"job": "other"}, "1x10")],
        "alert_rule_test": [
            *_evals("1m", [c.ALERT_OBSERVER_BLIND], []),
            *_evals("5m", [c.ALERT_OBSERVER_BLIND], [Fired(rule, {}, 1)]),
        ],
    }


def leader_test(rules: RuleSet) -> dict[str, Any]:
    """One of the two instances leads: no leaderless alert, however long the other stands by."""
    leaderless = c.ALERT_AUTOSCALER_LEADERLESS
    return {
        "name": "an autoscaler instance leads",
        "interval": "1m",
        "input_series": [
            _series(c.M_AUTOSCALER_LEADER, {"instance": "a"}, "1x20"),
            _series(c.M_AUTOSCALER_LEADER, {"instance": "b"}, "0x20"),
        ],
        "alert_rule_test": _evals("15m", [leaderless], []),
    }


def pyrra_test(rules: RuleSet) -> dict[str, Any]:
    """Pyrra windows hold each pair with `for`: 2m for 1h/5m, 15m for 6h/30m."""
    a = c.ALERT_SLO_BURN
    labels = {c.LABEL_SLO: "ttft-2s", c.LABEL_TENANT: "acme"}
    p1 = Fired(_rule(rules, a, slo="ttft-2s", long_window="1h"), labels, 20.0)
    p2 = Fired(_rule(rules, a, slo="ttft-2s", long_window="6h"), labels, 20.0)
    return {
        "name": "error budget burn (pyrra, with for)",
        "interval": "1m",
        "input_series": _slo_counters("ttft-2s", "acme", "0+100x30", "0+20x30"),
        "alert_rule_test": [
            *_evals("2m", [a], []),  # true since 1m: pending
            *_evals("3m", [a], [p1]),
            *_evals("16m", [a], [p1, p2]),
        ],
    }


def _write(tmp: Path, name: str, rules: RuleSet, tests: list[dict[str, Any]]) -> Path:
    rule_file = tmp / f"{name}-rules.yaml"
    rule_file.write_text(render_rules(rules))
    test_file = tmp / f"{name}-test.yaml"
    test_file.write_text(
        yaml.safe_dump(
            {
                "rule_files": [rule_file.name],
                "evaluation_interval": "1m",
                "group_eval_order": [g.name for g in rules.groups],
                "tests": tests,
            },
            sort_keys=False,
            allow_unicode=True,
            width=10_000,
        )
    )
    return test_file


@pytest.fixture(scope="module")
def sre_rules() -> RuleSet:
    return generate(SLOS, load_window_set("sre-workbook"), SETTINGS)


@pytest.fixture(scope="module")
def pyrra_rules() -> RuleSet:
    return generate(SLOS[:1], load_window_set("pyrra"), SETTINGS)


def test_promtool_check_rules_accepts_generated_files(
    tmp_path: Path, sre_rules: RuleSet, pyrra_rules: RuleSet
) -> None:
    promtool = require_binary("promtool")
    files = []
    for name, rules in (("sre", sre_rules), ("pyrra", pyrra_rules)):
        f = tmp_path / f"{name}.yaml"
        f.write_text(render_rules(rules))
        files.append(str(f))
    res = subprocess.run(
        [promtool, "check", "rules", *files], check=False, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(sre_rules.alerts) + 7} rules found" in res.stdout


def test_promtool_unit_tests_every_alert_firing_and_not_firing(
    tmp_path: Path, sre_rules: RuleSet, pyrra_rules: RuleSet
) -> None:
    promtool = require_binary("promtool")
    sre_tests = [
        burn_test(sre_rules),
        signals_test(sre_rules),
        absent_test(sre_rules),
        leader_test(sre_rules),
    ]
    files = [
        _write(tmp_path, "sre", sre_rules, sre_tests),
        _write(tmp_path, "pyrra", pyrra_rules, [pyrra_test(pyrra_rules)]),
    ]
    # coverage: every generated alert name has a firing and a not-firing expectation
    fired: set[str] = set()
    silent: set[str] = set()
    for t in sre_tests:
        for e in t["alert_rule_test"]:
            (fired if e["exp_alerts"] else silent).add(e["alertname"])
    assert fired == silent == set(sre_rules.alert_names)
    res = subprocess.run(
        [promtool, "test", "rules", *(f.name for f in files)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-6000:]


def test_a_real_prometheus_loads_the_exported_rules(sre_rules: RuleSet) -> None:
    """The rule file as exported is what a Prometheus server accepts and evaluates."""
    config = "global:\n  evaluation_interval: 1s\nrule_files: [rules.yaml]\nscrape_configs: []\n"
    with run_prometheus(config, {"rules.yaml": render_rules(sre_rules)}) as prom:
        body = httpx.get(f"{prom.url}/api/v1/rules", timeout=10).json()
        groups = body["data"]["groups"]
        assert sorted(g["name"] for g in groups) == sorted(g.name for g in sre_rules.groups)
        loaded = sorted({r["name"] for g in groups for r in g["rules"] if r["type"] == "alerting"})
        assert loaded == list(sre_rules.alert_names)
        # with no pd-observer metrics at all, the absent() rule goes pending: rules are evaluated
        deadline = time.monotonic() + 15
        pending: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            pending = prom.query(f'ALERTS{{alertname="{c.ALERT_OBSERVER_BLIND}"}}')
            if pending:
                break
            time.sleep(0.3)
        assert pending
        assert pending[0]["metric"][c.LABEL_REASON] == c.BLIND_REASON_ABSENT
