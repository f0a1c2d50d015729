"""`pd-observer serve` as Kubernetes runs it: the real process, real signals, real HTTP clients,
SQLite and PostgreSQL stores (the latter behind a TCP proxy that can stall or go away).

Kubernetes sends SIGTERM, waits terminationGracePeriodSeconds (30 s by default), then SIGKILLs;
it probes /readyz (readiness) and /healthz (liveness)."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from observer import conventions as c
from observer.store import Store
from tests.support.otel import Req, VllmSpans, encode, gzipped
from tests.support.server import Proc, serve_subprocess
from tests.support.tcpproxy import TcpProxy, tcp_proxy

pytestmark = pytest.mark.slow

PG = ("127.0.0.1", 5432)
HEADERS = {"content-type": c.CT_PROTOBUF, "content-encoding": "gzip"}


def batch(tag: str, n: int = 20) -> bytes:
    """An OTLP export request of `n` vLLM engine spans, request ids `<tag>-<i>`."""
    sp = VllmSpans()
    for i in range(n):
        sp.aggregated(Req("t", prompt=100, output=3, start=time.time() - 5, request_id=f"{tag}-{i}"))
    return gzipped(encode(sp.take()))


def post(url: str, tag: str, timeout: float = 30.0) -> httpx.Response | str:
    """The response, or the name of the transport error (connection refused, reset...)."""
    try:
        return httpx.post(url + c.OTLP_TRACES_PATH, content=batch(tag), headers=HEADERS, timeout=timeout)
    except httpx.HTTPError as exc:
        return type(exc).__name__


def post_in_background(
    url: str, tags: list[str]
) -> tuple[dict[str, httpx.Response | str], list[threading.Thread]]:
    out: dict[str, httpx.Response | str] = {}
    threads = [threading.Thread(target=lambda t=t: out.__setitem__(t, post(url, t))) for t in tags]
    for t in threads:
        t.start()
    return out, threads


def logs(svc: Proc) -> list[dict[str, Any]]:
    return [json.loads(line) for line in svc.log.read_text().splitlines() if line.startswith("{")]


def stored(db: str, tag: str) -> bool:
    st = Store.open(db)
    try:
        return st.get_record(f"{tag}-0") is not None
    finally:
        st.close()


def refused_cleanly(r: httpx.Response | str) -> bool:
    """503 with Retry-After, or no connection at all: an OTLP client retries either."""
    if isinstance(r, str):
        return r in ("ConnectError", "RemoteProtocolError", "ReadError")
    return r.status_code == 503 and r.headers.get("retry-after") is not None


@contextlib.contextmanager
def sqlite_write_lock(path: Path) -> Iterator[sqlite3.Connection]:
    """Hold SQLite's write lock from another connection: the service's writes wait on it."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=10)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        conn.close()


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


# ---------------------------------------------------------------------------------- SIGTERM
def test_sigterm_writes_accepted_batches_refuses_new_ones_and_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "pdo.db"
    db = f"sqlite:///{path}"
    with serve_subprocess(db, tmp_path) as svc:
        assert post(svc.url, "before").status_code == 200  # type: ignore[union-attr]
        with sqlite_write_lock(path):
            # accepted, decoded, queued: waiting for the lock when SIGTERM arrives
            inflight, threads = post_in_background(svc.url, [f"inflight{k}" for k in range(4)])
            time.sleep(1.0)
            assert not inflight, "the writes should wait for the lock"
            t0 = time.monotonic()
            svc.proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            # nothing new is taken: refused (503 + Retry-After) or no connection; not ready
            late = post(svc.url, "late", timeout=5)
            assert refused_cleanly(late), late
            with contextlib.suppress(httpx.HTTPError):
                assert httpx.get(svc.url + "/readyz", timeout=2).status_code == 503
            time.sleep(0.5)
        # the lock is gone: the drain writes the accepted batches, then the process exits
        code = svc.proc.wait(timeout=15)
        elapsed = time.monotonic() - t0
        for t in threads:
            t.join(timeout=10)
        lines = logs(svc)
    assert code == 0, svc.log.read_text()[-3000:]
    assert elapsed < 10  # server.shutdown_grace_seconds
    for tag, r in inflight.items():
        assert not isinstance(r, str), (tag, r)
        assert r.status_code == 200, (tag, r)
        assert stored(db, tag), tag  # answered 200 = durably stored
    assert not stored(db, "late")
    started = next(x for x in lines if x["msg"] == "shutdown requested")
    assert started["reason"] == "SIGTERM"
    assert started["batches_in_flight"] >= 1
    exiting = lines[-1]
    assert (exiting["msg"], exiting["exit_code"], exiting["signal"]) == ("exiting", 0, "SIGTERM")


def test_a_second_sigterm_exits_at_once(tmp_path: Path) -> None:
    path = tmp_path / "pdo.db"
    env = {
        "PD_OBSERVER_SERVER__SHUTDOWN_GRACE_SECONDS": "20",
        "PD_OBSERVER_STORE__WRITE_TIMEOUT_SECONDS": "0",
    }
    with serve_subprocess(f"sqlite:///{path}", tmp_path, env) as svc, sqlite_write_lock(path):
        post_in_background(svc.url, ["stuck"])
        time.sleep(1.0)
        svc.proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert svc.proc.poll() is None  # draining: the batch waits for the store
        t0 = time.monotonic()
        svc.proc.send_signal(signal.SIGTERM)
        code = svc.proc.wait(timeout=10)
        assert time.monotonic() - t0 < 2
        lines = logs(svc)
    assert code == 1
    assert lines[-1]["level"] == "error"
    assert "second signal" in lines[-1]["msg"]


# ----------------------------------------------------------------------- PostgreSQL via proxy
@pytest.fixture
def pg_via_proxy() -> Iterator[tuple[str, TcpProxy]]:
    """A fresh PostgreSQL database reached through a loopback TCP proxy."""
    from tests.observer.store.conftest import fresh_pg_database

    with fresh_pg_database() as url, tcp_proxy(PG) as proxy:
        yield url.replace(f":{PG[1]}/", f":{proxy.port}/"), proxy


@pytest.mark.postgres
def test_sigterm_with_a_hung_store_answers_503_and_exits_within_the_grace(
    tmp_path: Path, pg_via_proxy: tuple[str, TcpProxy]
) -> None:
    db, proxy = pg_via_proxy
    env = {"PD_OBSERVER_SERVER__SHUTDOWN_GRACE_SECONDS": "3", "PD_OBSERVER_STORE__WRITE_TIMEOUT_SECONDS": "0"}
    with serve_subprocess(db, tmp_path, env) as svc:
        proxy.stall()  # PostgreSQL stops answering: the writer's call hangs
        answers, threads = post_in_background(svc.url, ["a", "b"])
        time.sleep(1.0)
        t0 = time.monotonic()
        svc.proc.send_signal(signal.SIGTERM)
        code = svc.proc.wait(timeout=15)
        elapsed = time.monotonic() - t0
        for t in threads:
            t.join(timeout=10)
        lines = logs(svc)
    assert code == 1  # not a clean stop: batches were left unwritten
    assert 3 <= elapsed < 3 + 2  # the grace, then the exit margin at most
    for tag, r in answers.items():  # not 500 (an OTLP client drops that): 503, which it retries
        assert not isinstance(r, str), (tag, r)
        assert r.status_code == 503, (tag, r)
        assert r.headers["retry-after"], (tag, r)
    assert (lines[-1]["msg"], lines[-1]["exit_code"], lines[-1]["signal"]) == ("exiting", 1, "SIGTERM")


@pytest.mark.postgres
def test_readiness_follows_the_store_and_comes_back_with_it(
    tmp_path: Path, pg_via_proxy: tuple[str, TcpProxy]
) -> None:
    db, proxy = pg_via_proxy
    env = {
        "PD_OBSERVER_STORE__WRITE_TIMEOUT_SECONDS": "1",
        "PD_OBSERVER_INGEST__PENDING_TIMEOUT_SECONDS": "2",  # housekeeping (and the probe) every 1 s
    }

    def ready() -> httpx.Response:
        return httpx.get(svc.url + "/readyz", timeout=5)

    with serve_subprocess(db, tmp_path, env) as svc:
        assert post(svc.url, "up").status_code == 200  # type: ignore[union-attr]
        # PostgreSQL goes away (connections cut, new ones refused)
        proxy.stop()
        r = post(svc.url, "down")
        assert refused_cleanly(r), r
        assert not isinstance(r, str), r  # answered, not cut
        assert ready().status_code == 503
        assert ready().json()["status"] == "store_unavailable"
        assert httpx.get(svc.url + "/healthz", timeout=5).status_code == 200  # alive: no restart
        # it comes back: ready again without any batch arriving (an unready pod gets none)
        proxy.start()
        wait_for(lambda: ready().status_code == 200, 10, "ready once PostgreSQL is back")
        assert post(svc.url, "down").status_code == 200  # type: ignore[union-attr]  # the retry
        # PostgreSQL hangs: answered 503 after store.write_timeout_seconds, not left hanging
        proxy.stall()
        t0 = time.monotonic()
        r = post(svc.url, "hung")
        assert refused_cleanly(r), r
        assert not isinstance(r, str), r  # answered, not cut
        assert time.monotonic() - t0 < 5
        wait_for(lambda: ready().json()["status"] == "store_unresponsive", 5, "unready while it hangs")
        proxy.resume()
        wait_for(lambda: ready().status_code == 200, 10, "ready once PostgreSQL answers")
        # the batch answered 503 was written when the store came back: its retry is not counted twice
        assert post(svc.url, "hung").status_code == 200  # type: ignore[union-attr]
        tenants = httpx.get(svc.url + "/api/v1/tenants", params={"window": 3600}, timeout=10).json()
    (t,) = tenants["tenants"]
    assert t["requests"] == 3 * 20  # up, down, hung: once each
