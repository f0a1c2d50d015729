"""Alembic migrations on SQLite and PostgreSQL: from empty, idempotent, down to base, and the
migrated schema equals observer.store.schema (so the two never drift)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from observer.store import Store
from observer.store.codec import encode_engine_span
from observer.store.repository import SQLITE_CACHE_KIB, alembic_config, normalize_url
from observer.store.schema import metadata

from .conftest import fresh_pg_database, sqlite_url
from .factories import engine_span, record

TABLES = {"requests", "pending_spans", "ingest_replicas", "slos", "rollups_minute", "store_meta"}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
    else:
        with fresh_pg_database() as url:
            yield url


def head() -> str:
    rev = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert rev is not None
    return rev


def test_upgrade_from_empty_is_idempotent_and_downgrades_to_base(empty_url: str) -> None:
    st = Store.open(empty_url)
    try:
        assert st.current_revision() is None
        st.upgrade()
        assert st.current_revision() == head() == "0004"
        assert set(sa.inspect(st.engine).get_table_names()) >= TABLES
        st.write_batch([record(1, 1000.0)])
        st.upgrade()  # idempotent: no error, data kept
        assert st.current_revision() == head()
        assert st.get_record("req-1") == record(1, 1000.0)
        with st.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert diff == []
        st.downgrade("base")
        assert st.current_revision() is None
        assert not TABLES & set(sa.inspect(st.engine).get_table_names())
        st.upgrade()
        assert st.current_revision() == head()
        assert st.count_records() == 0
    finally:
        st.close()


def _request_indexes(st: Store) -> set[str]:
    return {str(ix["name"]) for ix in sa.inspect(st.engine).get_indexes("requests")}


def test_0003_drops_the_trace_id_index_and_downgrades(empty_url: str) -> None:
    st = Store.open(empty_url)
    try:
        st.upgrade("0002")
        assert "ix_requests_trace_id" in _request_indexes(st)
        st.write_batch([record(1, 1000.0, trace_id="ab" * 16), record(2, 999.0, trace_id="ab" * 16)])
        st.upgrade("0003")
        assert st.current_revision() == "0003"
        indexes = _request_indexes(st)
        assert "ix_requests_trace_id" not in indexes
        assert {"ix_requests_end_time", "ix_requests_tenant_end_time"} <= indexes
        # records_by_trace still answers (a scan now), data kept across the migration
        assert [r.request_id for r in st.records_by_trace("ab" * 16)] == ["req-2", "req-1"]
        st.downgrade("0002")
        assert st.current_revision() == "0002"
        assert "ix_requests_trace_id" in _request_indexes(st)
        assert st.count_records() == 2
    finally:
        st.close()


def test_0004_gives_existing_pending_halves_no_owner_so_the_first_replica_takes_them(
    empty_url: str,
) -> None:
    """Rows stored before 0004 get the owner '': the first replica that claims takes them over
    (as the only replica's restore did before), and the downgrade keeps them."""
    st = Store.open(empty_url)
    try:
        st.upgrade("0003")
        with st.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO pending_spans (span_id, trace_id, end_time, payload) VALUES (:s, :t, :e, :p)"
                ),
                {"s": f"{1:016x}", "t": f"{1:032x}", "e": 1000.0, "p": encode_engine_span(engine_span(1))},
            )
        st.upgrade()
        assert st.current_revision() == "0004"
        assert {str(ix["name"]) for ix in sa.inspect(st.engine).get_indexes("pending_spans")} >= {
            "ix_pending_spans_owner"
        }
        assert st.load_pending("replica-a") == []
        assert [x.request_id for x in st.claim_pending("replica-a", 2000.0, 60.0, limit=10)] == ["span-req-1"]
        assert [x.request_id for x in st.load_pending("replica-a")] == ["span-req-1"]
        st.downgrade("0003")
        assert "ingest_replicas" not in sa.inspect(st.engine).get_table_names()
        assert [x.request_id for x in st.load_pending()] == ["span-req-1"]
    finally:
        st.close()


def test_upgrade_works_from_any_cwd_without_alembic_ini(tmp_path: Path) -> None:
    db = tmp_path / "elsewhere" / "x.sqlite"
    code = (
        "from observer.store import Store\n"
        f"s = Store.open({f'sqlite:///{db}'!r}); s.upgrade(); print(s.current_revision())"
    )
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == head()
    assert db.exists()
    assert not list(cwd.iterdir())  # nothing written to the working directory


def test_sqlite_pragmas(tmp_path: Path) -> None:
    st = Store.open(sqlite_url(tmp_path))
    try:
        with st.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
            assert int(conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one()) >= 1000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -SQLITE_CACHE_KIB
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 10_000
    finally:
        st.close()


def test_urls() -> None:
    assert normalize_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("sqlite:///a/b.db") == "sqlite:///a/b.db"
    with pytest.raises(ValueError, match="in-memory"):
        Store.open("sqlite://")
    with pytest.raises(ValueError, match="unsupported"):
        Store.open("mysql://u@h/db")


def test_processes_starting_together_migrate_one_at_a_time(empty_url: str) -> None:
    """`serve` replicas (or `serve` and `autoscale`) starting together on a new database all run
    the migrations. On PostgreSQL they used to run the same DDL at once and all but one failed
    (a duplicate `alembic_version`: 3 runs of 5 with 3 processes); the advisory lock makes them
    take turns, the later ones finding the schema at head."""
    code = "import sys; from observer.store import Store; s = Store.open(sys.argv[1]); s.upgrade(); s.close()"
    root = Path(__file__).resolve().parents[3]
    procs = [
        subprocess.Popen([sys.executable, "-c", code, empty_url], cwd=root, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    errors = [err.strip()[-300:] for p in procs for err in [p.communicate(timeout=120)[1]] if p.returncode]
    assert errors == []
    st = Store.open(empty_url)
    try:
        assert st.current_revision() == head()
    finally:
        st.close()
