"""Table definitions (SQLAlchemy Core). The migrations in `migrations/versions` create exactly this.

Times are float epoch seconds (DOUBLE PRECISION), as in `observer.model`: no timezone handling,
microsecond precision for any realistic date, and the same arithmetic on SQLite and PostgreSQL.
A test checks that the migrated database matches this metadata (alembic `compare_metadata`).
"""

from __future__ import annotations

import sqlalchemy as sa

# Integer primary keys: BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING)

# One row per served request (RequestRecord). `seq` is the insertion order; the rollup watermark
# and chunked deletes key on it.
requests = sa.Table(
    "requests",
    metadata,
    sa.Column("seq", BigId, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(256), nullable=False),
    sa.Column("trace_id", sa.String(64), nullable=False),
    sa.Column("tenant", sa.String(256), nullable=False),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("start_time", sa.Double(), nullable=False),
    sa.Column("end_time", sa.Double(), nullable=False),
    sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
    sa.Column("output_tokens", sa.BigInteger(), nullable=False),
    sa.Column("cached_hbm", sa.BigInteger(), nullable=False),
    sa.Column("cached_dram", sa.BigInteger(), nullable=False),
    sa.Column("cached_disk", sa.BigInteger(), nullable=False),
    sa.Column("cached_remote", sa.BigInteger(), nullable=False),
    sa.Column("cached_unknown", sa.BigInteger(), nullable=False),
    sa.Column("ttft", sa.Double(), nullable=True),
    sa.Column("itl", sa.Double(), nullable=True),
    sa.Column("e2e", sa.Double(), nullable=True),
    sa.Column("queue", sa.Double(), nullable=True),
    sa.Column("prefill", sa.Double(), nullable=True),
    sa.Column("kv_transfer", sa.Double(), nullable=True),
    sa.Column("decode", sa.Double(), nullable=True),
    sa.Column("error", sa.Boolean(), nullable=False),
    sa.Column("disaggregated", sa.Boolean(), nullable=False),
    sa.Column("prefill_pod", sa.String(256), nullable=True),
    sa.Column("decode_pod", sa.String(256), nullable=True),
    sa.Column("complete", sa.Boolean(), nullable=False),
    sa.UniqueConstraint("request_id"),
    sa.Index(None, "end_time"),
    sa.Index(None, "tenant", "end_time"),
    # No trace_id index (migration 0003): records_by_trace scans; it serves tests and admin only.
    sqlite_autoincrement=True,  # never reuse a seq after deletes: the rollup watermark relies on it
)

# P/D halves waiting for their partner, so a restart does not lose them. `owner` is the ingest
# replica that holds the half in memory (migration 0004; '' = written without one, e.g. before it):
# a replica restores its own rows and takes over those of gone replicas (`ingest_replicas`).
pending_spans = sa.Table(
    "pending_spans",
    metadata,
    sa.Column("span_id", sa.String(32), primary_key=True),
    sa.Column("trace_id", sa.String(64), nullable=False),
    sa.Column("end_time", sa.Double(), nullable=False),
    sa.Column("payload", sa.Text(), nullable=False),  # codec.encode_engine_span (JSON)
    sa.Column("owner", sa.String(256), nullable=False, server_default=""),
    sa.Index(None, "owner"),
)

# One row per ingest replica that holds pending halves: its heartbeat (its own clock, epoch s),
# written every housekeeping tick, and set to 0 when it stops. A replica whose heartbeat is older
# than `ingest.replica_gone_after_seconds` is gone: another takes over its pending rows.
ingest_replicas = sa.Table(
    "ingest_replicas",
    metadata,
    sa.Column("owner", sa.String(256), primary_key=True),
    sa.Column("heartbeat_at", sa.Double(), nullable=False),
)

slos = sa.Table(
    "slos",
    metadata,
    sa.Column("name", sa.String(120), primary_key=True),
    sa.Column("position", sa.Integer(), nullable=False),
    sa.Column("sli", sa.String(16), nullable=False),
    sa.Column("objective", sa.Double(), nullable=False),
    sa.Column("threshold_seconds", sa.Double(), nullable=True),
    sa.Column("tenants", sa.Text(), nullable=False),  # JSON array of strings
    sa.Column("description", sa.Text(), nullable=False),
)

# Per-minute, per-(tenant, model) counts and sums of the records that ended in that minute.
rollups_minute = sa.Table(
    "rollups_minute",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("minute_start", sa.Double(), nullable=False),
    sa.Column("tenant", sa.String(256), nullable=False),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("requests", sa.BigInteger(), nullable=False),
    sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
    sa.Column("output_tokens", sa.BigInteger(), nullable=False),
    sa.Column("cached_hbm", sa.BigInteger(), nullable=False),
    sa.Column("cached_dram", sa.BigInteger(), nullable=False),
    sa.Column("cached_disk", sa.BigInteger(), nullable=False),
    sa.Column("cached_remote", sa.BigInteger(), nullable=False),
    sa.Column("cached_unknown", sa.BigInteger(), nullable=False),
    sa.Column("errors", sa.BigInteger(), nullable=False),
    sa.Column("sketches", sa.LargeBinary(), nullable=True),  # opaque; written by a later release
    sa.UniqueConstraint("minute_start", "tenant", "model"),
)

# Small key/value state: the rollup watermark, "SLOs initialized".
store_meta = sa.Table(
    "store_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text(), nullable=False),
)

# The autoscaler's audit log (migration 0002): one row per pool per control tick. The JSON
# columns are text (portable); `autoscaler.audit` writes and reads them.
decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Double(), nullable=False),
    sa.Column("pool", sa.String(256), nullable=False),
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("reasons", sa.Text(), nullable=False),  # comma-separated reason codes
    sa.Column("changed", sa.Boolean(), nullable=False),  # some replica or weight change decided
    sa.Column("ok", sa.Boolean(), nullable=True),  # every API call succeeded; NULL when none made
    sa.Column("inputs", sa.Text(), nullable=False),  # JSON: demand, signals, roles, weights
    sa.Column("changes", sa.Text(), nullable=False),  # JSON: decisions (before/after), weights, holds
    sa.Column("outcomes", sa.Text(), nullable=False),  # JSON: each API call's outcome
    sa.Index(None, "at"),
    sa.Index(None, "pool", "at"),
)

CACHED_COLUMNS = ("cached_hbm", "cached_dram", "cached_disk", "cached_remote", "cached_unknown")
SUM_COLUMNS = ("prompt_tokens", "output_tokens", *CACHED_COLUMNS)

META_SLOS_INITIALIZED = "slos.initialized"
META_ROLLUP_TIME = "rollup.watermark_time"
META_ROLLUP_SEQ = "rollup.watermark_seq"
