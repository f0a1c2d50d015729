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
    ups = [n for n in run.autoscaler.decisions if n.ok and f"{c.ROLE_PREFILL} " in n.text]
    assert ups, [n.text for n in run.autoscaler.decisions]
    assert run.autoscaler.target.actions >= 1  # applied on the twin, not a dry run
    state = run.twin.actuator.get_state().pools[POOL].replicas[c.ROLE_PREFILL]
    assert state.desired > 4  # the default profile starts with 4 prefill replicas


def test_decisions_api_and_autoscaler_series_in_prometheus(e2e: E2E) -> None:
    run = e2e.runs["prefill-burst"]
    body = httpx.get(f"{run.service.url}/api/v1/decisions", params={"pool": POOL}, timeout=10.0).json()
    assert body["decisions"], "no decision served"
    assert {d["pool"] for d in body["decisions"]} == {POOL}
    desired = e2e.prometheus.query(
        f'max by ({c.LABEL_ROLE}) ({c.M_DESIRED_REPLICAS}{{{c.LABEL_ROLE}="{c.ROLE_PREFILL}"}})'
    )
    assert desired
    assert float(desired[0]["value"][1]) > 4
