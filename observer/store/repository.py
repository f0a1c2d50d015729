"""SQL store (SQLAlchemy Core) for request records, pending P/D spans, SLOs and rollups.

Sync API: one writer thread calls the write methods (they are also serialized by a lock, so a
second in-process writer is safe); reads may come from any thread (pooled Engine). SQLite runs in
WAL mode with synchronous=NORMAL: a transaction that returned is in the WAL file, so it survives
the process being killed (kill -9); only an OS crash / power loss may drop the last transactions.
See docs/storage.md.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, make_url

import migrations
from observer.model import EngineSpan, RequestRecord, SloSpec
from observer.store import codec
from observer.store import schema as s
from observer.store.types import (
    DEFAULT_CHUNK,
    MINUTE,
    RollupRow,
    RollupWatermark,
    StoreRejected,
    minute_floor,
)

SQLITE_BUSY_TIMEOUT_MS = 10_000
SQLITE_CACHE_KIB = 65_536  # page cache per connection (PRAGMA cache_size=-KiB)
SQLITE_WAL_AUTOCHECKPOINT_PAGES = 10_000  # PRAGMA wal_autocheckpoint (SQLite's default: 1000)
_WRITE_OPTION = "pd_observer_write"
# the PostgreSQL advisory lock every migration run holds (`Store._migrate`): "pdobserv" in ASCII
MIGRATION_LOCK_KEY = int.from_bytes(b"pdobserv", "big")

# libpq connection parameters set on every PostgreSQL connection unless the URL's query sets
# them (`?connect_timeout=30`), so that a database that stops answering fails in bounded time
# instead of holding a thread until the operating system gives up (docs/storage.md):
PG_CONNECT_DEFAULTS: dict[str, int] = {
    "connect_timeout": 10,  # s to connect, TLS and authentication included (libpq: none)
    "keepalives": 1,  # probe idle connections...
    "keepalives_idle": 30,  # ...after 30 s idle (Linux: 2 h)
    "keepalives_interval": 10,  # ...every 10 s (Linux: 75 s)
    "keepalives_count": 3,  # ...and drop the connection after 3 unanswered (Linux: 9)
    "tcp_user_timeout": 30_000,  # ms sent data may stay unacknowledged (Linux: ~15 min)
}


def normalize_url(url: str) -> str:
    """`postgresql://` / `postgres://` get the installed psycopg 3 driver; others pass through."""
    u = make_url(url.replace("postgres://", "postgresql://", 1) if url.startswith("postgres://") else url)
    if u.drivername == "postgresql":
        u = u.set(drivername="postgresql+psycopg")
    return u.render_as_string(hide_password=False)


def alembic_config(url: str | None = None) -> Config:
    """Programmatic Alembic config (no alembic.ini): script_location is the installed
    `migrations` package, so `pd-observer db upgrade` works from any working directory."""
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).resolve().parent))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return cfg


# Applied to every SQLite connection, in order (page_size only takes effect when the file is
# created, so it comes before journal_mode). See docs/storage.md for what each one measured.
SQLITE_PRAGMAS: list[str] = [
    "journal_mode=WAL",
    "synchronous=NORMAL",
    f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
    "foreign_keys=ON",
    # Measured (benchmarks/store_bench.py --sweep, docs/storage.md): a 64 MiB page cache keeps the
    # random-key request_id index in memory (-25% CPU per record at 5120 records/transaction); it
    # is per connection and filled only by pages actually read. Checkpointing every 10000 WAL
    # pages (~40 MB) instead of 1000 copies hot index pages to the database file less often.
    f"cache_size=-{SQLITE_CACHE_KIB}",
    f"wal_autocheckpoint={SQLITE_WAL_AUTOCHECKPOINT_PAGES}",
]


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy (our "begin" hook) emit BEGIN instead of pysqlite's implicit, late BEGIN.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    for pragma in SQLITE_PRAGMAS:
        cur.execute(f"PRAGMA {pragma}")
    cur.close()


def _sqlite_on_begin(conn: Connection) -> None:
    # Writers take the write lock up front (no SQLITE_BUSY_SNAPSHOT on a read-then-write upgrade).
    immediate = conn.get_execution_options().get(_WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def open_engine(url: str, *, pool_size: int = 5, echo: bool = False) -> Engine:
    """The engine for a store URL, as every pd-observer database user opens it. SQLite: the parent
    directory is created and `SQLITE_PRAGMAS` applied; in-memory SQLite is not supported (use
    MemoryStore). PostgreSQL (`postgresql+psycopg://user@host:port/db`): `PG_CONNECT_DEFAULTS`
    unless the URL sets them, and connections checked before use."""
    url = normalize_url(url)
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if not u.database or u.database == ":memory:":
            raise ValueError("in-memory SQLite is not supported by Store; use MemoryStore")
        Path(u.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url, echo=echo, pool_size=pool_size, connect_args={"check_same_thread": False}
        )
        sa.event.listen(engine, "connect", _sqlite_on_connect)
        sa.event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    if u.get_backend_name() == "postgresql":
        return sa.create_engine(
            url,
            echo=echo,
            pool_size=pool_size,
            pool_pre_ping=True,
            connect_args={k: v for k, v in PG_CONNECT_DEFAULTS.items() if k not in u.query},
        )
    raise ValueError(f"unsupported database {u.get_backend_name()!r}: use sqlite or postgresql")


class Store:
    """The SQL implementation of `observer.store.RecordStore`. Create with `Store.open(url)`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        self._insert = sqlite.insert if self._sqlite else postgresql.insert
        self._lock = threading.RLock()
        # Writes bypass SQLAlchemy's per-row parameter processing (it cost as much as the
        # database itself): one prepared SQL string each, executed with the DBAPI cursor's
        # executemany on pre-built tuples (codec.record_to_tuple).
        if set(codec.RECORD_COLUMNS) != {c.name for c in s.requests.columns} - {"seq"}:
            raise RuntimeError("codec.RECORD_COLUMNS does not match the requests table")
        # Only constants are interpolated (column names from codec, the driver's placeholder).
        mark = "?" if self._sqlite else "%s"
        cols, marks = ", ".join(codec.RECORD_COLUMNS), ", ".join([mark] * len(codec.RECORD_COLUMNS))
        self._insert_records_sql = " ".join(
            ["INSERT INTO requests", f"({cols}) VALUES ({marks})", "ON CONFLICT (request_id) DO NOTHING"]
        )
        self._insert_pending_sql = " ".join(
            [
                "INSERT INTO pending_spans (span_id, trace_id, end_time, payload, owner)",
                f"VALUES ({mark}, {mark}, {mark}, {mark}, {mark}) ON CONFLICT (span_id) DO NOTHING",
            ]
        )
        self._delete_pending_sql = " ".join(["DELETE FROM pending_spans WHERE span_id =", mark])

    # -- lifecycle -------------------------------------------------------------------------------
    @classmethod
    def open(cls, url: str, *, pool_size: int = 5, echo: bool = False) -> Store:
        """Create the engine (`open_engine`)."""
        return cls(open_engine(url, pool_size=pool_size, echo=echo))

    def close(self) -> None:
        self._engine.dispose()

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._lock, self._engine.connect() as conn:
            conn.execution_options(**{_WRITE_OPTION: True})
            with conn.begin():
                yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._engine.connect() as conn, conn.begin():
            yield conn

    # -- migrations ------------------------------------------------------------------------------
    def upgrade(self, revision: str = "head") -> None:
        """Alembic upgrade (to head by default); idempotent, and safe to run from several
        processes at once (`_migrate`)."""
        self._migrate(command.upgrade, revision)

    def downgrade(self, revision: str = "base") -> None:
        self._migrate(command.downgrade, revision)

    def _migrate(self, run: Callable[[Config, str], None], revision: str) -> None:
        """One transaction. Processes starting together on a new database (`serve` replicas,
        `serve` and `autoscale`) used to run the same DDL at once, and all but one failed (a
        duplicate `alembic_version`): on PostgreSQL each now takes `MIGRATION_LOCK_KEY` first, so
        they migrate one at a time and the later ones find the schema at head. SQLite's
        `BEGIN IMMEDIATE` already serializes them."""
        cfg = alembic_config()
        with self._write() as conn:
            if not self._sqlite:
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
            cfg.attributes["connection"] = conn
            run(cfg, revision)

    def current_revision(self) -> str | None:
        """The database's Alembic revision, None when never migrated."""
        with self._read() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    # -- records and pending spans ---------------------------------------------------------------
    def write_batch(
        self,
        records: Sequence[RequestRecord],
        pending_added: Sequence[EngineSpan] = (),
        pending_released: Sequence[str] = (),
        *,
        owner: str = "",
    ) -> list[RequestRecord]:
        """In ONE transaction: insert `records` (ignoring request ids already stored), add
        `pending_added` spans (held by the ingest replica `owner`), delete `pending_released`
        span ids. Returns the records that were new, in input order, so a retried batch is not
        counted twice."""
        unique: dict[str, RequestRecord] = {}
        for r in records:
            unique.setdefault(r.request_id, r)
        released = list(dict.fromkeys(pending_released))
        try:
            new_ids = self._write_batch(unique, pending_added, released, owner)
        except (UnicodeError, self._engine.dialect.loaded_dbapi.DataError) as exc:
            raise StoreRejected(f"{type(exc).__name__}: {exc}".splitlines()[0]) from exc
        if len(new_ids) == len(unique):
            return list(unique.values())
        return [r for r in unique.values() if r.request_id in new_ids]

    def _write_batch(
        self,
        unique: dict[str, RequestRecord],
        pending_added: Sequence[EngineSpan],
        released: list[str],
        owner: str,
    ) -> set[str]:
        new_ids: set[str] = set()
        with self._write() as conn:
            driver: Any = conn.connection.driver_connection
            cur = driver.cursor()
            try:
                if unique:
                    new_ids = (self._insert_records_sqlite if self._sqlite else self._insert_records_pg)(
                        cur, unique
                    )
                if pending_added:
                    cur.executemany(
                        self._insert_pending_sql,
                        [
                            (p.span_id, p.trace_id, p.end_time, codec.encode_engine_span(p), owner)
                            for p in pending_added
                        ],
                    )
                if released:
                    cur.executemany(self._delete_pending_sql, [(sid,) for sid in released])
            finally:
                cur.close()
        return new_ids

    def _insert_records_sqlite(self, cur: Any, unique: dict[str, RequestRecord]) -> set[str]:
        # BEGIN IMMEDIATE holds SQLite's single write lock and `seq` is AUTOINCREMENT (always above
        # every seq ever used), so the rows with seq > max(seq) before our INSERT are exactly the
        # ones it added: one rowid range scan instead of an index probe per id before inserting.
        # (PostgreSQL uses INSERT .. RETURNING instead.)
        before = cur.execute("SELECT coalesce(max(seq), 0) FROM requests").fetchone()[0]
        cur.executemany(self._insert_records_sql, [codec.record_to_tuple(r) for r in unique.values()])
        if cur.rowcount == len(unique):
            return set(unique)
        return {row[0] for row in cur.execute("SELECT request_id FROM requests WHERE seq > ?", (before,))}

    def _insert_records_pg(self, cur: Any, unique: dict[str, RequestRecord]) -> set[str]:
        # INSERT .. ON CONFLICT DO NOTHING RETURNING: exact even with concurrent writers.
        new: set[str] = set()
        cur.executemany(
            self._insert_records_sql + " RETURNING request_id",
            [codec.record_to_tuple(r) for r in unique.values()],
            returning=True,
        )
        while True:
            new.update(row[0] for row in cur.fetchall())
            if not cur.nextset():
                break
        return new

    def load_pending(self, owner: str | None = None) -> list[EngineSpan]:
        """The pending engine spans held by `owner` (every one with None), oldest end time first."""
        pend = s.pending_spans
        q = sa.select(pend.c.payload).order_by(pend.c.end_time, pend.c.span_id)
        if owner is not None:
            q = q.where(pend.c.owner == owner)
        with self._read() as conn:
            return [codec.decode_engine_span(p) for p in conn.execute(q).scalars()]

    def claim_pending(
        self, owner: str, now: float, gone_after: float, *, limit: int, sweep: bool = False
    ) -> list[EngineSpan]:
        """In ONE transaction: record `owner`'s heartbeat (`now`), then take over (make `owner`
        theirs) at most `limit` pending rows of gone replicas, and return them, oldest end time
        first. Gone: a heartbeat older than `now - gone_after` (or set to 0 by `retire`), the
        owner '' (rows written without one), and with `sweep` an owner with no heartbeat row at
        all (one forgotten here while it was away). The heartbeat rows of gone replicas left
        without a pending row are deleted. `owner`'s own rows are never returned (`load_pending`).

        Replicas claiming at once never take the same row: on PostgreSQL both the gone replicas'
        heartbeat rows and their pending rows are locked `FOR UPDATE SKIP LOCKED` (a row another
        claim, or its owner's write, holds is left for later); SQLite runs one writer at a time."""
        rep, pend = s.ingest_replicas, s.pending_spans
        with self._write() as conn:
            self._heartbeat(conn, owner, now)
            stale = sa.select(rep.c.owner).where(rep.c.heartbeat_at < now - gone_after, rep.c.owner != owner)
            if not self._sqlite:
                stale = stale.with_for_update(skip_locked=True)
            beats = set(conn.execute(stale).scalars())
            gone = beats | {""}
            if sweep:
                q = sa.select(pend.c.owner).distinct().where(pend.c.owner.not_in(sa.select(rep.c.owner)))
                gone.update(conn.execute(q).scalars())
            gone.discard(owner)
            rows = sa.select(pend.c.span_id).where(pend.c.owner.in_(sorted(gone))).limit(limit)
            if not self._sqlite:
                rows = rows.with_for_update(skip_locked=True)
            taken = (
                conn.execute(
                    sa.update(pend)
                    .where(pend.c.span_id.in_(rows))
                    .values(owner=owner)
                    .returning(pend.c.payload)
                )
                .scalars()
                .all()
            )
            if beats:
                held = sa.select(pend.c.owner).where(pend.c.owner == rep.c.owner)
                conn.execute(sa.delete(rep).where(rep.c.owner.in_(sorted(beats)), ~sa.exists(held)))
        spans = [codec.decode_engine_span(p) for p in taken]
        spans.sort(key=lambda p: (p.end_time, p.span_id))
        return spans

    def live_replicas(self, now: float, gone_after: float) -> list[str]:
        """The ingest replicas whose heartbeat is at most `gone_after` old at `now`, sorted."""
        rep = s.ingest_replicas
        q = sa.select(rep.c.owner).where(rep.c.heartbeat_at >= now - gone_after).order_by(rep.c.owner)
        with self._read() as conn:
            return list(conn.execute(q).scalars())

    def retire(self, owner: str) -> None:
        """`owner` stops: its heartbeat is set to 0, so the next claim of another replica takes
        over its pending rows at once (instead of `gone_after` later)."""
        with self._write() as conn:
            self._heartbeat(conn, owner, 0.0)

    def clock(self) -> float | None:
        """PostgreSQL's clock (`clock_timestamp()`, epoch seconds); None on SQLite (one host)."""
        if self._sqlite:
            return None
        with self._read() as conn:
            return float(conn.execute(sa.select(sa.extract("epoch", sa.func.clock_timestamp()))).scalar_one())

    def _heartbeat(self, conn: Connection, owner: str, at: float) -> None:
        rep = s.ingest_replicas
        stmt = self._insert(rep).values(owner=owner, heartbeat_at=at)
        conn.execute(stmt.on_conflict_do_update(index_elements=[rep.c.owner], set_={"heartbeat_at": at}))

    def records_since(self, t: float, chunk_size: int = DEFAULT_CHUNK) -> Iterator[RequestRecord]:
        """Records with end_time >= t, ordered by (end_time, insertion), read in chunks of
        `chunk_size` (keyset pagination; no connection is held between chunks). Each chunk is its
        own read transaction: records committed while the stream is read may or may not appear
        (never twice)."""
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        req = s.requests
        last: tuple[float, int] | None = None
        while True:
            q = sa.select(req).where(req.c.end_time >= t)
            if last is not None:
                q = q.where(
                    sa.or_(
                        req.c.end_time > last[0],
                        sa.and_(req.c.end_time == last[0], req.c.seq > last[1]),
                    )
                )
            q = q.order_by(req.c.end_time, req.c.seq).limit(chunk_size)
            with self._read() as conn:
                rows = conn.execute(q).mappings().all()
            for row in rows:
                yield codec.row_to_record(row)
            if len(rows) < chunk_size:
                return
            last = (float(rows[-1]["end_time"]), int(rows[-1]["seq"]))

    def get_record(self, request_id: str) -> RequestRecord | None:
        q = sa.select(s.requests).where(s.requests.c.request_id == request_id)
        with self._read() as conn:
            row = conn.execute(q).mappings().first()
        return None if row is None else codec.row_to_record(row)

    def records_by_trace(self, trace_id: str) -> list[RequestRecord]:
        """Records of one trace (usually one), ordered by end time. A table scan since migration
        0003 dropped the trace_id index (it cost every insert a random-key index write): for tests
        and admin use, not for a request path."""
        q = (
            sa.select(s.requests)
            .where(s.requests.c.trace_id == trace_id)
            .order_by(s.requests.c.end_time, s.requests.c.seq)
        )
        with self._read() as conn:
            return [codec.row_to_record(r) for r in conn.execute(q).mappings()]

    def count_records(self) -> int:
        with self._read() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(s.requests)).scalar_one())

    # -- SLOs ------------------------------------------------------------------------------------
    def list_slos(self) -> list[SloSpec]:
        with self._read() as conn:
            return self._list_slos(conn)

    @staticmethod
    def _list_slos(conn: Connection) -> list[SloSpec]:
        q = sa.select(s.slos).order_by(s.slos.c.position)
        return [codec.row_to_slo(r) for r in conn.execute(q).mappings()]

    def replace_slos(self, specs: Sequence[SloSpec]) -> None:
        """PUT semantics: the stored set becomes exactly `specs` (order kept), atomically.
        Raises ValueError on duplicate names (nothing is changed)."""
        _check_unique(specs)
        with self._write() as conn:
            self._lock_slos(conn)
            self._replace_slos(conn, specs)

    def _lock_slos(self, conn: Connection) -> None:
        """PostgreSQL: writers of the SLO set take turns (two PUTs on two replicas stored the
        union of both sets, and replicas starting together both seeded it, one failing on a
        duplicate name). SQLite's `BEGIN IMMEDIATE` already serializes them."""
        if not self._sqlite:
            conn.exec_driver_sql("LOCK TABLE slos IN EXCLUSIVE MODE")

    def _replace_slos(self, conn: Connection, specs: Sequence[SloSpec]) -> None:
        conn.execute(sa.delete(s.slos))
        if specs:
            conn.execute(sa.insert(s.slos), [codec.slo_to_row(x, i) for i, x in enumerate(specs)])
        self._set_meta(conn, s.META_SLOS_INITIALIZED, "1")

    def slos_initialized(self) -> bool:
        """True once SLOs were written (seeded or PUT), even if the set is now empty."""
        with self._read() as conn:
            return self._get_meta(conn, s.META_SLOS_INITIALIZED) is not None

    def seed_slos(self, specs: Sequence[SloSpec]) -> list[SloSpec]:
        """First start: store `specs` (from the config) and return them. Later starts: the
        database wins; return what it holds and ignore `specs`."""
        _check_unique(specs)
        with self._write() as conn:
            self._lock_slos(conn)
            if self._get_meta(conn, s.META_SLOS_INITIALIZED) is not None:
                return self._list_slos(conn)
            self._replace_slos(conn, specs)
            return list(specs)

    # -- meta --------------------------------------------------------------------------------------
    @staticmethod
    def _get_meta(conn: Connection, key: str) -> str | None:
        q = sa.select(s.store_meta.c.value).where(s.store_meta.c.key == key)
        value: str | None = conn.execute(q).scalar_one_or_none()
        return value

    def _set_meta(self, conn: Connection, key: str, value: str) -> None:
        stmt = self._insert(s.store_meta).values(key=key, value=value)
        conn.execute(stmt.on_conflict_do_update(index_elements=["key"], set_={"value": stmt.excluded.value}))

    # -- rollups and retention -------------------------------------------------------------------
    def watermark(self) -> RollupWatermark | None:
        """The rollup watermark, None before the first rollup."""
        with self._read() as conn:
            return self._watermark(conn)

    def _watermark(self, conn: Connection) -> RollupWatermark | None:
        t = self._get_meta(conn, s.META_ROLLUP_TIME)
        q = self._get_meta(conn, s.META_ROLLUP_SEQ)
        if t is None or q is None:
            return None
        return RollupWatermark(float(t), int(q))

    def _minute_expr(self) -> sa.ColumnElement[Any]:
        end = s.requests.c.end_time
        if self._sqlite:  # CAST truncates toward zero on SQLite: a floor for epoch (positive) times
            return sa.cast(sa.cast(end / MINUTE, sa.Integer) * MINUTE, sa.Double)
        return sa.func.floor(end / MINUTE) * MINUTE

    def rollup(self, up_to: float) -> int:
        """Aggregate the records of complete minutes before `up_to` that are not rolled up yet
        into rollups_minute, plus late records (inserted after their minute was rolled up).
        Idempotent and resumable (watermark in store_meta, updated in the same transaction).
        Returns the number of records aggregated."""
        req = s.requests
        with self._write() as conn:
            if not self._sqlite:
                # Wait for in-flight inserts so no smaller seq commits after we read max(seq); and
                # self-exclusive, so the rollups of several replicas take turns (SHARE let two read
                # the same watermark and add the same records twice: 3200 rolled up of 2000).
                conn.exec_driver_sql("LOCK TABLE requests IN SHARE ROW EXCLUSIVE MODE")
            wm = self._watermark(conn)
            new_time = minute_floor(up_to) if wm is None else max(wm.time, minute_floor(up_to))
            max_seq = int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(req.c.seq), 0))).scalar_one())
            new_seq = max_seq if wm is None else max(wm.seq, max_seq)
            if wm is None:
                cond = sa.and_(req.c.seq <= new_seq, req.c.end_time < new_time)
            else:
                cond = sa.and_(
                    req.c.seq <= new_seq,
                    sa.or_(
                        sa.and_(req.c.end_time >= wm.time, req.c.end_time < new_time),
                        sa.and_(req.c.end_time < wm.time, req.c.seq > wm.seq),
                    ),
                )
            minute = self._minute_expr()
            sums = [sa.func.sum(req.c[name]).label(name) for name in s.SUM_COLUMNS]
            errors = sa.func.sum(sa.case((req.c.error, 1), else_=0)).label("errors")
            agg = (
                sa.select(
                    minute.label("minute_start"),
                    req.c.tenant,
                    req.c.model,
                    sa.func.count().label("requests"),
                    *sums,
                    errors,
                )
                .where(cond)
                .group_by(minute, req.c.tenant, req.c.model)
            )
            groups = [
                {
                    k: (float(v) if k == "minute_start" else v if isinstance(v, str) else int(v))
                    for k, v in row.items()
                }
                for row in conn.execute(agg).mappings()
            ]
            if groups:
                ins = self._insert(s.rollups_minute)
                add = ("requests", *s.SUM_COLUMNS, "errors")
                upsert = ins.on_conflict_do_update(
                    index_elements=["minute_start", "tenant", "model"],
                    set_={c: s.rollups_minute.c[c] + ins.excluded[c] for c in add},
                )
                conn.execute(upsert, groups)
            self._set_meta(conn, s.META_ROLLUP_TIME, repr(new_time))
            self._set_meta(conn, s.META_ROLLUP_SEQ, str(new_seq))
            return sum(int(g["requests"]) for g in groups)

    def rollups(self, since: float, until: float | None = None, tenant: str | None = None) -> list[RollupRow]:
        """Rollup rows with since <= minute_start < until, ordered by (minute, tenant, model)."""
        r = s.rollups_minute
        q = sa.select(r).where(r.c.minute_start >= since)
        if until is not None:
            q = q.where(r.c.minute_start < until)
        if tenant is not None:
            q = q.where(r.c.tenant == tenant)
        q = q.order_by(r.c.minute_start, r.c.tenant, r.c.model)
        with self._read() as conn:
            return [codec.row_to_rollup(x) for x in conn.execute(q).mappings()]

    def apply_retention(
        self,
        now: float,
        record_retention_s: int,
        rollup_retention_s: int,
        chunk_size: int = DEFAULT_CHUNK,
    ) -> tuple[int, int]:
        """Delete records that ended more than `record_retention_s` ago (rounded down to the
        minute) and rollups older than `rollup_retention_s`, in transactions of at most
        `chunk_size` rows. Records are rolled up first, so deleting never loses them from the
        rollups. Pending spans are never deleted. Returns (records deleted, rollups deleted)."""
        rec_cut = minute_floor(now - record_retention_s)
        self.rollup(rec_cut)
        wm = self.watermark()
        guard = wm.seq if wm is not None else 0
        req = s.requests
        n_rec = self._delete_chunked(
            req, req.c.seq, sa.and_(req.c.end_time < rec_cut, req.c.seq <= guard), chunk_size
        )
        r = s.rollups_minute
        n_roll = self._delete_chunked(r, r.c.id, r.c.minute_start < now - rollup_retention_s, chunk_size)
        return n_rec, n_roll

    def _delete_chunked(
        self, table: sa.Table, key: sa.Column[Any], cond: sa.ColumnElement[bool], chunk_size: int
    ) -> int:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        total = 0
        while True:
            with self._write() as conn:
                ids = sa.select(key).where(cond).order_by(key).limit(chunk_size)
                if not self._sqlite:  # replicas running retention at once take disjoint rows
                    ids = ids.with_for_update(skip_locked=True)  # (not a deadlock between them)
                n = conn.execute(sa.delete(table).where(key.in_(ids))).rowcount
            total += n
            if n < chunk_size:
                return total


def _check_unique(specs: Sequence[SloSpec]) -> None:
    names = [x.name for x in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate SLO names: {', '.join(dupes)}")
