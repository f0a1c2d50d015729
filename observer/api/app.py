"""The HTTP surface (DESIGN §4): OTLP ingest, the query API, /metrics, health. One port."""

import asyncio
import hmac
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from google.rpc import status_pb2
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import ClientDisconnect

from observer import conventions as c
from observer.api.metrics import AggregatorCollector
from observer.config import Settings, SloSettings
from observer.ingest.otlp import IngestError
from observer.ingest.sanitize import clean_value, clip, excerpt
from observer.model import RequestRecord
from observer.pipeline import Pipeline, Throttled
from observer.store import RecordStore

log = logging.getLogger(__name__)

# Routers contributed by later components (pools, decisions, dashboards, alerts), added by wiring.
ExtraRouters = Sequence[APIRouter]


class BodyRefused(Exception):
    """A request body refused before it was read whole: 413 (too large) or 429 (the server holds
    too many bodies already; retry later)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class InFlightBodies:
    """Bytes of request bodies being received and processed, over all requests: each chunk is
    taken from `limit` as it arrives and given back when its request is done, so slow or many
    uploads cannot hold more than `limit` bytes of bodies (the event loop is the only user)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, n: int) -> bool:
        if self.used + n > self.limit:
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        self.used -= n


@asynccontextmanager
async def read_body(request: Request, limit: int, inflight: InFlightBodies) -> AsyncIterator[bytes]:
    """The whole body, at most `limit` bytes (413 past it, as declared or as received), counted
    against `inflight` until the `async with` block ends (429 when that is full)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyRefused(413, f"request body larger than {limit} bytes")
    chunks: list[bytes] = []
    taken = 0
    try:
        async for chunk in _stream(request):
            if taken + len(chunk) > limit:
                raise BodyRefused(413, f"request body larger than {limit} bytes")
            if not inflight.take(len(chunk)):
                raise BodyRefused(
                    429, f"more than {inflight.limit} bytes of request bodies in flight, retry later"
                )
            taken += len(chunk)
            chunks.append(chunk)
        body = b"".join(chunks)
        chunks.clear()
        yield body
    finally:
        inflight.give(taken)


async def _stream(request: Request) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect:  # gone before its body was whole: nothing to answer
        raise BodyRefused(400, "client disconnected before the request body was complete") from None


class SloBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    slos: list[SloSettings] = Field(
        max_length=c.MAX_SLOS, description=f"the whole SLO set (PUT replaces it), at most {c.MAX_SLOS}"
    )


def validation_message(errors: Sequence[Any], prefix: str) -> str:
    """One line from the first error of a pydantic / FastAPI validation, `<prefix><field>: <msg>`,
    never quoting the value (which may be large): `invalid SLO set: slos.0.objective: Input should
    be less than 1`, `invalid query parameter window: Input should be a valid integer, ...`."""
    err = errors[0] if errors else {}
    loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body"))
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    return clip(f"{prefix}{loc}: {msg}" if loc else f"{prefix.rstrip(': ')}: {msg}", c.MAX_REASON_CHARS)


async def _request_validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 for a bad query or path parameter, with one line naming it (FastAPI's default answer is
    a list of error objects that echoes the value)."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    where = str(errors[0].get("loc", ("",))[0]) if errors else ""
    prefix = {"query": "invalid query parameter ", "path": "invalid path parameter "}.get(
        where, "invalid request: "
    )
    return JSONResponse({"detail": validation_message(errors, prefix)}, status_code=422)


def _slo_json(s: SloSettings) -> dict[str, Any]:
    return s.model_dump(mode="json")


def record_json(r: RequestRecord) -> dict[str, Any]:
    """Phase breakdown of one request, for GET /api/v1/requests/{id}."""
    return {
        "request_id": r.request_id,
        "trace_id": r.trace_id,
        "tenant": r.tenant,
        "model": r.model,
        "start_time": r.start_time,
        "end_time": r.end_time,
        "disaggregated": r.disaggregated,
        "complete": r.complete,
        "error": r.error,
        "prefill_pod": r.prefill_pod,
        "decode_pod": r.decode_pod,
        "prompt_tokens": r.prompt_tokens,
        "output_tokens": r.output_tokens,
        "cached_tokens": r.cached_tokens,
        "cached_tokens_by_tier": r.cached.as_dict(),
        "prefix_hit_rate": (r.cached_tokens / r.prompt_tokens) if r.prompt_tokens else None,
        "ttft_seconds": r.ttft,
        "itl_seconds": r.itl,
        "e2e_seconds": r.e2e,
        "phases_seconds": {p: r.phase(p) for p in c.PHASES},
    }


def create_app(
    settings: Settings,
    store: RecordStore,
    *,
    registry: CollectorRegistry | None = None,
    clock: Callable[[], float] | None = None,
    extra_routers: ExtraRouters = (),
    on_startup: Sequence[Callable[[Pipeline], Any]] = (),
) -> FastAPI:
    """Build the app. The store is injected (SQL in production, in-memory in core tests)."""
    registry = registry or CollectorRegistry()
    kwargs: dict[str, Any] = {"clock": clock} if clock is not None else {}
    pipeline = Pipeline(settings=settings, store=store, registry=registry, **kwargs)
    registry.register(AggregatorCollector(pipeline))
    token = settings.server.auth_token

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await pipeline.start()
        for hook in on_startup:
            hook(pipeline)
        log.info("ready", extra={"port": settings.server.port})
        try:
            yield
        finally:
            await pipeline.stop()
            store.close()
            log.info("stopped")

    # With a token, the OpenAPI document needs it too, and the interactive pages (which fetch
    # it without one) are not served.
    open_docs = token is None
    app = FastAPI(
        title="pd-observer",
        version="0.1.0",
        summary="Per-tenant cache, latency and SLO signals for disaggregated LLM serving",
        lifespan=lifespan,
        docs_url="/docs" if open_docs else None,
        redoc_url="/redoc" if open_docs else None,
        openapi_url="/openapi.json" if open_docs else None,
    )
    app.state.pipeline = pipeline
    app.state.registry = registry
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    inflight = InFlightBodies(settings.server.max_inflight_body_bytes)

    def retry_after(status: int) -> dict[str, str] | None:
        """The Retry-After header of a retryable answer (429, 503), none for the others."""
        return {"Retry-After": str(settings.server.retry_after_seconds)} if status in (429, 503) else None

    bearer_challenge = {"WWW-Authenticate": "Bearer"}

    def authorized(request: Request) -> bool:
        if token is None:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.encode(), token.encode())

    def authorize(request: Request) -> None:
        if not authorized(request):
            raise HTTPException(401, "missing or invalid bearer token", headers=bearer_challenge)

    auth = [Depends(authorize)]

    def window_param(
        window: Annotated[int, Query(ge=1, description="window length in seconds")] = 300,
    ) -> int:
        max_w = settings.aggregation.max_window_seconds
        if window > max_w:
            raise HTTPException(400, f"window must be <= {max_w} seconds (the longest configured window)")
        return window

    # ------------------------------------------------------------------ OTLP ingest
    # Authorized in the handler, not by the `auth` dependency: an OTLP client gets its 401 as an
    # OTLP error, a google.rpc.Status in the request's own encoding, like every other refusal.
    @app.post(c.OTLP_TRACES_PATH, tags=["ingest"], summary="OTLP/HTTP traces receiver")
    async def receive_traces(request: Request) -> Response:
        ctype = request.headers.get("content-type")
        cenc = request.headers.get("content-encoding")
        if not authorized(request):  # counted: an exporter with a wrong token shows on /metrics
            pipeline.metrics.batches.labels("unauthorized").inc()
            return _otlp_error(401, "missing or invalid bearer token", ctype, bearer_challenge)
        try:
            async with read_body(request, settings.server.max_body_bytes, inflight) as body:
                outcome = await pipeline.ingest(body, ctype, cenc)
        except BodyRefused as exc:
            label = {413: "too_large", 429: "throttled"}.get(exc.status, "bad_request")
            pipeline.metrics.batches.labels(label).inc()
            return _otlp_error(exc.status, str(exc), ctype, retry_after(exc.status))
        except IngestError as exc:
            return _otlp_error(exc.status, str(exc), ctype)
        except Throttled as exc:
            return _otlp_error(exc.status, str(exc), ctype, retry_after(exc.status))
        return Response(outcome.body, status_code=outcome.status, media_type=outcome.content_type)

    # ------------------------------------------------------------------ query API
    api = APIRouter(prefix="/api/v1", dependencies=auth)

    # Lookups take a value as the client sent it or as it was stored (`clean_value`: NUL and lone
    # surrogates replaced, past 256 characters cut with a hash), and may hold a `/` (`:path`).
    @api.get("/tenants", tags=["tenants"], summary="Per-tenant hit rates, tiers, latency and SLOs")
    def tenants(
        window: Annotated[int, Depends(window_param)],
        model: Annotated[str | None, Query(description="only this model")] = None,
    ) -> dict[str, Any]:
        now = pipeline.clock()
        with pipeline.lock:
            stats = pipeline.aggregator.tenants(window, now, model=_lookup(model))
        return {"window_seconds": window, "tenants": [_with_extras(pipeline, s.as_api_dict()) for s in stats]}

    @api.get("/tenants/{tenant:path}", tags=["tenants"], summary="One tenant's entry")
    def tenant(
        tenant: str,
        window: Annotated[int, Depends(window_param)],
        model: Annotated[str | None, Query()] = None,
    ) -> dict[str, Any]:
        now = pipeline.clock()
        with pipeline.lock:
            stats = pipeline.aggregator.tenant(clean_value(tenant), window, now, model=_lookup(model))
        if stats is None:
            raise HTTPException(404, f"no requests from tenant {excerpt(tenant)} in the last {window} s")
        return {"window_seconds": window, **_with_extras(pipeline, stats.as_api_dict())}

    @api.get("/requests/{request_id:path}", tags=["requests"], summary="Phase breakdown of one request")
    def request_detail(request_id: str) -> dict[str, Any]:
        rec = pipeline.get_record(clean_value(request_id))  # PostgreSQL refuses a NUL: was a 500
        if rec is None:
            raise HTTPException(404, f"request {excerpt(request_id)} not found (or past retention)")
        return record_json(rec)

    @api.get("/slos", tags=["slos"], summary="The SLO set")
    def get_slos() -> dict[str, Any]:
        specs = pipeline.slos()
        return {"slos": [_slo_json(_to_settings(s)) for s in specs]}

    @api.put("/slos", tags=["slos"], summary="Replace the SLO set; counters rebuilt from stored records")
    async def put_slos(request: Request) -> JSONResponse:
        try:
            async with read_body(request, c.MAX_API_BODY_BYTES, inflight) as raw:
                body = SloBody.model_validate_json(raw)
        except BodyRefused as exc:
            raise HTTPException(exc.status, str(exc), headers=retry_after(exc.status)) from None
        except ValidationError as exc:
            raise HTTPException(422, validation_message(exc.errors(), "invalid SLO set: ")) from None
        names = [s.name for s in body.slos]
        if len(set(names)) != len(names):
            raise HTTPException(422, "invalid SLO set: duplicate SLO names")
        specs = [s.to_spec() for s in body.slos]
        await asyncio.get_running_loop().run_in_executor(None, pipeline.replace_slos, specs)
        return JSONResponse({"slos": [_slo_json(s) for s in body.slos]})

    app.include_router(api)
    for router in extra_routers:
        app.include_router(router, dependencies=auth)

    if not open_docs:

        @app.get("/openapi.json", dependencies=auth, include_in_schema=False)
        def openapi() -> dict[str, Any]:
            return app.openapi()

    # ------------------------------------------------------------------ ops
    @app.get("/metrics", dependencies=auth, tags=["ops"], summary="Prometheus exposition")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", tags=["ops"], summary="Liveness")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], summary="Readiness: recovered from the store and accepting data")
    def readyz(request: Request) -> JSONResponse:
        # 503 while starting, stopping, or while the store fails or hangs (docs/configuration.md).
        # Open for the probes: the store error's text (hosts, database names) only with the token.
        ready, body = pipeline.readiness()
        if "detail" in body and not authorized(request):
            body = {k: v for k, v in body.items() if k != "detail"}
        return JSONResponse(body, status_code=200 if ready else 503)

    return app


def _lookup(value: str | None) -> str | None:
    return None if value is None else clean_value(value)


def _with_extras(pipeline: Pipeline, entry: dict[str, Any]) -> dict[str, Any]:
    """Merge the keys contributed by components (`Pipeline.tenant_extras`) into a tenant entry."""
    for extra in pipeline.tenant_extras:
        entry.update(extra(entry[c.API_TENANT]))
    return entry


def _to_settings(spec: Any) -> SloSettings:
    return SloSettings(
        name=spec.name,
        sli=spec.sli,
        objective=spec.objective,
        threshold_seconds=spec.threshold_seconds,
        tenants=tuple(spec.tenants),
        description=spec.description,
    )


def _otlp_error(
    status: int, message: str, content_type: str | None, headers: Mapping[str, str] | None = None
) -> Response:
    """OTLP error responses carry a google.rpc.Status-like body in the request's encoding. The
    message may quote client text (an exception about a value): cut to MAX_ERROR_MESSAGE_CHARS."""
    message = clip(message, c.MAX_ERROR_MESSAGE_CHARS)
    if content_type and content_type.split(";")[0].strip().lower() == c.CT_JSON:
        return Response(
            json.dumps({"code": status, "message": message}),
            status_code=status,
            media_type=c.CT_JSON,
            headers=dict(headers or {}),
        )
    body = status_pb2.Status(code=status, message=message).SerializeToString()
    return Response(body, status_code=status, media_type=c.CT_PROTOBUF, headers=dict(headers or {}))
