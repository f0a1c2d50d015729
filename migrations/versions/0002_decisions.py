"""The autoscaler's audit log: decisions.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21

One row per pool per control tick: time, pool, mode, reason codes, whether a change was
decided, whether every API call succeeded, and the inputs, changes (before/after) and API
outcomes as JSON text. Spelled out (not `metadata.create_all`) so this revision never changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "decisions",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("pool", sa.String(256), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("reasons", sa.Text(), nullable=False),
        sa.Column("changed", sa.Boolean(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=True),
        sa.Column("inputs", sa.Text(), nullable=False),
        sa.Column("changes", sa.Text(), nullable=False),
        sa.Column("outcomes", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_decisions"),
    )
    op.create_index("ix_decisions_at", "decisions", ["at"])
    op.create_index("ix_decisions_pool_at", "decisions", ["pool", "at"])


def downgrade() -> None:
    op.drop_index("ix_decisions_pool_at", table_name="decisions")
    op.drop_index("ix_decisions_at", table_name="decisions")
    op.drop_table("decisions")
