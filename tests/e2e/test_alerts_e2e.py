"""Issue 5 "Show", alerts end to end: the generated rules in a real Prometheus scraping the
services while the twins run `prefill-burst` and `cache-cascade`; the expected alerts fire; a real
Alertmanager with the generated `alertmanager.yml` delivers them to the test's webhooks on the
route the routing tree gives them (receiver name, labels, annotations in the payload).

See tests/e2e/conftest.py for the run and why the `for` durations are 2 s (wall) here.
"""

from __future__ import annotations

from typing import Any

import pytest

from observer import conventions as c
from simulator.scenarios import HEAVY, VICTIM
from tests.e2e.conftest import (
    E2E,
    POOL,
    RECEIVER_APPS_PAGE,
    RECEIVER_APPS_TICKET,
    RECEIVER_FLEET,
    RECEIVER_PAGE,
    RECEIVER_TICKET,
)

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]


def _alerts_in(notifications: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [a for n in notifications for a in n["alerts"] if a["labels"][c.LABEL_ALERTNAME] == name]


def test_prefill_burst_fires_decode_starvation_for_the_pool(e2e: E2E) -> None:
    got = e2e.wait_firing(c.ALERT_DECODE_STARVATION)
    assert got, (
        f"never firing in Prometheus; seen: {[a.labels for a in e2e.firing]}; errors {e2e.poll_errors}"
    )
    first = got[0]
    assert first.labels[c.LABEL_POOL] == POOL
    assert first.labels[c.LABEL_SEVERITY] == c.SEVERITY_PAGE
    # it fired during the burst run, after the burst began (onset at 1/3 of the scenario)
    burst = e2e.runs["prefill-burst"]
    onset = dict(burst.twin.phases)["prefill-burst"] - burst.twin.sim.start
    assert first.sim_elapsed["prefill-burst"] > onset
    assert first.annotations["runbook_url"].endswith(f"{c.ALERT_DECODE_STARVATION}.md")
    assert POOL in first.annotations["summary"]
    # the steady phase never fired it: the first firing is after the onset plus the hold time


def test_cache_cascade_fires_for_the_victim_tenant(e2e: E2E) -> None:
    got = e2e.wait_firing(c.ALERT_CACHE_CASCADE)
    tenants = {a.labels.get(c.LABEL_TENANT) for a in got}
    assert VICTIM in tenants, f"cascade firing for {tenants}; all firing: {[a.labels for a in e2e.firing]}"
    assert HEAVY not in tenants  # the evictor is never reported as a victim
    (victim,) = [a for a in got if a.labels[c.LABEL_TENANT] == VICTIM]
    assert victim.labels[c.LABEL_SEVERITY] == c.SEVERITY_TICKET
    run = e2e.runs["cache-cascade"]
    onset = dict(run.twin.phases)["cache-cascade"] - run.twin.sim.start
    assert victim.sim_elapsed["cache-cascade"] > onset
    assert VICTIM in victim.annotations["description"]


def test_alertmanager_delivers_starvation_to_the_pool_team(e2e: E2E) -> None:
    notes = e2e.wait_notification(RECEIVER_FLEET, c.ALERT_DECODE_STARVATION)
    assert notes, f"nothing delivered to {RECEIVER_FLEET}: {e2e.notifications(RECEIVER_FLEET)}"
    n = notes[0]
    assert n["receiver"] == RECEIVER_FLEET  # page route, then the team owning the pool
    (a,) = _alerts_in([n], c.ALERT_DECODE_STARVATION)
    labels = a["labels"]
    assert labels[c.LABEL_POOL] == POOL
    assert labels[c.LABEL_SEVERITY] == c.SEVERITY_PAGE
    assert n["groupLabels"][c.LABEL_POOL] == POOL
    # routed to the team, never to the catch-all page receiver nor to a ticket receiver
    for other in (RECEIVER_PAGE, RECEIVER_TICKET, RECEIVER_APPS_PAGE, RECEIVER_APPS_TICKET):
        assert not _alerts_in(e2e.notifications(other), c.ALERT_DECODE_STARVATION), other


def test_alertmanager_delivers_the_victims_cascade_to_its_team_tickets(e2e: E2E) -> None:
    notes = e2e.wait_notification(RECEIVER_APPS_TICKET, c.ALERT_CACHE_CASCADE)
    assert notes, f"nothing delivered to {RECEIVER_APPS_TICKET}: {e2e.notifications(RECEIVER_APPS_TICKET)}"
    n = notes[0]
    assert n["receiver"] == RECEIVER_APPS_TICKET  # ticket route, then the team owning the tenant
    (a,) = _alerts_in([n], c.ALERT_CACHE_CASCADE)
    assert a["labels"][c.LABEL_TENANT] == VICTIM
    assert a["labels"][c.LABEL_SEVERITY] == c.SEVERITY_TICKET
    assert a["annotations"]["runbook_url"].endswith(f"{c.ALERT_CACHE_CASCADE}.md")
    # the victim's cascade goes only to its team; other tenants' cascades (if any) to the default
    for other in (RECEIVER_PAGE, RECEIVER_FLEET, RECEIVER_APPS_PAGE, RECEIVER_TICKET):
        victims = {
            x["labels"][c.LABEL_TENANT] for x in _alerts_in(e2e.notifications(other), c.ALERT_CACHE_CASCADE)
        }
        assert VICTIM not in victims, other
