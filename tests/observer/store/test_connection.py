"""PostgreSQL connections fail in bounded time: libpq's connect timeout, TCP keepalives and
`tcp_user_timeout` (`PG_CONNECT_DEFAULTS`) on every engine pd-observer opens, unless the URL
sets them. Checked on real libpq connections, through a loopback proxy that stops answering."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from autoscaler.audit import SqlAuditLog
from observer.store import Store
from observer.store import repository as repo
from tests.observer.store.conftest import fresh_pg_database
from tests.support.tcpproxy import TcpProxy, tcp_proxy

pytestmark = pytest.mark.postgres


def _parameters(engine: sa.Engine) -> dict[str, str]:
    """What libpq was given for a real connection (psycopg's ConnectionInfo)."""
    with engine.connect() as conn:
        params: dict[str, str] = conn.connection.dbapi_connection.info.get_parameters()  # type: ignore[union-attr]
    return params


def test_every_engine_gets_the_defaults(pg_url: str) -> None:
    expected = {k: str(v) for k, v in repo.PG_CONNECT_DEFAULTS.items()}
    store = Store.open(pg_url)
    audit = SqlAuditLog.open(pg_url)  # the autoscaler's audit log opens its own engine
    try:
        for engine in (store.engine, audit.engine):
            params = _parameters(engine)
            assert {k: params.get(k) for k in expected} == expected
    finally:
        store.close()
        audit.engine.dispose()


def test_the_url_overrides_a_default(pg_url: str) -> None:
    store = Store.open(f"{pg_url}?connect_timeout=4&tcp_user_timeout=5000")
    try:
        params = _parameters(store.engine)
    finally:
        store.close()
    assert (params["connect_timeout"], params["tcp_user_timeout"]) == ("4", "5000")
    assert params["keepalives_idle"] == str(repo.PG_CONNECT_DEFAULTS["keepalives_idle"])


@pytest.fixture
def stalled_pg() -> Iterator[tuple[str, TcpProxy]]:
    with fresh_pg_database() as url, tcp_proxy(("127.0.0.1", 5432)) as proxy:
        yield url.replace(":5432/", f":{proxy.port}/"), proxy


def test_a_database_that_does_not_answer_fails_the_connect_in_bounded_time(
    stalled_pg: tuple[str, TcpProxy], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, proxy = stalled_pg
    monkeypatch.setitem(repo.PG_CONNECT_DEFAULTS, "connect_timeout", 2)  # the default is 10 s
    proxy.stall()  # TCP connects, then nothing comes back (a hung server or a partition)
    store = Store.open(url)
    outcome: list[BaseException | None] = []

    def connect() -> None:
        try:
            with store.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            outcome.append(None)
        except BaseException as exc:  # the outcome is the assertion
            outcome.append(exc)

    t0 = time.monotonic()
    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout=15)  # without a connect timeout libpq waits for ever
    elapsed = time.monotonic() - t0
    assert not thread.is_alive(), "the connect did not give up"
    assert isinstance(outcome[0], sa.exc.OperationalError), outcome
    assert "timeout" in str(outcome[0]).lower()
    assert 1.5 <= elapsed < 8
    proxy.resume()  # the database is back: the same engine connects
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1
    store.close()
