"""The real service, driven in-process: the FastAPI app behind Starlette's TestClient.

OTLP bodies (encoded by the twin's emitter with the SDK's protobuf encoder) are POSTed to
`/v1/traces` and go through the same receiver, decode, P/D assembly, store commit and windows
as over the network; answers come from the same `/api/v1/*` handlers. The service runs on the
clock it is given (the twin's simulated clock for replays), so records land in its windows.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

with warnings.catch_warnings():  # starlette warns about httpx vs httpx2; harmless here
    # (its StarletteDeprecationWarning is a UserWarning, not a DeprecationWarning)
    warnings.filterwarnings("ignore", message=r".*starlette\.testclient.*deprecated")
    warnings.simplefilter("ignore", DeprecationWarning)
    from fastapi.testclient import TestClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from prometheus_client import CollectorRegistry

from observer import conventions as c
from observer.api.app import create_app
from observer.config import Settings
from observer.store import RecordStore
from observer.store.memory import MemoryStore


class DeliveryError(RuntimeError):
    """The service refused an OTLP body (status and message in the text)."""


class InProcessObserver:
    """`with InProcessObserver(settings, clock=...) as obs: obs.deliver(body); obs.tenants()`."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float],
        store: RecordStore | None = None,
        extra_routers: Sequence[Any] = (),
        on_startup: Sequence[Callable[[Any], Any]] = (),
    ) -> None:
        self.settings = settings
        self.registry = CollectorRegistry()
        self.app = create_app(
            settings,
            store or MemoryStore(),
            registry=self.registry,
            clock=clock,
            extra_routers=tuple(extra_routers),
            on_startup=tuple(on_startup),
        )
        self._client = TestClient(self.app)
        self._headers = {"content-type": c.CT_PROTOBUF}
        token = settings.server.auth_token
        if token:
            self._headers["authorization"] = f"Bearer {token}"
        self.bodies = 0
        self.rejected = 0
        self.bytes = 0

    def __enter__(self) -> InProcessObserver:
        self._client.__enter__()  # runs the lifespan: recover, start the writer
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._client.__exit__(et, ev, tb)

    def deliver(self, body: bytes) -> None:
        """POST one OTLP/protobuf body; raises DeliveryError unless 200 (partial rejects are counted)."""
        r = self._client.post(c.OTLP_TRACES_PATH, content=body, headers=self._headers)
        if r.status_code != 200:
            raise DeliveryError(f"/v1/traces answered {r.status_code}: {r.text[:200]}")
        resp = ExportTraceServiceResponse.FromString(r.content)
        self.rejected += resp.partial_success.rejected_spans
        self.bodies += 1
        self.bytes += len(body)

    def get(self, path: str, **params: Any) -> Any:
        r = self._client.get(path, params=params, headers=self._headers)
        if r.status_code != 200:
            raise DeliveryError(f"GET {path} answered {r.status_code}: {r.text[:200]}")
        return r.json()

    def tenants(self, window: int) -> list[dict[str, Any]]:
        """`GET /api/v1/tenants?window=...` entries."""
        out: list[dict[str, Any]] = self.get("/api/v1/tenants", window=window)["tenants"]
        return out

    def metrics_text(self) -> str:
        r = self._client.get("/metrics", headers=self._headers)
        text: str = r.text
        return text
