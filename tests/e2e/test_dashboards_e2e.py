"""Issue 5 "Show", dashboards end to end: every panel target, annotation and variable query of
every generated dashboard (template variables substituted as Grafana does with "All", like
tests/dashboards/test_promql.py) runs against the real Prometheus of the e2e run WHILE the twins
run (at 75 % of the cache-cascade scenario), evaluates without error and returns data.

Exceptions (no data can exist in this run) would be listed below with the reason; today there
are none. The test also fails when an exception starts returning data, so the list cannot go
stale.
"""

from __future__ import annotations

import pytest

from observer import conventions as c
from tests.dashboards.conftest import substitute
from tests.e2e.conftest import E2E

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

# metric name in the expression -> why the twin/demo cannot give it data (none left: every
# dashboard query has data during the scenarios; add an entry only with its reason)
NO_DATA: dict[str, str] = {}


def _excused(expr: str) -> str | None:
    return next((why for name, why in NO_DATA.items() if name in expr), None)


def test_every_dashboard_query_evaluates_and_returns_data_during_the_scenarios(e2e: E2E) -> None:
    assert e2e.snapshot, f"the dashboard queries never ran; poll errors: {e2e.poll_errors}"
    assert e2e.snapshot_elapsed is not None
    assert len(e2e.exprs) > 60
    failures, empty, excused_with_data = [], [], []
    for ex in e2e.exprs:
        body = e2e.snapshot[substitute(ex.expr)]
        if body["status"] != "success":
            failures.append(f"{ex.uid} {ex.where}: {body.get('error')}\n{ex.expr}")
            continue
        has_data = bool(body["data"]["result"])
        why = _excused(ex.expr)
        if not has_data and why is None:
            empty.append(f"{ex.uid} {ex.where}: {ex.expr}")
        if has_data and why is not None:
            excused_with_data.append(f"{ex.uid} {ex.where}")
    assert not failures, "\n\n".join(failures)
    assert not empty, "no data for:\n" + "\n".join(empty)
    assert not excused_with_data, "listed as impossible but has data: " + ", ".join(excused_with_data)
    # the exceptions are few and named: every dashboard keeps most of its queries with data
    excused = [ex for ex in e2e.exprs if _excused(ex.expr)]
    print(f"\n{len(e2e.exprs) - len(excused)} of {len(e2e.exprs)} dashboard queries returned data; excused:")
    for ex in excused:
        print(f"  {ex.uid} {ex.where}: {_excused(ex.expr)}")
    assert not excused


def test_signal_panels_show_the_scenarios_signals(e2e: E2E) -> None:
    """The signal gauges the dashboards read carry the scenarios' signals, not just zeros."""
    # over the whole run (the autoscaler may relieve the burst's starvation before the end)
    starving = e2e.prometheus.query(f"max by ({c.LABEL_POOL}) (max_over_time({c.M_DECODE_STARVATION}[5m]))")
    assert starving
    assert max(float(r["value"][1]) for r in starving) == 1.0  # the burst's pool starved
    judged = e2e.prometheus.query(f"count({c.M_CASCADE})")
    assert judged
    assert float(judged[0]["value"][1]) >= 3  # tenants judged by the cascade signal
    up = e2e.prometheus.query(f'up{{job="{c.DEMO_JOB_SERVICE}"}} == 1')
    assert len(up) == 2  # both services scraped


def test_pod_demotions_come_from_the_twins_kv_events(e2e: E2E) -> None:
    """The KV events reach the engine over ZMQ: the cascade's pods demote blocks out of HBM."""
    demoting = e2e.prometheus.query(f'max({c.M_POD_DEMOTION_RATE}{{{c.LABEL_TIER}="{c.TIER_HBM}"}})')
    assert demoting
    assert float(demoting[0]["value"][1]) > 0
    for run in e2e.runs.values():
        assert run.kv.subscribed  # every twin's pods were subscribed as they appeared
        assert run.kv.consumer.decode_errors == 0
