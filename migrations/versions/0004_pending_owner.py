"""Pending P/D halves get an owner; ingest replicas a heartbeat.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22

Several `serve` replicas share `pending_spans`. Without an owner, a replica that started restored
every row, the live halves of the other replicas too, and flushed them as incomplete; and the
halves of a replica that was gone waited until some replica restarted. Now each row names the
replica that holds it (`owner`), each replica keeps a heartbeat in `ingest_replicas`, a replica
restores only its own rows and takes over those of gone replicas (docs/ingest.md). Existing rows
get the owner '' (written without one): the first replica to start takes them over.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("pending_spans") as batch:
        batch.add_column(sa.Column("owner", sa.String(256), nullable=False, server_default=""))
        batch.create_index("ix_pending_spans_owner", ["owner"])
    op.create_table(
        "ingest_replicas",
        sa.Column("owner", sa.String(256), nullable=False),
        sa.Column("heartbeat_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("owner", name="pk_ingest_replicas"),
    )


def downgrade() -> None:
    op.drop_table("ingest_replicas")
    with op.batch_alter_table("pending_spans") as batch:
        batch.drop_index("ix_pending_spans_owner")
        batch.drop_column("owner")
