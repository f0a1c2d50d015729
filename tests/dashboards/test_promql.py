"""Every PromQL expression of every dashboard, run against a REAL Prometheus.

Prometheus scrapes a loopback endpoint exposing every series the dashboards read (with the
labels the real exporters give them) and evaluates the alerts' real recording rules. Each panel
target, annotation and variable selector is run after substituting the template variables the
way Grafana would ("All" = `.*`): it must parse and evaluate (status success) AND return data —
no panel of these dashboards is empty when its inputs exist.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from alerts.export import RULES_FILE
from alerts.export import render_all as render_alert_files
from observer import conventions as c
from observer.config import load_settings
from tests.dashboards.conftest import Expr, all_exprs, substitute
from tests.dashboards.fixture_metrics import serve_fixture
from tests.support.procs import HTTP, Prometheus, run_prometheus

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]


@pytest.fixture(scope="module")
def prometheus() -> Iterator[Prometheus]:
    rules = render_alert_files(load_settings(env={}))[RULES_FILE]
    with serve_fixture() as address:
        config = (
            # scraped every 250 ms, rules every 500 ms (were 1 s): the waits below for two
            # samples and a rule evaluation took ~3 s of the module's setup
            "global:\n  scrape_interval: 250ms\n  evaluation_interval: 500ms\n"
            f"rule_files: [{RULES_FILE}]\n"
            "scrape_configs:\n"
            "  - job_name: fixture\n    honor_labels: true\n"
            f"    static_configs: [{{targets: ['{address}']}}]\n"
        )
        with run_prometheus(config, {RULES_FILE: rules}) as prom:
            # rates need two samples in the window; the recording rules one evaluation after that.
            prom.wait_for(f"rate({c.M_REQUESTS}{c.COUNTER_SUFFIX}[10s]) > 0", timeout=30)
            prom.wait_for(c.slo_error_ratio_record("5m"), timeout=30)
            yield prom


def _query(prom: Prometheus, expr: str) -> dict[str, Any]:
    body: dict[str, Any] = HTTP.get(f"{prom.url}/api/v1/query", params={"query": expr}, timeout=10).json()
    return body


def test_every_expression_parses_and_returns_data(
    prometheus: Prometheus, dashboard_dicts: dict[str, dict[str, Any]]
) -> None:
    exprs = all_exprs(dashboard_dicts)
    assert len(exprs) > 60
    failures: list[str] = []
    empty: list[Expr] = []
    for e in exprs:
        body = _query(prometheus, substitute(e.expr))
        if body["status"] != "success":
            failures.append(f"{e.uid} {e.where}: {body.get('error')}\n{e.expr}")
        elif not body["data"]["result"]:
            empty.append(e)
    assert not failures, "\n\n".join(failures)
    assert not empty, "no data for:\n" + "\n".join(f"{e.uid} {e.where}: {e.expr}" for e in empty)


def test_a_broken_expression_is_reported_by_this_check(prometheus: Prometheus) -> None:
    """The check above can fail: Prometheus answers status=error for a parse error."""
    body = _query(prometheus, substitute('sum by (tenant (rate(x{tenant=~"$tenant"}[$__rate_interval]))'))
    assert body["status"] == "error"
    assert body["errorType"] == "bad_data"


def test_selected_values_filter_series(prometheus: Prometheus, dashboard_dicts: dict[str, Any]) -> None:
    """With one tenant selected (as Grafana substitutes it) only that tenant's series come back."""
    d = dashboard_dicts[c.DASHBOARD_UID_TENANTS]
    target = next(
        t for p in d["panels"] if p["type"] != "row" for t in p["targets"] if "group_left" in t["expr"]
    )
    expr = substitute(target["expr"], tenant="acme")
    result = prometheus.query(expr)
    assert result
    assert {r["metric"][c.LABEL_TENANT] for r in result} == {"acme"}
    # hit rate by tier: 100 cached tokens per tier per 1000 prompt tokens
    assert {r["metric"][c.LABEL_TIER] for r in result} == set(c.KNOWN_TIERS)
    assert all(abs(float(r["value"][1]) - 0.1) < 1e-9 for r in result)


def test_decision_annotations_mark_replica_changes_not_every_tick(prometheus: Prometheus) -> None:
    """The autoscaler's annotation marks where a role's desired replicas changed (prefill in the
    fixture), not every tick: the decisions counter grows at every scrape for both roles' pool,
    as every tick's holds (`steady`, `cooldown`) make it do."""
    from dashboards import queries as q

    assert prometheus.query(f"increase({c.M_DECISIONS}{c.COUNTER_SUFFIX}[1m]) > 0")  # ticks counted
    result = prometheus.query(substitute(q.decisions_annotation()))
    assert {r["metric"][c.LABEL_ROLE] for r in result} == {c.ROLE_PREFILL}
