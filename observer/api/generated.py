"""`GET /api/v1/alerts/rules` and `GET /api/v1/dashboards[/{uid}]`: what the upper layers (alerts,
dashboards) generate, served from the service's stored SLO set (`Pipeline.slos`, the set
`PUT /api/v1/slos` edits), not from the config's `slos:` (which only seeds the store).

observer may not import alerts or dashboards (DESIGN §3 layering): the composition root
(`observer.cli.extra_routers`) injects the generators.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request

from observer.config import ConfigError
from observer.model import SloSpec
from observer.pipeline import Pipeline

RulesFor = Callable[[Sequence[SloSpec]], dict[str, Any]]
IndexFor = Callable[[Sequence[SloSpec]], list[dict[str, Any]]]
DashboardFor = Callable[[str, Sequence[SloSpec]], dict[str, Any] | None]


def current_pipeline(request: Request) -> Pipeline:
    """FastAPI dependency: the pipeline of the app the router is mounted on (`create_app`)."""
    pipeline: Pipeline = request.app.state.pipeline
    return pipeline


PipelineDep = Annotated[Pipeline, Depends(current_pipeline)]


def generated_router(rules: RulesFor, index: IndexFor, dashboard: DashboardFor) -> APIRouter:
    """The routes; each request generates from the SLO set stored at that moment (one store read)."""
    router = APIRouter(prefix="/api/v1")

    @router.get(
        "/alerts/rules", tags=["alerts"], summary="Generated Prometheus rules and Alertmanager routing"
    )
    def alert_rules(pipeline: PipelineDep) -> dict[str, Any]:
        try:
            return rules(pipeline.slos())
        except ConfigError as exc:  # e.g. a stored SLO's tenant that is not a valid label value
            raise HTTPException(409, f"no alert rules for the stored SLO set: {exc}") from None

    @router.get("/dashboards", tags=["dashboards"], summary="The generated Grafana dashboards")
    def dashboards(pipeline: PipelineDep) -> dict[str, Any]:
        return {"dashboards": index(pipeline.slos())}

    @router.get("/dashboards/{uid}", tags=["dashboards"], summary="One dashboard's Grafana JSON model")
    def dashboard_model(uid: str, pipeline: PipelineDep) -> dict[str, Any]:
        model = dashboard(uid, pipeline.slos())
        if model is None:
            raise HTTPException(404, f"no dashboard with uid {uid!r}")
        return model

    return router
