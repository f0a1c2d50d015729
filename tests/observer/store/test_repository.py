"""Behaviour of every RecordStore (SQLite, PostgreSQL, in-memory): the same assertions on each."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest
import sqlalchemy as sa

from observer.model import RequestRecord, SloSpec, TierTokens
from observer.store import RecordStore, RollupRow, Store, StoreRejected, schema
from observer.store.types import minute_floor

from .conftest import TABLES
from .factories import engine_span, random_records, record, slo

T0 = minute_floor(1_700_000_000.0)  # a minute boundary in 2023


# -- write_batch ---------------------------------------------------------------------------------
def test_write_batch_returns_only_new_records(store: RecordStore) -> None:
    batch = [record(i, T0 + i) for i in range(10)]
    assert store.write_batch(batch) == batch
    assert store.write_batch(batch) == []  # a retried OTLP batch is not counted twice
    mixed = [*batch[:5], *(record(i, T0 + i) for i in range(10, 13))]
    assert [r.request_id for r in store.write_batch(mixed)] == ["req-10", "req-11", "req-12"]
    assert store.count_records() == 13


def test_data_the_database_cannot_hold_is_refused_as_such(sql_store: Store) -> None:
    # what each database refuses outright: a lone surrogate (SQLite cannot encode it), NUL in a
    # text field and a value longer than its column (PostgreSQL). StoreRejected (permanent),
    # not a generic failure, and nothing of the batch is written.
    bad = ["\ud800"] if sql_store.dialect == "sqlite" else ["x\x00y", "t" * 300]
    for tenant in bad:
        with pytest.raises(StoreRejected):
            sql_store.write_batch([record(1, T0), record(2, T0, tenant=tenant)], [engine_span(9)])
        assert sql_store.count_records() == 0
        assert sql_store.load_pending() == []
    assert sql_store.write_batch([record(1, T0)]) == [record(1, T0)]  # the store still works


def test_write_batch_interleaved_old_and_new_keeps_input_order(store: RecordStore) -> None:
    store.write_batch([record(i, T0 + i) for i in range(0, 20, 2)])  # the even ids exist
    batch = [record(i, T0 + 100 - i) for i in (7, 4, 3, 8, 1, 19, 0, 7)]
    assert [r.request_id for r in store.write_batch(batch)] == ["req-7", "req-3", "req-1", "req-19"]
    assert store.write_batch(batch) == []
    assert store.count_records() == 14


def test_write_batch_duplicate_inside_one_batch_counts_once(store: RecordStore) -> None:
    a = record(1, T0 + 1)
    b = record(1, T0 + 2)  # same request id, different content: the first one wins
    assert store.write_batch([a, b, record(2, T0)]) == [a, record(2, T0)]
    assert store.get_record("req-1") == a


def test_record_round_trip_keeps_every_field(store: RecordStore) -> None:
    r = RequestRecord(
        request_id="x" * 200,
        trace_id="ab" * 16,
        tenant="t/ü",
        model="meta-llama/Llama-3.1-8B",
        start_time=T0 + 0.123456,
        end_time=T0 + 9.876543,
        prompt_tokens=2**40,
        output_tokens=0,
        cached=TierTokens(1, 2, 3, 4, 2**35),
        ttft=None,
        itl=1e-6,
        e2e=9.75,
        queue=None,
        prefill=0.5,
        kv_transfer=None,
        decode=9.0,
        error=True,
        disaggregated=False,
        prefill_pod=None,
        decode_pod="d",
        complete=False,
    )
    store.write_batch([r])
    assert store.get_record(r.request_id) == r
    assert store.get_record("missing") is None


def test_records_by_trace(store: RecordStore) -> None:
    trace = "f" * 32
    store.write_batch([record(1, T0 + 5, trace_id=trace), record(2, T0 + 1, trace_id=trace), record(3, T0)])
    assert [r.request_id for r in store.records_by_trace(trace)] == ["req-2", "req-1"]
    assert store.records_by_trace("0" * 32) == []


# -- pending spans -------------------------------------------------------------------------------
def test_pending_add_release_round_trip(store: RecordStore) -> None:
    spans = [engine_span(i, end=T0 + 10 - i) for i in range(5)]
    store.write_batch([], pending_added=spans)
    assert store.load_pending() == sorted(spans, key=lambda s: s.end_time)
    # released and added in one transaction together with a record
    store.write_batch(
        [record(1, T0)],
        pending_added=[engine_span(9)],
        pending_released=[spans[0].span_id, spans[3].span_id, "0" * 16],
    )
    left = {s.span_id for s in store.load_pending()}
    assert left == {spans[1].span_id, spans[2].span_id, spans[4].span_id, engine_span(9).span_id}
    assert store.count_records() == 1
    # adding the same span twice keeps one copy
    store.write_batch([], pending_added=[spans[1]])
    assert len(store.load_pending()) == 4


def test_many_released_ids(store: RecordStore) -> None:
    spans = [engine_span(i) for i in range(1200)]
    store.write_batch([], pending_added=spans)
    store.write_batch([], pending_released=[s.span_id for s in spans[:1100]])
    assert {s.span_id for s in store.load_pending()} == {s.span_id for s in spans[1100:]}


# -- records_since -------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk", [1, 3, 7, 1000])
def test_records_since_is_ordered_and_complete_across_chunks(store: RecordStore, chunk: int) -> None:
    rng = random.Random(7)
    # ties on end_time across chunk borders must neither repeat nor drop records
    ends = [T0 + rng.choice([1.0, 2.0, 2.0, 3.5, 7.25]) for _ in range(40)]
    recs = [record(i, e) for i, e in enumerate(ends)]
    store.write_batch(recs[:20])
    store.write_batch(recs[20:])
    got = list(store.records_since(T0 + 2.0, chunk_size=chunk))
    want = sorted((r for r in recs if r.end_time >= T0 + 2.0), key=lambda r: r.end_time)
    assert [r.end_time for r in got] == [r.end_time for r in want]
    assert sorted(r.request_id for r in got) == sorted(r.request_id for r in want)
    assert len({r.request_id for r in got}) == len(got)
    # within equal end times, insertion order
    twos = [r.request_id for r in got if r.end_time == T0 + 2.0]
    assert twos == [r.request_id for r in recs if r.end_time == T0 + 2.0]


def test_records_since_rejects_bad_chunk(store: RecordStore) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        list(store.records_since(0.0, chunk_size=0))


# -- SLOs ----------------------------------------------------------------------------------------
def test_slos_seed_once_then_db_wins(store: RecordStore) -> None:
    assert not store.slos_initialized()
    assert store.list_slos() == []
    config = [slo("a"), slo("b", 0.9, ("t1",))]
    assert store.seed_slos(config) == config
    assert store.slos_initialized()
    assert store.list_slos() == config
    assert store.seed_slos([slo("other")]) == config  # second start: the DB wins


def test_replace_slos_is_put(store: RecordStore) -> None:
    store.replace_slos([slo("a"), slo("b"), slo("c")])
    new = [slo("c", 0.95), slo("d")]
    store.replace_slos(new)
    assert store.list_slos() == new  # whole set replaced, order kept
    with pytest.raises(ValueError, match="duplicate"):
        store.replace_slos([slo("x"), slo("x")])
    assert store.list_slos() == new  # failed PUT changed nothing
    store.replace_slos([])
    assert store.list_slos() == []
    assert store.slos_initialized()  # an empty set is a decision, not "never configured"
    assert store.seed_slos([slo("a")]) == []


# -- rollups -------------------------------------------------------------------------------------
def _raw_sums(records: list[RequestRecord], before: float) -> dict[tuple[float, str, str], RollupRow]:
    out: dict[tuple[float, str, str], RollupRow] = {}
    for r in records:
        if r.end_time >= before:
            continue
        row = RollupRow.of(r)
        key = (row.minute_start, row.tenant, row.model)
        out[key] = out[key] + row if key in out else row
    return out


def _as_map(rows: list[RollupRow]) -> dict[tuple[float, str, str], RollupRow]:
    return {(r.minute_start, r.tenant, r.model): r for r in rows}


def test_rollup_sums_equal_raw(store: RecordStore) -> None:
    rng = random.Random(42)
    recs = random_records(rng, 600, T0, 600.0)
    store.write_batch(recs)
    up_to = T0 + 300.0 + 17.0  # not a minute boundary: only complete minutes are rolled up
    n = store.rollup(up_to)
    want = _raw_sums(recs, minute_floor(up_to))
    assert n == sum(r.requests for r in want.values())
    assert _as_map(store.rollups(0.0)) == want
    assert store.rollup(up_to) == 0  # idempotent
    assert _as_map(store.rollups(0.0)) == want
    wm = store.watermark()
    assert wm is not None
    assert wm.time == minute_floor(up_to)


@pytest.mark.postgres
def test_replicas_rolling_up_at_once_count_each_record_once(pg_url: str) -> None:
    """Every `serve` replica runs the rollup (maintenance, each on its own clock). Two at the same
    moment both read the same watermark and added the same records twice (3200 rolled up of
    2000); the rollup's table lock is now self-exclusive, so they take turns."""
    import threading

    sql_store = Store.open(pg_url)  # SQLite has one writer at a time: nothing to race there
    with sql_store.engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {TABLES} RESTART IDENTITY")
    rng = random.Random(7)
    written: list[RequestRecord] = []
    for trial in range(5):
        recs = random_records(rng, 400, T0 + trial * 120, 120.0, prefix=f"t{trial}")
        sql_store.write_batch(recs)
        written += recs
        replicas = [Store.open(pg_url) for _ in range(2)]
        start = threading.Barrier(len(replicas))

        def rollup(replica: Store, start: threading.Barrier, up_to: float) -> None:
            start.wait()
            replica.rollup(up_to)

        up_to = T0 + (trial + 1) * 120 + 60
        threads = [threading.Thread(target=rollup, args=(r, start, up_to)) for r in replicas]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        for r in replicas:
            r.close()
        wm = sql_store.watermark()
        assert wm is not None
        assert _as_map(sql_store.rollups(0.0)) == _raw_sums(written, wm.time), f"trial {trial}"
    sql_store.close()


def test_rollup_resumes_from_watermark_and_merges_late_records(store: RecordStore) -> None:
    rng = random.Random(3)
    first = random_records(rng, 300, T0, 600.0, prefix="first")
    store.write_batch(first)
    # step through in uneven increments, including a step backwards (must not regress)
    for up_to in (T0 + 61.0, T0 + 200.0, T0 + 100.0, T0 + 359.0):
        store.rollup(up_to)
    # late records for minutes already rolled up (a retried batch, a late P/D flush), and some new
    late = random_records(rng, 100, T0, 700.0, prefix="late")
    store.write_batch(late)
    store.write_batch(first[:50])  # duplicates change nothing
    store.rollup(T0 + 420.0)
    store.rollup(T0 + 900.0)
    assert _as_map(store.rollups(0.0)) == _raw_sums(first + late, T0 + 900.0)
    by_tenant: defaultdict[str, int] = defaultdict(int)
    for r in store.rollups(0.0, tenant="a"):
        by_tenant[r.tenant] += r.requests
    assert set(by_tenant) <= {"a"}
    assert by_tenant["a"] == sum(1 for r in first + late if r.tenant == "a")
    assert all(r.sketches is None for r in store.rollups(0.0))


def test_rollups_range_filter(store: RecordStore) -> None:
    store.write_batch([record(i, T0 + 60 * i + 1) for i in range(5)])
    store.rollup(T0 + 600)
    assert [r.minute_start for r in store.rollups(T0 + 60, T0 + 180)] == [T0 + 60, T0 + 120]


# -- retention -----------------------------------------------------------------------------------
def test_retention_deletes_old_rows_in_chunks_and_keeps_rollups_exact(store: RecordStore) -> None:
    rng = random.Random(11)
    recs = random_records(rng, 250, T0, 3600.0)
    store.write_batch(recs)
    spans = [engine_span(i, end=T0) for i in range(3)]
    store.write_batch([], pending_added=spans)
    now = T0 + 4000.0
    # records older than 1800 s are deleted; they are rolled up first, so nothing is lost
    n_rec, n_roll = store.apply_retention(now, 1800, 10**6, chunk_size=7)
    cut = minute_floor(now - 1800)
    assert n_rec == sum(1 for r in recs if r.end_time < cut)
    assert n_roll == 0
    assert store.count_records() == 250 - n_rec
    assert min(r.end_time for r in store.records_since(0.0)) >= cut
    assert store.load_pending() == spans  # never pending spans
    assert _as_map(store.rollups(0.0)) == _raw_sums(recs, cut)
    # rollups past their retention go too
    n_rec2, n_roll2 = store.apply_retention(now, 1800, 3000, chunk_size=4)
    assert n_rec2 == 0
    assert n_roll2 == len({k for k in _raw_sums(recs, cut) if k[0] < now - 3000})
    assert all(r.minute_start >= now - 3000 for r in store.rollups(0.0))
    assert store.apply_retention(now, 1800, 3000) == (0, 0)


@pytest.mark.postgres
def test_slo_writers_on_two_replicas_take_turns(pg_url: str) -> None:
    """Two PUTs on two replicas at once stored the union of both sets (each DELETE missed the
    other's rows); two replicas seeding a new database at once failed one on a duplicate name.
    The stored set is now always one of the sets written."""
    import threading

    a_set, b_set = [slo("a1"), slo("a2")], [slo("b1")]
    replicas = [Store.open(pg_url) for _ in range(2)]
    try:
        for round_ in range(10):
            with replicas[0].engine.begin() as conn:
                conn.exec_driver_sql("DELETE FROM slos")
                conn.execute(
                    sa.delete(schema.store_meta).where(
                        schema.store_meta.c.key == schema.META_SLOS_INITIALIZED
                    )
                )
            start = threading.Barrier(2)
            errors: list[BaseException] = []

            def write(
                replica: Store,
                specs: list[SloSpec],
                seed: bool,
                start: threading.Barrier,
                errors: list[BaseException],
            ) -> None:
                start.wait()
                try:
                    (replica.seed_slos if seed else replica.replace_slos)(specs)
                except BaseException as exc:  # the outcome is the assertion
                    errors.append(exc)

            seed = round_ % 2 == 0
            threads = [
                threading.Thread(target=write, args=(r, specs, seed, start, errors))
                for r, specs in zip(replicas, (a_set, b_set), strict=True)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=30)
            assert errors == [], (round_, errors)
            assert replicas[0].list_slos() in (a_set, b_set), round_
    finally:
        for r in replicas:
            r.close()


@pytest.mark.postgres
def test_retention_skips_rows_another_replica_is_deleting(pg_url: str) -> None:
    """Replicas running retention at once locked the same rows in different orders, and
    PostgreSQL aborted one (a deadlock). Rows another transaction holds are now skipped: the
    run ends at once, deleting the others, instead of waiting for (or deadlocking on) them."""
    import threading

    st = Store.open(pg_url)
    with st.engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {TABLES} RESTART IDENTITY")
    st.write_batch([record(i, T0 + i) for i in range(100)])
    st.rollup(T0 + 3600)
    other = Store.open(pg_url)
    try:
        with other.engine.connect() as held:
            tx = held.begin()
            held.exec_driver_sql(
                "SELECT seq FROM requests WHERE seq <= 10 FOR UPDATE"
            )  # another replica's chunk
            done: list[tuple[int, int]] = []
            t = threading.Thread(target=lambda: done.append(st.apply_retention(T0 + 7200, 60, 10**9, 25)))
            t.start()
            t.join(timeout=20)
            assert not t.is_alive(), "retention waited for the rows another replica holds"
            tx.rollback()
        assert done == [(90, 0)]
    finally:
        other.close()
        st.close()
