"""Initial schema: requests, pending_spans, slos, rollups_minute, store_meta.

Revision ID: 0001
Revises:
Create Date: 2026-05-01

Spelled out (not `metadata.create_all`) so this revision never changes when schema.py does.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_CACHED = ("cached_hbm", "cached_dram", "cached_disk", "cached_remote", "cached_unknown")


def upgrade() -> None:
    op.create_table(
        "requests",
        sa.Column("seq", _BigId, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(256), nullable=False),
        sa.Column("trace_id", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(256), nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("start_time", sa.Double(), nullable=False),
        sa.Column("end_time", sa.Double(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in _CACHED),
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
        sa.PrimaryKeyConstraint("seq", name="pk_requests"),
        sa.UniqueConstraint("request_id", name="uq_requests_request_id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_requests_end_time", "requests", ["end_time"])
    op.create_index("ix_requests_tenant_end_time", "requests", ["tenant", "end_time"])
    op.create_index("ix_requests_trace_id", "requests", ["trace_id"])

    op.create_table(
        "pending_spans",
        sa.Column("span_id", sa.String(32), nullable=False),
        sa.Column("trace_id", sa.String(64), nullable=False),
        sa.Column("end_time", sa.Double(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("span_id", name="pk_pending_spans"),
    )

    op.create_table(
        "slos",
        sa.Column("name", sa.String(120), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("sli", sa.String(16), nullable=False),
        sa.Column("objective", sa.Double(), nullable=False),
        sa.Column("threshold_seconds", sa.Double(), nullable=True),
        sa.Column("tenants", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_slos"),
    )

    op.create_table(
        "rollups_minute",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("minute_start", sa.Double(), nullable=False),
        sa.Column("tenant", sa.String(256), nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in _CACHED),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("sketches", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_rollups_minute"),
        sa.UniqueConstraint(
            "minute_start", "tenant", "model", name="uq_rollups_minute_minute_start_tenant_model"
        ),
    )

    op.create_table(
        "store_meta",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_store_meta"),
    )


def downgrade() -> None:
    op.drop_table("store_meta")
    op.drop_table("rollups_minute")
    op.drop_table("slos")
    op.drop_table("pending_spans")
    op.drop_index("ix_requests_trace_id", table_name="requests")
    op.drop_index("ix_requests_tenant_end_time", table_name="requests")
    op.drop_index("ix_requests_end_time", table_name="requests")
    op.drop_table("requests")
