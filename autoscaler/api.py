"""`GET /api/v1/decisions`: the autoscaler's audit log, newest first (mounted by the CLI through
`create_app(extra_routers=...)`, behind the service's auth like every API route).

Query: `pool` (optional; matched as stored, like the API's other lookups: `clean_value`), `since`
(epoch seconds, finite, optional), `limit` (1..1000, default 100).
Each entry: `id`, `time`, `pool`, `mode`, `reasons`, `changed`, `ok`, `inputs` (demand,
signals, roles, weights), `replicas` / `weights` (before, after, reasons), `holds`, `outcomes`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from autoscaler.audit import DEFAULT_LIMIT, MAX_LIMIT, DecisionLog
from observer.ingest.sanitize import clean_value


def decisions_router(log: DecisionLog) -> APIRouter:
    router = APIRouter(prefix="/api/v1")

    @router.get("/decisions", tags=["autoscaler"], summary="Autoscaler decisions (audit log), newest first")
    def decisions(
        pool: str | None = Query(None, description="only this pool"),
        since: float | None = Query(
            None, allow_inf_nan=False, description="only decisions at or after this epoch time"
        ),
        limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    ) -> dict[str, Any]:
        # a NUL in `pool` made PostgreSQL refuse the query (a 500); now it matches nothing
        wanted = None if pool is None else clean_value(pool)
        return {"decisions": log.decisions(pool=wanted, since=since, limit=limit)}

    return router
