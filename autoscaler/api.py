"""`GET /api/v1/decisions`: the autoscaler's audit log, newest first (mounted by the CLI through
`create_app(extra_routers=...)`, behind the service's auth like every API route).

Query: `pool` (optional), `since` (epoch seconds, optional), `limit` (1..1000, default 100).
Each entry: `id`, `time`, `pool`, `mode`, `reasons`, `changed`, `ok`, `inputs` (demand,
signals, roles, weights), `replicas` / `weights` (before, after, reasons), `holds`, `outcomes`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from autoscaler.audit import DEFAULT_LIMIT, MAX_LIMIT, DecisionLog


def decisions_router(log: DecisionLog) -> APIRouter:
    router = APIRouter(prefix="/api/v1")

    @router.get("/decisions", tags=["autoscaler"], summary="Autoscaler decisions (audit log), newest first")
    def decisions(
        pool: str | None = Query(None, description="only this pool"),
        since: float | None = Query(None, description="only decisions at or after this epoch time"),
        limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    ) -> dict[str, Any]:
        return {"decisions": log.decisions(pool=pool, since=since, limit=limit)}

    return router
