"""Pending P/D halves have an owner (the ingest replica holding them) and replicas a heartbeat:
a replica restores its own rows and takes over (`claim_pending`) only those of gone replicas,
on every RecordStore; replicas claiming at once on PostgreSQL never take the same row."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
import sqlalchemy as sa

from observer.model import EngineSpan
from observer.store import RecordStore, Store, schema

from .conftest import TABLES
from .factories import engine_span

T = 1_700_000_000.0
GONE = 60.0


def halves(first: int, n: int) -> list[EngineSpan]:
    return [engine_span(i, end=T + i) for i in range(first, first + n)]


def ids(spans: list[EngineSpan]) -> list[str]:
    return [s.span_id for s in spans]


def test_a_replica_takes_only_the_rows_of_gone_replicas(store: RecordStore) -> None:
    a, b, c = halves(0, 3), halves(10, 3), halves(20, 2)
    assert store.claim_pending("a", T, GONE, limit=100) == []  # heartbeats of a, b and c
    assert store.claim_pending("b", T, GONE, limit=100) == []
    assert store.claim_pending("c", T, GONE, limit=100) == []
    store.write_batch([], a, owner="a")
    store.write_batch([], b, owner="b")
    store.write_batch([], c, owner="c")
    assert ids(store.load_pending("a")) == ids(a)
    # all alive: nothing to take, never its own rows
    assert store.claim_pending("a", T + GONE - 1, GONE, limit=100) == []
    assert store.claim_pending("b", T + GONE - 1, GONE, limit=100) == []
    # c's heartbeat is older than GONE at a's next claim: a takes c's rows, not b's
    assert ids(store.claim_pending("a", T + GONE + 1, GONE, limit=100)) == ids(c)
    assert ids(store.load_pending("a")) == ids(a + c)
    assert ids(store.load_pending("b")) == ids(b)
    assert store.load_pending("c") == []
    assert store.claim_pending("b", T + GONE + 2, GONE, limit=100) == []  # already taken


def test_a_retired_replica_is_taken_over_at_once(store: RecordStore) -> None:
    store.claim_pending("a", T, GONE, limit=100)
    store.claim_pending("b", T, GONE, limit=100)
    store.write_batch([], halves(0, 2), owner="a")
    store.retire("a")
    assert ids(store.claim_pending("b", T + 1, GONE, limit=100)) == ids(halves(0, 2))
    # a comes back under the same name: a fresh heartbeat, nothing of its own left
    assert store.claim_pending("a", T + 2, GONE, limit=100) == []
    assert store.load_pending("a") == []


def test_rows_without_an_owner_are_taken_at_once(store: RecordStore) -> None:
    store.write_batch([], halves(0, 3))  # written without an owner (or before migration 0004)
    assert ids(store.claim_pending("a", T, GONE, limit=100)) == ids(halves(0, 3))


def test_the_limit_leaves_the_rest_for_the_next_claim(store: RecordStore) -> None:
    store.claim_pending("c", T, GONE, limit=100)
    store.write_batch([], halves(0, 25), owner="c")
    taken: list[str] = []
    for k in range(3):
        got = store.claim_pending("a", T + GONE + 1 + k, GONE, limit=10)
        assert len(got) == [10, 10, 5][k]
        taken += ids(got)
    assert sorted(taken) == sorted(ids(halves(0, 25)))
    assert store.claim_pending("a", T + GONE + 9, GONE, limit=10) == []


def test_the_sweep_finds_owners_with_no_heartbeat_row(store: RecordStore) -> None:
    """A replica forgotten while it was away (its heartbeat row deleted as gone) that wrote rows
    and stopped before its next heartbeat: only the sweep (the maintenance) finds them."""
    store.write_batch([], halves(0, 2), owner="ghost")
    assert store.claim_pending("a", T, GONE, limit=100) == []
    assert ids(store.claim_pending("a", T + 1, GONE, limit=100, sweep=True)) == ids(halves(0, 2))


def test_gone_heartbeats_are_forgotten_once_their_rows_are_taken(sql_store: Store) -> None:
    for name in ("a", "c", "d"):
        sql_store.claim_pending(name, T, GONE, limit=100)
    sql_store.write_batch([], halves(0, 3), owner="c")  # d is gone with no rows
    sql_store.claim_pending("a", T + GONE + 1, GONE, limit=2)
    with sql_store.engine.connect() as conn:
        beats = set(conn.execute(sa.select(schema.ingest_replicas.c.owner)).scalars())
    assert beats == {"a", "c"}  # c still has a row left: kept until it is taken
    sql_store.claim_pending("a", T + GONE + 2, GONE, limit=2)
    with sql_store.engine.connect() as conn:
        beats = set(conn.execute(sa.select(schema.ingest_replicas.c.owner)).scalars())
    assert beats == {"a"}


@pytest.mark.postgres
def test_replicas_claiming_at_once_never_take_the_same_row(pg_url: str) -> None:
    """Four replicas take over two gone replicas' 3000 rows at the same moment, in batches:
    every row is taken by exactly one of them, and none is left."""
    st = Store.open(pg_url)
    with st.engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {TABLES} RESTART IDENTITY")
    st.claim_pending("gone-1", T, GONE, limit=1)
    st.write_batch([], halves(0, 2000), owner="gone-1")
    st.write_batch([], halves(5000, 1000))  # no owner
    replicas = [Store.open(pg_url) for _ in range(4)]
    start = threading.Barrier(len(replicas))
    taken: dict[str, list[str]] = {}

    def claim(name: str, replica: Store) -> None:
        start.wait()
        got: list[str] = []
        for k in range(40):
            got += ids(replica.claim_pending(name, T + GONE + 1 + k, GONE, limit=150))
        taken[name] = got

    threads = [threading.Thread(target=claim, args=(f"r{i}", r)) for i, r in enumerate(replicas)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for r in replicas:
        r.close()
    every = [sid for got in taken.values() for sid in got]
    assert len(taken) == 4
    assert [sid for sid, n in Counter(every).items() if n > 1] == []
    assert sorted(every) == sorted(ids(halves(0, 2000) + halves(5000, 1000)))
    assert all(taken.values()), "each replica took a share"
    for name, got in taken.items():
        assert sorted(ids(st.load_pending(name))) == sorted(got)
    st.close()


def test_live_replicas_are_those_with_a_recent_heartbeat(store: RecordStore) -> None:
    store.claim_pending("a", T, GONE, limit=1)
    store.claim_pending("b", T + 30, GONE, limit=1)
    store.claim_pending("c", T + 30, GONE, limit=1)
    store.retire("c")
    assert store.live_replicas(T + 30, GONE) == ["a", "b"]
    assert store.live_replicas(T + GONE + 1, GONE) == ["b"]
