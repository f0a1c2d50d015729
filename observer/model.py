"""Core value types shared by ingest, aggregation, store and API. Frozen, no I/O.

Times are float seconds since the Unix epoch (wall clock of the spans); durations are float
seconds. A `None` duration means "not known" (never zero-filled).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeAlias

from observer import conventions as c

AttrValue: TypeAlias = str | bool | int | float | tuple["AttrValue", ...] | None
Attributes: TypeAlias = Mapping[str, AttrValue]


@dataclass(frozen=True, slots=True)
class TierTokens:
    """Cached prompt tokens split by the KV tier they were served from."""

    hbm: int = 0
    dram: int = 0
    disk: int = 0
    remote: int = 0
    unknown: int = 0

    @property
    def total(self) -> int:
        return self.hbm + self.dram + self.disk + self.remote + self.unknown

    def as_dict(self) -> dict[str, int]:
        return {
            c.TIER_HBM: self.hbm,
            c.TIER_DRAM: self.dram,
            c.TIER_DISK: self.disk,
            c.TIER_REMOTE: self.remote,
            c.TIER_UNKNOWN: self.unknown,
        }

    def __add__(self, other: TierTokens) -> TierTokens:
        return TierTokens(
            self.hbm + other.hbm,
            self.dram + other.dram,
            self.disk + other.disk,
            self.remote + other.remote,
            self.unknown + other.unknown,
        )


@dataclass(frozen=True, slots=True)
class Span:
    """One decoded OTLP span, flattened with its resource attributes."""

    trace_id: str  # 32 lowercase hex
    span_id: str  # 16 lowercase hex
    parent_span_id: str  # "" when root
    name: str
    kind: int  # OTLP SpanKind enum value
    start_time: float  # epoch seconds
    end_time: float  # epoch seconds
    status_code: int  # OTLP StatusCode: 0 unset, 1 ok, 2 error
    attributes: Attributes
    resource: Attributes


class RejectReason(StrEnum):
    """Why a span could not be used (reported in OTLP partial_success)."""

    BAD_IDS = "invalid trace or span id"
    BAD_TIMES = "end time before start time"
    MISSING_TOKENS = "engine span without prompt token count"
    BAD_VALUE = "attribute with an invalid value"
    FUTURE_TIME = "engine span ending after the receiver's clock plus ingest.max_clock_skew_seconds"


@dataclass(frozen=True, slots=True)
class EngineSpan:
    """A vLLM engine span, resolved to what pd-observer needs (DESIGN §4 span resolution)."""

    trace_id: str
    span_id: str
    request_id: str  # gen_ai.request.id, else the span id
    role: str | None  # conventions.ROLE_PREFILL | ROLE_DECODE | None (aggregated serving)
    tenant: str | None  # None when not on the span or its resource (resolved at trace level)
    model: str
    pod: str
    start_time: float
    end_time: float
    prompt_tokens: int
    output_tokens: int
    cached: TierTokens
    queue: float | None
    prefill: float | None
    decode: float | None
    ttft: float | None
    e2e: float | None
    error: bool


@dataclass(frozen=True, slots=True)
class TraceHints:
    """Non-engine evidence gathered from the other spans of one trace."""

    trace_id: str
    tenant: str | None = None
    model: str | None = None
    disaggregated: bool | None = None  # from the EPP / sidecar spans when present


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One served request, after P/D stitching. Never counted twice (key: request_id)."""

    request_id: str
    trace_id: str
    tenant: str
    model: str
    start_time: float
    end_time: float  # windows are over end times
    prompt_tokens: int
    output_tokens: int
    cached: TierTokens
    ttft: float | None
    itl: float | None  # mean inter-token latency of the request
    e2e: float | None
    queue: float | None
    prefill: float | None
    kv_transfer: float | None
    decode: float | None
    error: bool = False
    disaggregated: bool = False
    prefill_pod: str | None = None
    decode_pod: str | None = None
    complete: bool = True  # False: a P/D trace flushed by timeout without its partner

    @property
    def cached_tokens(self) -> int:
        return self.cached.total

    def phase(self, name: str) -> float | None:
        value: float | None = getattr(self, name)
        return value

    def sli(self, name: str) -> float | None:
        """Latency SLI value by name (conventions.SLI_TTFT/ITL/E2E)."""
        value: float | None = getattr(self, name)
        return value


class SloKind(StrEnum):
    LATENCY = "latency"
    AVAILABILITY = "availability"


@dataclass(frozen=True, slots=True)
class SloSpec:
    """One SLO. A latency SLO judges each request at exactly `threshold_seconds` (value <= threshold
    is good); the availability SLO judges `error`. `tenants` empty means every tenant."""

    name: str
    sli: str  # conventions.SLI_TTFT | SLI_ITL | SLI_E2E | SLI_ERROR
    objective: float  # e.g. 0.99
    threshold_seconds: float | None = None
    tenants: tuple[str, ...] = ()
    description: str = ""

    @property
    def kind(self) -> SloKind:
        return SloKind.AVAILABILITY if self.sli == c.SLI_ERROR else SloKind.LATENCY

    def applies_to(self, tenant: str) -> bool:
        return not self.tenants or tenant in self.tenants
