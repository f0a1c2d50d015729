"""Generation (pure): structure, names from conventions, labels and annotations of every alert."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from alerts.generate import AlertRule, RecordingRule, generate, num, tenant_regex
from alerts.settings import AlertsSettings
from alerts.spec import load_window_set
from observer import conventions as c
from observer.config import Settings

SETTINGS = AlertsSettings()


def _rules() -> tuple[AlertRule, ...]:
    return generate(Settings().slo_specs(), load_window_set("sre-workbook"), SETTINGS).alerts


def test_recording_rule_per_window_over_the_exported_counters() -> None:
    rs = generate(Settings().slo_specs(), load_window_set("sre-workbook"), SETTINGS)
    records = [r for r in rs.groups[0].rules if isinstance(r, RecordingRule)]
    assert [r.record for r in records] == [
        c.slo_error_ratio_record(w) for w in ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
    ]
    assert records[0].record == "pd_observer:slo_error_ratio:rate5m"
    assert f"{c.M_SLO_ERRORS}_total[5m]" in records[0].expr
    assert f"{c.M_SLO_REQUESTS}_total[5m]" in records[0].expr


def test_burn_alerts_are_multi_window_per_slo_with_budget_from_objective() -> None:
    burn = [a for a in _rules() if a.alert == c.ALERT_SLO_BURN]
    assert len(burn) == 3 * 4  # 3 default SLOs x 4 window pairs
    avail_page = next(
        a for a in burn if a.label(c.LABEL_SLO) == "availability" and a.label("long_window") == "1h"
    )
    assert avail_page.severity == c.SEVERITY_PAGE
    assert avail_page.expr == (
        'pd_observer:slo_error_ratio:rate1h{slo="availability"} / 0.001 > 14.4\n'
        "and\n"
        'pd_observer:slo_error_ratio:rate5m{slo="availability"} / 0.001 > 14.4'
    )


def test_tenant_scoped_slo_filters_tenants_with_literal_dots() -> None:
    spec = Settings().slo_specs()[0]
    scoped = type(spec)(name="x", sli=c.SLI_TTFT, objective=0.99, threshold_seconds=1.0, tenants=("b.c", "a"))
    rules = generate([scoped], load_window_set("sre-workbook"), SETTINGS).alerts
    assert 'tenant=~"a|b[.]c"' in rules[0].expr
    assert tenant_regex(["z", "a-b"]) == "a-b|z"


def test_every_alert_has_severity_summary_description_with_evidence_and_runbook() -> None:
    settings = AlertsSettings(runbook_base_url="https://rb.example/x")
    rs = generate(Settings().slo_specs(), load_window_set("sre-workbook"), settings)
    for a in rs.alerts:
        ann = dict(a.annotations)
        assert a.severity in c.SEVERITIES
        assert ann[c.ANNOTATION_SUMMARY]
        assert "$value" in ann[c.ANNOTATION_DESCRIPTION], a.alert
        # absent() and the leaderless max() over every instance have no labels to show
        no_labels = (
            a.label(c.LABEL_REASON) == c.BLIND_REASON_ABSENT or a.alert == c.ALERT_AUTOSCALER_LEADERLESS
        )
        if not no_labels:
            assert "$labels." in ann[c.ANNOTATION_DESCRIPTION], a.alert
        assert ann[c.ANNOTATION_RUNBOOK] == f"https://rb.example/x/{a.alert}.md"
    assert set(rs.alert_names) == {
        c.ALERT_SLO_BURN,
        c.ALERT_CACHE_CASCADE,
        c.ALERT_DECODE_STARVATION,
        c.ALERT_DECODE_PRESSURE,
        c.ALERT_KV_SATURATION,
        c.ALERT_PREFILL_QUEUE,
        c.ALERT_PD_IMBALANCE,
        c.ALERT_OBSERVER_BLIND,
        c.ALERT_AUTOSCALER_STUCK,
        c.ALERT_AUTOSCALER_THRASHING,
        c.ALERT_AUTOSCALER_ACTUATION,
        c.ALERT_AUTOSCALER_LEADERLESS,
    }


def test_severity_and_thresholds_are_configurable() -> None:
    settings = AlertsSettings.model_validate(
        {
            "severity": {c.ALERT_CACHE_CASCADE: "page"},
            "signals": {"kv_saturation_usage": 0.85, "kv_saturation_for": "3m"},
        }
    )
    rs = generate((), load_window_set("sre-workbook"), settings)
    cascade = next(a for a in rs.alerts if a.alert == c.ALERT_CACHE_CASCADE)
    kv = next(a for a in rs.alerts if a.alert == c.ALERT_KV_SATURATION)
    assert cascade.severity == c.SEVERITY_PAGE
    assert kv.expr.endswith(">= 0.85")
    assert kv.for_seconds == 180
    assert c.ALERT_SLO_BURN not in rs.alert_names  # no SLOs, no burn alerts


@pytest.mark.parametrize(
    ("alert", "message"),
    [
        ("PdObserverCacheCascade", "no such alert"),  # a typo: the alert kept its default, silently
        (c.ALERT_SLO_BURN, "set by the window set"),  # per window pair: the override did nothing
    ],
)
def test_a_severity_override_that_would_do_nothing_is_refused(alert: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AlertsSettings.model_validate({"severity": {alert: "page"}})


def test_num_has_no_binary_noise() -> None:
    assert num(1 - 0.99) == "0.01"
    assert num(6.0) == "6"
    assert num(14.4) == "14.4"


def test_every_alert_has_its_runbook_page() -> None:
    """The runbook_url annotation points at `<base>/<alert>.md`: docs/runbooks/ holds each page."""
    from pathlib import Path

    runbooks = Path(__file__).resolve().parents[2] / "docs" / "runbooks"
    rs = generate(Settings().slo_specs(), load_window_set("sre-workbook"), AlertsSettings())
    missing = sorted(n for n in set(rs.alert_names) if not (runbooks / f"{n}.md").is_file())
    assert missing == []
