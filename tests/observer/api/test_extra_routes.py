"""Routes mounted by the composition root: alert rules and dashboards, behind the same token."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from observer import conventions as c
from observer.api.app import create_app
from observer.cli import extra_routers
from observer.config import load_settings
from observer.store import MemoryStore


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
