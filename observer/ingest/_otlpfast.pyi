"""Native decoder (observer/ingest/_otlpfast.c); use it through observer.ingest.fastpath."""

from typing import Any

K_VARINT: int
K_I64: int
K_I32: int
K_STRING: int
K_BYTES: int
K_MESSAGE: int
K_UNSUPPORTED: int

class Config:
    def __init__(self, spec: dict[str, Any], /) -> None: ...
    def decode(
        self, data: bytes, max_spans: int, /
    ) -> tuple[tuple[Any, ...], dict[str, Any], int] | None: ...
