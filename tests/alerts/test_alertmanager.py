"""The generated alertmanager.yml, checked with the real amtool and a real Alertmanager."""

from __future__ import annotations

import re
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from alerts.export import ALERTMANAGER_FILE, render_all
from alerts.routing import build_routing
from alerts.settings import parse_alerts_settings
from observer import conventions as c
from observer.config import Settings
from tests.support.procs import require_binary, run_alertmanager

pytestmark = pytest.mark.prometheus


@pytest.fixture
def am_file(tmp_path: Path, golden_settings: Settings) -> Path:
    path = tmp_path / ALERTMANAGER_FILE
    path.write_text(render_all(golden_settings)[ALERTMANAGER_FILE])
    return path


def _route_test(am_file: Path, receivers: str, labels: dict[str, str]) -> subprocess.CompletedProcess[str]:
    amtool = require_binary("amtool")
    return subprocess.run(
        [
            amtool,
            "config",
            "routes",
            "test",
            f"--config.file={am_file}",
            f"--verify.receivers={receivers}",
            *(f"{k}={v}" for k, v in labels.items()),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_amtool_check_config(am_file: Path) -> None:
    amtool = require_binary("amtool")
    res = subprocess.run(
        [amtool, "check-config", str(am_file)], check=False, capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout
    assert "2 inhibit rules" in res.stdout


def _labels_for(matchers: tuple[str, ...]) -> dict[str, str]:
    """Labels satisfying accumulated matchers: the first alternative of each regex."""
    out: dict[str, str] = {}
    for m in matchers:
        name, op, value = re.match(r'^(\w+)(=~|=)"(.*)"$', m).groups()  # type: ignore[union-attr]
        out[name] = value.split("|")[0].replace("[.]", ".") if op == "=~" else value
    return out


def test_every_route_delivers_to_its_receiver(am_file: Path, golden_settings: Settings) -> None:
    routing = build_routing(parse_alerts_settings(golden_settings))
    walked = routing.route.walk()
    assert len(walked) == 7  # root, page, ticket, and one tenant + one pool route under each
    for matchers, receiver in walked:
        labels = _labels_for(matchers) or {"alertname": "Unrouted"}
        res = _route_test(am_file, receiver, labels)
        assert res.returncode == 0, (matchers, receiver, res.stdout + res.stderr)


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        ({"severity": "page", "slo": "ttft-2s", "tenant": "acme"}, "search-oncall"),
        ({"severity": "ticket", "slo": "ttft-2s", "tenant": "team.x"}, "search-tickets"),
        # [.] is a literal dot: a look-alike tenant is not the team's
        ({"severity": "ticket", "slo": "ttft-2s", "tenant": "teamXx"}, "tickets"),
        ({"severity": "page", "slo": "ttft-2s", "tenant": "initech"}, "oncall"),
        ({"severity": "page", "alertname": c.ALERT_DECODE_STARVATION, "pool": "pool-a"}, "infra-oncall"),
        ({"severity": "ticket", "alertname": c.ALERT_KV_SATURATION, "pool": "pool-a"}, "infra-oncall"),
        ({"severity": "ticket", "alertname": c.ALERT_KV_SATURATION, "pool": "pool-b"}, "tickets"),
        ({"severity": "page", "alertname": c.ALERT_OBSERVER_BLIND, "source": "prometheus"}, "oncall"),
        ({"alertname": "Watchdog"}, "default"),
    ],
)
def test_routes_by_severity_and_team(am_file: Path, labels: dict[str, str], receiver: str) -> None:
    res = _route_test(am_file, receiver, labels)
    assert res.returncode == 0, res.stdout + res.stderr


def test_route_test_detects_a_wrong_receiver(am_file: Path) -> None:
    res = _route_test(am_file, "oncall", {"severity": "page", "tenant": "acme"})
    assert res.returncode != 0


def _alert(labels: dict[str, str]) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "labels": labels,
        "annotations": {"summary": "test"},
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(minutes=10)).isoformat(),
    }


def test_inhibition_in_a_real_alertmanager(golden_settings: Settings) -> None:
    """Page burn mutes the ticket burn of the same slo+tenant only; blind mutes signal alerts only."""
    cfg = render_all(golden_settings)[ALERTMANAGER_FILE]
    burn = {"alertname": c.ALERT_SLO_BURN, "slo": "ttft-2s"}
    alerts = {
        "page": {**burn, "severity": "page", "tenant": "acme", "long_window": "1h"},
        "ticket_same": {**burn, "severity": "ticket", "tenant": "acme", "long_window": "1d"},
        "ticket_other_tenant": {**burn, "severity": "ticket", "tenant": "globex", "long_window": "1d"},
        "ticket_other_slo": {**burn, "slo": "itl-100ms", "severity": "ticket", "tenant": "acme"},
        "blind": {"alertname": c.ALERT_OBSERVER_BLIND, "severity": "page", "source": "prometheus"},
        "cascade": {"alertname": c.ALERT_CACHE_CASCADE, "severity": "ticket", "tenant": "acme"},
        "starvation": {"alertname": c.ALERT_DECODE_STARVATION, "severity": "page", "pool": "pool-a"},
        "stuck": {"alertname": c.ALERT_AUTOSCALER_STUCK, "severity": "page", "pool": "pool-a"},
        "signal_ticket": {"alertname": c.ALERT_KV_SATURATION, "severity": "ticket", "pool": "pool-a"},
    }
    expect_inhibited = {"ticket_same", "cascade", "starvation", "signal_ticket"}
    with run_alertmanager(cfg) as am:
        httpx.post(f"{am.url}/api/v2/alerts", json=[_alert(a) for a in alerts.values()]).raise_for_status()
        deadline = time.monotonic() + 15
        while True:
            got = httpx.get(f"{am.url}/api/v2/alerts").json()
            state = {
                key: next(
                    (g["status"]["state"] for g in got if g["labels"] == labels),
                    "missing",
                )
                for key, labels in alerts.items()
            }
            inhibited = {k for k, s in state.items() if s == "suppressed"}
            if inhibited == expect_inhibited or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert inhibited == expect_inhibited, state
