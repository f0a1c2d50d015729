"""Routes mounted by the composition root: alert rules and dashboards, behind the same token."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from observer import conventions as c
from observer.api.app import create_app
from observer.cli import extra_routers
from observer.config import load_settings
from observer.store import MemoryStore, Store
from tests.support.procs import require_binary


def test_alert_rules_and_dashboards_are_served_and_guarded(tmp_path: Path) -> None:
    settings = load_settings(None, overrides={"server": {"auth_token": "tok"}}, env={})
    app = create_app(settings, MemoryStore(), extra_routers=extra_routers(settings))
    auth = {"Authorization": "Bearer tok"}
    with TestClient(app) as client:
        assert client.get("/api/v1/alerts/rules").status_code == 401
        rules = client.get("/api/v1/alerts/rules", headers=auth).json()
        alert_names = {r.get("alert") for g in rules["groups"] for r in g["rules"]}
        assert {c.ALERT_SLO_BURN, c.ALERT_CACHE_CASCADE, c.ALERT_DECODE_STARVATION} <= alert_names
        assert rules["alertmanager"]["route"]["receiver"]
        index = client.get("/api/v1/dashboards", headers=auth).json()["dashboards"]
        uids = {d["uid"] for d in index}
        assert set(c.DASHBOARD_UIDS) == uids
        one = client.get(f"/api/v1/dashboards/{c.DASHBOARD_UID_TENANTS}", headers=auth).json()
        assert one["uid"] == c.DASHBOARD_UID_TENANTS
        assert one["panels"]
        assert client.get("/api/v1/dashboards/nope", headers=auth).status_code == 404


def _burn_slos(rules: dict[str, Any]) -> set[str]:
    return {
        r["labels"][c.LABEL_SLO]
        for g in rules["groups"]
        for r in g["rules"]
        if r.get("alert") == c.ALERT_SLO_BURN
    }


def _threshold_lines(dashboard: dict[str, Any]) -> set[str]:
    """Legends of the constant SLO-threshold lines of a dashboard (dashboards.queries.slo_threshold)."""
    return {
        t["legendFormat"]
        for p in dashboard["panels"]
        for t in p.get("targets", [])
        if t.get("legendFormat", "").startswith("SLO ")
    }


@pytest.mark.prometheus
def test_rules_and_dashboards_follow_the_stored_slo_set(tmp_path: Path) -> None:
    """After PUT /api/v1/slos the served rules and dashboards are those of the new set (the stored
    set wins over the config's `slos:`), and the rules pass the real `promtool check rules`."""
    settings = load_settings(None, overrides={"store": {"url": f"sqlite:///{tmp_path / 'pdo.db'}"}}, env={})
    app = create_app(settings, Store.open(settings.store.url), extra_routers=extra_routers(settings))
    with TestClient(app) as client:
        assert _burn_slos(client.get("/api/v1/alerts/rules").json()) == {
            "ttft-2s",
            "itl-100ms",
            "availability",
        }
        new = [
            {
                "name": "gold-ttft",
                "sli": "ttft",
                "objective": 0.999,
                "threshold_seconds": 1.5,
                "tenants": ["acme"],
            },
            {"name": "availability", "sli": "error", "objective": 0.999},
        ]
        assert client.put("/api/v1/slos", json={"slos": new}).status_code == 200

        rules = client.get("/api/v1/alerts/rules").json()
        assert _burn_slos(rules) == {"gold-ttft", "availability"}  # the new one alerts, the removed ones not
        gold = [
            r
            for g in rules["groups"]
            for r in g["rules"]
            if r.get("labels", {}).get(c.LABEL_SLO) == "gold-ttft"
        ]
        assert gold
        assert all('{slo="gold-ttft", tenant=~"acme"}' in r["expr"] for r in gold), gold
        assert "ttft-2s" not in json.dumps(rules["groups"])
        promtool = require_binary("promtool")
        path = tmp_path / "rules.yaml"
        path.write_text(yaml.safe_dump({"groups": rules["groups"]}, sort_keys=False))
        res = subprocess.run(
            [promtool, "check", "rules", str(path)], check=False, capture_output=True, text=True, timeout=60
        )
        assert res.returncode == 0, res.stdout + res.stderr

        ttft_lines = _threshold_lines(client.get(f"/api/v1/dashboards/{c.DASHBOARD_UID_TENANTS}").json())
        assert ttft_lines == {"SLO gold-ttft (1.5 s)"}  # ttft-2s and itl-100ms lines are gone
        index = {d["uid"]: d for d in client.get("/api/v1/dashboards").json()["dashboards"]}
        assert set(index) == set(c.DASHBOARD_UIDS)

        # a stored set the rule generator refuses (a tenant that is no valid label value): one clear 409
        bad = [{"name": "odd", "sli": "error", "objective": 0.99, "tenants": ["acme corp"]}]
        assert client.put("/api/v1/slos", json={"slos": bad}).status_code == 200
        refused = client.get("/api/v1/alerts/rules")
        assert refused.status_code == 409
        assert "acme corp" in refused.json()["detail"]
