"""Span resolution (DESIGN §4): decoded `Span`s -> `EngineSpan`s + per-trace `TraceHints`. Pure.

Refinements (docs/ingest.md): token and latency attributes must be finite, non-negative
numbers (numeric strings are accepted) else the span is rejected with BAD_VALUE; cached tokens
above the prompt count are rejected with BAD_VALUE (an inconsistent producer, reported back
through partial_success rather than silently clamped); an engine span without a prompt token
count is rejected with MISSING_TOKENS. Rejected engine spans still give their trace hints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from observer import conventions as c
from observer.config import IngestSettings
from observer.model import Attributes, AttrValue, EngineSpan, RejectReason, Span, TierTokens, TraceHints

__all__ = ["ResolveConfig", "ResolvedBatch", "resolve_batch"]

MAX_ERRORS = 5


@dataclass(frozen=True, slots=True)
class ResolveConfig:
    """Which attribute keys mean what, in priority order."""

    engine_span_names: frozenset[str]
    engine_marker_attribute: str
    tenant_keys: tuple[str, ...]
    model_keys: tuple[str, ...]
    pod_keys: tuple[str, ...]
    role_keys: tuple[str, ...]
    input_token_keys: tuple[str, ...]
    output_token_keys: tuple[str, ...]
    cached_tokens_key: str = c.ATTR_CACHED_TOKENS
    tier_keys: tuple[tuple[str, str], ...] = tuple(c.ATTR_TIER_HIT.items())
    service_name_key: str = c.RES_SERVICE_NAME
    request_id_key: str = c.ATTR_REQUEST_ID
    error_type_key: str = c.ATTR_ERROR_TYPE
    disaggregation_key: str = c.ATTR_EPP_PD_USED
    sidecar_span_names: frozenset[str] = frozenset((c.SPAN_SIDECAR_PREFILL,))

    @classmethod
    def from_settings(cls, settings: IngestSettings) -> ResolveConfig:
        return cls(
            engine_span_names=frozenset(settings.engine_span_names),
            engine_marker_attribute=settings.engine_marker_attribute,
            tenant_keys=settings.tenant_keys,
            model_keys=settings.model_keys,
            pod_keys=settings.pod_keys,
            role_keys=settings.role_keys,
            input_token_keys=settings.input_token_keys,
            output_token_keys=settings.output_token_keys,
        )


@dataclass(frozen=True, slots=True)
class ResolvedBatch:
    engine: tuple[EngineSpan, ...]
    hints: Mapping[str, TraceHints]  # trace id -> evidence from this batch
    rejected: int
    errors: tuple[str, ...]
    ignored: int  # neither engine spans nor carrying hints


class _BadSpan(Exception):
    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason


def _first_str(keys: Sequence[str], *sources: Attributes) -> str | None:
    for src in sources:
        for key in keys:
            v = src.get(key)
            if v is None or isinstance(v, tuple):
                continue
            s = str(v).strip()
            if s:
                return s
    return None


def _number(key: str, v: AttrValue) -> float:
    if isinstance(v, bool) or v is None or isinstance(v, tuple):
        raise _BadSpan(RejectReason.BAD_VALUE, f"{key}={v!r}")
    try:
        x = float(v)
    except ValueError:
        raise _BadSpan(RejectReason.BAD_VALUE, f"{key}={v!r}") from None
    if not math.isfinite(x) or x < 0:
        raise _BadSpan(RejectReason.BAD_VALUE, f"{key}={v!r}")
    return x


def _tokens(attrs: Attributes, keys: Sequence[str]) -> int | None:
    for key in keys:
        if key in attrs:
            x = _number(key, attrs[key])
            if not x.is_integer():
                raise _BadSpan(RejectReason.BAD_VALUE, f"{key}={attrs[key]!r}")
            return int(x)
    return None


def _seconds(attrs: Attributes, key: str) -> float | None:
    if key not in attrs:
        return None
    return _number(key, attrs[key])


def _role(resource: Attributes, cfg: ResolveConfig) -> str | None:
    for key in cfg.role_keys:
        v = resource.get(key)
        if isinstance(v, str) and v.strip():
            role = v.strip().lower()
            return role if role in c.ROLES else None  # prefill-decode / other: aggregated
    service = resource.get(cfg.service_name_key)
    if isinstance(service, str):
        if service.endswith(c.SERVICE_SUFFIX_PREFILL):
            return c.ROLE_PREFILL
        if service.endswith(c.SERVICE_SUFFIX_DECODE):
            return c.ROLE_DECODE
    return None


def _cached(attrs: Attributes, cfg: ResolveConfig) -> TierTokens:
    tiers: dict[str, int] = {}
    for tier, key in cfg.tier_keys:
        n = _tokens(attrs, (key,))
        if n is not None:
            tiers[tier] = n
    total = _tokens(attrs, (cfg.cached_tokens_key,))
    known = sum(tiers.values())
    unknown = 0 if total is None else max(0, total - known)
    return TierTokens(
        hbm=tiers.get(c.TIER_HBM, 0),
        dram=tiers.get(c.TIER_DRAM, 0),
        disk=tiers.get(c.TIER_DISK, 0),
        remote=tiers.get(c.TIER_REMOTE, 0),
        unknown=unknown,
    )


def _engine(span: Span, cfg: ResolveConfig) -> EngineSpan:
    attrs, res = span.attributes, span.resource
    prompt = _tokens(attrs, cfg.input_token_keys)
    if prompt is None:
        raise _BadSpan(RejectReason.MISSING_TOKENS, f"none of {', '.join(cfg.input_token_keys)}")
    output = _tokens(attrs, cfg.output_token_keys) or 0
    cached = _cached(attrs, cfg)
    if cached.total > prompt:
        raise _BadSpan(RejectReason.BAD_VALUE, f"cached tokens {cached.total} > prompt tokens {prompt}")
    request_id = attrs.get(cfg.request_id_key)
    return EngineSpan(
        trace_id=span.trace_id,
        span_id=span.span_id,
        request_id=str(request_id) if request_id not in (None, "") else span.span_id,
        role=_role(res, cfg),
        tenant=_first_str(cfg.tenant_keys, attrs, res),
        model=_first_str(cfg.model_keys, attrs, res) or c.UNKNOWN_MODEL,
        pod=_first_str(cfg.pod_keys, res) or c.UNKNOWN_POD,
        start_time=span.start_time,
        end_time=span.end_time,
        prompt_tokens=prompt,
        output_tokens=output,
        cached=cached,
        queue=_seconds(attrs, c.ATTR_LAT_QUEUE),
        prefill=_seconds(attrs, c.ATTR_LAT_PREFILL),
        decode=_seconds(attrs, c.ATTR_LAT_DECODE),
        ttft=_seconds(attrs, c.ATTR_LAT_TTFT),
        e2e=_seconds(attrs, c.ATTR_LAT_E2E),
        error=span.status_code == c.OTLP_STATUS_ERROR or attrs.get(cfg.error_type_key) is not None,
    )


def _flag(v: AttrValue) -> bool | None:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("true", "false"):
        return v.strip().lower() == "true"
    return None


def merge_hints(a: TraceHints | None, b: TraceHints) -> TraceHints:
    """Combine evidence: first tenant/model wins; any `disaggregated=True` wins over False."""
    if a is None:
        return b
    if b.disaggregated is None:
        dis = a.disaggregated
    elif a.disaggregated is None:
        dis = b.disaggregated
    else:
        dis = a.disaggregated or b.disaggregated
    return TraceHints(a.trace_id, a.tenant or b.tenant, a.model or b.model, dis)


def _hints(span: Span, cfg: ResolveConfig, engine: bool) -> TraceHints | None:
    attrs, res = span.attributes, span.resource
    tenant = _first_str(cfg.tenant_keys, attrs, res)
    model = _first_str(cfg.model_keys, attrs, res)
    dis = _flag(attrs.get(cfg.disaggregation_key))
    if dis is None and span.name in cfg.sidecar_span_names:
        dis = True
    if engine and _role(res, cfg) == c.ROLE_PREFILL:
        dis = True  # a prefill-role engine span proves the trace is disaggregated
    if tenant is None and model is None and dis is None:
        return None
    return TraceHints(span.trace_id, tenant, model, dis)


def resolve_batch(spans: Sequence[Span], cfg: ResolveConfig) -> ResolvedBatch:
    """Classify and resolve one decoded batch. Never raises on bad span content."""
    engine: list[EngineSpan] = []
    hints: dict[str, TraceHints] = {}
    rejected = 0
    ignored = 0
    errors: list[str] = []
    names, marker = cfg.engine_span_names, cfg.engine_marker_attribute
    for span in spans:
        is_engine = span.name in names or marker in span.attributes
        if is_engine:
            try:
                engine.append(_engine(span, cfg))
            except _BadSpan as exc:
                rejected += 1
                if len(errors) < MAX_ERRORS:
                    errors.append(f"{exc} (span {span.span_id})")
        hint = _hints(span, cfg, is_engine)
        if hint is not None:
            hints[span.trace_id] = merge_hints(hints.get(span.trace_id), hint)
        elif not is_engine:
            ignored += 1
    return ResolvedBatch(tuple(engine), hints, rejected, tuple(errors), ignored)
