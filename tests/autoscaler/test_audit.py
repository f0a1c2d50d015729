"""The audit log: migration 0002 on SQLite and PostgreSQL, rows round-trip through the
decisions table, GET /api/v1/decisions on the real app, and the metrics collector."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest

from autoscaler.api import decisions_router
from autoscaler.audit import FanoutAudit, MemoryAuditLog, SqlAuditLog, entry_json
from autoscaler.metrics import AutoscalerCollector
from autoscaler.ports import AuditEntry, Outcome
from autoscaler.types import (
    Demand,
    Hold,
    PoolObservation,
    ReasonCode,
    RoleDecision,
    RoleStatus,
    Signals,
    WeightChange,
)
from observer import conventions as c
from observer.api.app import create_app
from observer.config import load_settings
from observer.store import Store
from observer.store.memory import MemoryStore
from observer.store.repository import alembic_config
from tests.observer.store.conftest import fresh_pg_database, sqlite_url

P, D = c.ROLE_PREFILL, c.ROLE_DECODE


def entry(at: float, pool: str = "llama", *, ok: bool = True, dry: bool = False) -> AuditEntry:
    obs = PoolObservation(
        pool,
        {P: RoleStatus(2, 2), D: RoleStatus(6, 6)},
        Demand(50_000.0, 800.0, 0.4, 6.0),
        Signals(starvation=True, decode_pressure=False, cascade_tenants=("tenant-a",), age_seconds=3.0),
        {c.SCORER_PREFIX_CACHE: 2.0, c.SCORER_QUEUE: 1.0},
        epp_rolled_out=False,
    )
    return AuditEntry(
        at=at,
        pool=pool,
        mode="dry-run" if dry else "apply",
        observation=obs,
        decisions=(
            RoleDecision(pool, P, 2, 4, (ReasonCode.CAPACITY_FLOOR, ReasonCode.DECODE_STARVATION)),
            RoleDecision(pool, D, 6, 6, (ReasonCode.STABILIZED_DOWN,)),
        ),
        weight_changes=(WeightChange(pool, c.SCORER_PREFIX_CACHE, 2.0, 3.0, (ReasonCode.CACHE_CASCADE,)),),
        holds=(Hold(pool, None, ReasonCode.WEIGHT_AT_BOUND, "queue-scorer at 1"),),
        outcomes=(
            Outcome(pool, P, ok, "llama/prefill: 2 -> 4" if ok else "gave up: 500", 1 if ok else 5, dry),
            Outcome(pool, "weights", True, "weights", 1, dry),
        ),
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database migrated to head by the real store (the shared Alembic chain)."""
    if request.param == "sqlite":
        url = sqlite_url(tmp_path)
        st = Store.open(url)
        st.upgrade()
        st.close()
        yield url
        return
    with fresh_pg_database() as url:
        st = Store.open(url)
        st.upgrade()
        assert st.current_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()
        st.close()
        yield url


def test_migration_creates_the_decisions_table_and_downgrades(db_url: str) -> None:
    st = Store.open(db_url)
    try:
        cols = {x["name"] for x in sa.inspect(st.engine).get_columns("decisions")}
        assert {"at", "pool", "mode", "reasons", "inputs", "changes", "outcomes", "ok", "changed"} <= cols
        st.downgrade("0001")
        assert "decisions" not in sa.inspect(st.engine).get_table_names()
        assert "requests" in sa.inspect(st.engine).get_table_names()
        st.upgrade()
        assert "decisions" in sa.inspect(st.engine).get_table_names()
    finally:
        st.close()


def test_sql_audit_round_trip_newest_first_and_filters(db_url: str) -> None:
    log = SqlAuditLog.open(db_url)
    try:
        log.record(entry(100.0))
        log.record(entry(200.0, ok=False))
        log.record(entry(300.0, pool="other", dry=True))
        got = log.decisions()
        assert [d["time"] for d in got] == [300.0, 200.0, 100.0]
        first = log.decisions(pool="llama", limit=1)[0]
        assert first["time"] == 200.0
        assert first["ok"] is False
        assert first["changed"] is True
        assert first["reasons"][:2] == ["capacity_floor", "decode_starvation"]
        assert "cache_cascade" in first["reasons"]
        assert "weight_at_bound" in first["reasons"]
        assert first["replicas"][0] == {
            "role": P,
            "before": 2,
            "after": 4,
            "reasons": ["capacity_floor", "decode_starvation"],
        }
        assert first["weights"][0]["before"] == 2.0
        assert first["weights"][0]["after"] == 3.0
        assert first["inputs"]["demand"]["prompt_tokens_per_s"] == 50_000.0
        assert first["inputs"]["signals"]["cascade_tenants"] == ["tenant-a"]
        assert first["inputs"]["roles"][D]["replicas"] == 6
        assert first["inputs"]["epp_rolled_out"] is False
        assert first["outcomes"][0] == {
            "target": P,
            "ok": False,
            "detail": "gave up: 500",
            "attempts": 5,
            "dry_run": False,
            "shared": False,
        }
        # the SQL form equals the in-memory JSON form, apart from the id
        assert {k: v for k, v in first.items() if k != "id"} == entry_json(entry(200.0, ok=False))
        assert [d["time"] for d in log.decisions(since=150.0)] == [300.0, 200.0]
        assert log.decisions(pool="other")[0]["mode"] == "dry-run"
    finally:
        log.close()


def test_sql_audit_retention_bounds_rows(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    st = Store.open(url)
    st.upgrade()
    st.close()
    log = SqlAuditLog.open(url, retention_seconds=1000.0, max_rows=5, prune_every=4)
    try:
        for i in range(12):
            log.record(entry(float(i * 100)))
        log.prune(1100.0 + 1000.0)  # keeps at most 5, none older than t=1100
        times = [d["time"] for d in log.decisions(limit=1000)]
        assert times == [1100.0]
        for i in range(8):
            log.record(entry(5000.0 + i))
        assert len(log.decisions(limit=1000)) <= 5 + 4  # pruned every 4 writes
    finally:
        log.close()


def test_decisions_api_on_the_service() -> None:
    settings = load_settings(None, env={})
    log = MemoryAuditLog()
    for t in (10.0, 20.0, 30.0):
        log.record(entry(t))
    app = create_app(settings, MemoryStore(), extra_routers=[decisions_router(log)])
    with TestClient(app) as client:
        r = client.get("/api/v1/decisions", params={"limit": 2})
        assert r.status_code == 200
        body = r.json()["decisions"]
        assert [d["time"] for d in body] == [30.0, 20.0]
        assert body[0]["id"] == 3
        assert client.get("/api/v1/decisions", params={"pool": "nope"}).json() == {"decisions": []}
        assert client.get("/api/v1/decisions", params={"limit": 0}).status_code == 422
        assert "/api/v1/decisions" in client.get("/openapi.json").json()["paths"]


def test_metrics_collector_exports_the_last_decision() -> None:
    reg = CollectorRegistry()
    col = AutoscalerCollector()
    reg.register(col)
    sink = FanoutAudit(col, MemoryAuditLog())
    sink.record(entry(100.0))
    sink.record(entry(200.0, ok=False))
    sink.record(entry(300.0, dry=True))
    text = generate_latest(reg).decode()
    assert f'{c.M_DESIRED_REPLICAS}{{pool="llama",role="prefill"}} 4.0' in text
    assert f'{c.M_CURRENT_REPLICAS}{{pool="llama",role="decode"}} 6.0' in text
    assert f'{c.M_DECISIONS}_total{{pool="llama",reason="decode_starvation"}} 3.0' in text
    assert f'{c.M_ACTUATION_ERRORS}_total{{pool="llama"}} 1.0' in text
    # a dry run reports the configured weight (2), not the proposed one (3)
    assert f'{c.M_SCORER_WEIGHT}{{pool="llama",scorer="prefix-cache-scorer"}} 3.0' not in text
    assert f'{c.M_SCORER_WEIGHT}{{pool="llama",scorer="queue-scorer"}} 1.0' in text
    # last action: t=200 had an applied weights call; t=300 was a dry run
    assert f'{c.M_AUTOSCALER_LAST_ACTION}{{pool="llama"}} 200.0' in text


def test_a_failing_sink_does_not_stop_the_others() -> None:
    class Broken:
        def record(self, e: AuditEntry) -> None:
            raise RuntimeError("db down")

    mem = MemoryAuditLog()
    FanoutAudit(Broken(), mem).record(entry(1.0))
    assert len(mem.entries) == 1
