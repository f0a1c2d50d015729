"""The autoscaler in the e2e composition: it acts on the twin in apply mode during the prefill
burst, its decisions are served by the service and its series reach the real Prometheus."""

from __future__ import annotations

import httpx
import pytest

from observer import conventions as c
from tests.e2e.conftest import E2E, POOL

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]


def test_the_burst_makes_the_autoscaler_scale_prefill_up_on_the_twin(e2e: E2E) -> None:
    run = e2e.runs["prefill-burst"]
    entries = [e for _, e in run.autoscaler.audit.entries]
    assert entries
    assert all(e.mode == "apply" for e in entries)
    initial = entries[0].observation.roles[c.ROLE_PREFILL].replicas
    ups = [d for e in entries for d in e.decisions if d.role == c.ROLE_PREFILL and d.desired > d.current]
    assert ups, [n.text for n in run.autoscaler.decisions]
    assert any(n.ok and n.text.startswith(f"{c.ROLE_PREFILL} ") for n in run.autoscaler.decisions)
    assert run.autoscaler.target.actions >= 1  # applied on the twin, not a dry run
    # the twin obeyed: it was asked for more prefill replicas than it started with
    assert max(d.desired for d in ups) > initial


def test_decisions_api_and_autoscaler_series_in_prometheus(e2e: E2E) -> None:
    run = e2e.runs["prefill-burst"]
    body = httpx.get(f"{run.service.url}/api/v1/decisions", params={"pool": POOL}, timeout=10.0).json()
    assert body["decisions"], "no decision served"
    assert {d["pool"] for d in body["decisions"]} == {POOL}
    desired = e2e.prometheus.query(f"count({c.M_DESIRED_REPLICAS})")
    assert desired
    assert float(desired[0]["value"][1]) >= 2  # both roles of the burst's pool (both services)
    weights = e2e.prometheus.query(f"count({c.M_SCORER_WEIGHT})")
    assert weights
    assert float(weights[0]["value"][1]) >= 3  # the twin's EPP scorers
