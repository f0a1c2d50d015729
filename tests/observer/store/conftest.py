"""Store fixtures: the same tests run on SQLite (tmp file), PostgreSQL (a fresh database per test
session, dropped afterwards) and the in-memory store. In CI (CI=true) an unreachable PostgreSQL
fails the run; locally the PostgreSQL cases skip with the reason."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from observer.store import MemoryStore, RecordStore, Store
from tests.support.procs import in_ci

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{db}"
TABLES = "requests, pending_spans, ingest_replicas, slos, rollups_minute, store_meta"


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(PG_DSN, autocommit=True)
    except psycopg.OperationalError as exc:
        msg = f"PostgreSQL not reachable at 127.0.0.1:5432 as postgres: {exc}".splitlines()[0]
        if in_ci():
            pytest.fail(msg)
        pytest.skip(msg)


@contextmanager
def fresh_pg_database() -> Iterator[str]:
    """Create a uniquely named database, yield its SQLAlchemy URL, drop it afterwards."""
    name = f"pdo_test_{uuid.uuid4().hex[:12]}"
    with _admin() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield PG_URL.format(db=name)
    finally:
        with _admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A migrated PostgreSQL database shared by the session (tables are truncated per test)."""
    with fresh_pg_database() as url:
        st = Store.open(url)
        st.upgrade()
        st.close()
        yield url


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'data' / 'store.sqlite'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A migrated, empty SQL store on each dialect."""
    if request.param == "sqlite":
        st = Store.open(sqlite_url(tmp_path))
        st.upgrade()
    else:
        st = Store.open(request.getfixturevalue("pg_url"))
        with st.engine.begin() as conn:
            conn.exec_driver_sql(f"TRUNCATE {TABLES} RESTART IDENTITY")
    yield st
    st.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RecordStore]:
    """Every RecordStore implementation, empty."""
    if request.param == "memory":
        yield MemoryStore()
        return
    if request.param == "sqlite":
        st = Store.open(sqlite_url(tmp_path))
        st.upgrade()
    else:
        st = Store.open(request.getfixturevalue("pg_url"))
        with st.engine.begin() as conn:
            conn.exec_driver_sql(f"TRUNCATE {TABLES} RESTART IDENTITY")
    yield st
    st.close()
