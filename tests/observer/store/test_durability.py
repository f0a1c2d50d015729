"""Crash safety and concurrency of the SQL store.

Durability: a child process writes batches and prints an acknowledgement right after each
`write_batch` returns; the parent SIGKILLs it mid-stream. Reopening the SQLite file must show
every acknowledged record (WAL + synchronous=NORMAL: committed = in the WAL file = survives a
process kill).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from observer.store import Store

from .conftest import sqlite_url
from .factories import record

CHILD = """
import sys
from observer.store import Store
from tests.observer.store.factories import record

url, tag = sys.argv[1], sys.argv[2]
store = Store.open(url)
store.upgrade()
k = 0
while True:
    store.write_batch([record(i, 1000.0 + k, prefix=f"{tag}-{k}") for i in range(64)])
    print(k, flush=True)  # acknowledged: write_batch returned
    k += 1
"""


def _run_and_kill(url: str, tag: str, acks_before_kill: int, cwd: Path) -> int:
    """Start the writer, SIGKILL it right after `acks_before_kill` acknowledgements; return the
    highest acknowledged batch number."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, url, tag],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )
    assert proc.stdout is not None
    last = -1
    try:
        for line in proc.stdout:
            last = int(line)
            if last + 1 >= acks_before_kill:
                proc.send_signal(signal.SIGKILL)
                break
        else:
            raise AssertionError(f"writer exited early: {proc.stderr.read() if proc.stderr else ''}")
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return last


@pytest.mark.slow
def test_every_acknowledged_batch_survives_sigkill(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    repo_root = Path(__file__).resolve().parents[3]
    acked = {"one": _run_and_kill(url, "one", 25, repo_root), "two": _run_and_kill(url, "two", 10, repo_root)}
    st = Store.open(url)
    try:
        with st.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        for tag, last in acked.items():
            assert last >= 0
            for k in range(last + 1):
                for i in (0, 63):
                    assert st.get_record(f"{tag}-{k}-{i}") is not None, (tag, k, i)
        assert st.count_records() >= 64 * sum(last + 1 for last in acked.values())
        assert st.count_records() % 64 == 0  # no torn batch: one transaction per write_batch
    finally:
        st.close()


def test_reads_from_other_threads_while_writing(sql_store: Store) -> None:
    errors: list[BaseException] = []
    done = threading.Event()
    seen: list[int] = []

    def reader() -> None:
        try:
            while not done.is_set():
                # chunks are separate read transactions: the stream may grow while it is read
                streamed = sum(1 for _ in sql_store.records_since(0.0, chunk_size=50))
                n = sql_store.count_records()
                seen.append(n)
                assert n % 32 == 0  # one query never sees half a batch
                assert n >= streamed
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for k in range(40):
            sql_store.write_batch([record(i, 1000.0 + i, prefix=f"b{k}") for i in range(32)])
    finally:
        done.set()
        for t in threads:
            t.join(timeout=30)
    assert not errors, errors
    assert sql_store.count_records() == 40 * 32
    assert seen


def test_sqlite_second_process_sees_committed_data(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    a = Store.open(url)
    a.upgrade()
    b = Store.open(url)
    try:
        a.write_batch([record(1, 10.0)])
        assert b.get_record("req-1") == record(1, 10.0)
        with b.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM requests")).scalar() == 1
    finally:
        a.close()
        b.close()
