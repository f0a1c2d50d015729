"""Drop the requests.trace_id index (write path, issue #2).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21

Every insert into `requests` paid a random-key B-tree insert for `trace_id` (128-bit random ids):
about half of the insert cost measured on SQLite. Only tests and admin use
`Store.records_by_trace`, which now scans (see docs/storage.md). The downgrade recreates it.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_requests_trace_id", table_name="requests")


def downgrade() -> None:
    op.create_index("ix_requests_trace_id", "requests", ["trace_id"])
