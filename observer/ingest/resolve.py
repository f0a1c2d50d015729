"""Span resolution (DESIGN §4): decoded `Span`s -> `EngineSpan`s + per-trace `TraceHints`. Pure.

Refinements (docs/ingest.md): token and latency attributes must be finite, non-negative
numbers (numeric strings are accepted), token counts integers of at most `MAX_TOKENS`, else the
span is rejected with BAD_VALUE; cached tokens
above the prompt count are rejected with BAD_VALUE (an inconsistent producer, reported back
through partial_success rather than silently clamped); an engine span without a prompt token
count is rejected with MISSING_TOKENS. Rejected engine spans still give their trace hints.
Strings (tenant, model, pod, request id) are made safe by `observer.ingest.sanitize` on every
path's result: NUL and lone surrogates replaced, long values cut with a hash suffix.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from observer import conventions as c
from observer.config import IngestSettings
from observer.ingest import fastpath, otlp
from observer.ingest.sanitize import clip, excerpt, sanitize
from observer.model import Attributes, AttrValue, EngineSpan, RejectReason, Span, TierTokens, TraceHints

__all__ = [
    "ResolveConfig",
    "ResolvedBatch",
    "Resolver",
    "decode_and_resolve",
    "reject_future",
    "resolve_batch",
]

MAX_ERRORS = 5
_MISSING: object = object()
_MAX_TOKENS = c.MAX_TOKENS  # a count above is BAD_VALUE (and every int up to it survives float())


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
    rewritten: int = 0  # string values made safe by observer.ingest.sanitize (NUL, surrogates, length)


class _BadSpan(Exception):
    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason


def _first_str(keys: Sequence[str], *sources: Attributes) -> str | None:
    for src in sources:
        for key in keys:
            v = src.get(key)
            if v is None:
                continue
            if type(v) is str:  # the common case first (hot path)
                s = v.strip()
            elif isinstance(v, tuple):
                continue
            else:
                s = str(v).strip()
            if s:
                return s
    return None


def _number(key: str, v: AttrValue) -> float:
    tv = type(v)
    if tv is float or tv is int:  # hot path: exact int/float (bool is not `int` by type identity)
        try:
            x = float(v)  # type: ignore[arg-type]
        except OverflowError:  # an int past a double (OTLP/JSON numbers are unbounded)
            raise _BadSpan(RejectReason.BAD_VALUE, f"{key}={excerpt(v)}") from None
        if x >= 0 and x != math.inf:  # NaN fails `>=`
            return x
        raise _BadSpan(RejectReason.BAD_VALUE, f"{key}={excerpt(v)}")
    if isinstance(v, bool) or v is None or isinstance(v, tuple):
        raise _BadSpan(RejectReason.BAD_VALUE, f"{key}={excerpt(v)}")
    try:
        x = float(v)
    except (ValueError, OverflowError):
        raise _BadSpan(RejectReason.BAD_VALUE, f"{key}={excerpt(v)}") from None
    if not math.isfinite(x) or x < 0:
        raise _BadSpan(RejectReason.BAD_VALUE, f"{key}={excerpt(v)}")
    return x


def _token(attrs: Attributes, key: str) -> int | None:
    v = attrs.get(key, _MISSING)
    if v is _MISSING:
        return None
    if type(v) is int and 0 <= v <= _MAX_TOKENS:  # hot path: same result as the float round trip
        return v
    x = _number(key, v)  # type: ignore[arg-type]
    if not x.is_integer():
        raise _BadSpan(RejectReason.BAD_VALUE, f"{key}={excerpt(v)}")
    if x > _MAX_TOKENS:  # past it the store's int64 sums can overflow
        raise _BadSpan(RejectReason.BAD_VALUE, f"{key}={excerpt(v)} is more than {_MAX_TOKENS}")
    return int(x)


def _tokens(attrs: Attributes, keys: Sequence[str]) -> int | None:
    for key in keys:
        if key in attrs:
            return _token(attrs, key)
    return None


def _seconds(attrs: Attributes, key: str) -> float | None:
    v = attrs.get(key, _MISSING)
    if v is _MISSING:
        return None
    if type(v) is float and 0.0 <= v < math.inf:  # hot path
        return v
    return _number(key, v)  # type: ignore[arg-type]


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
        n = _token(attrs, key)
        if n is not None:
            tiers[tier] = n
    total = _token(attrs, cfg.cached_tokens_key)
    known = sum(tiers.values())
    unknown = 0 if total is None else max(0, total - known)
    return TierTokens(
        hbm=tiers.get(c.TIER_HBM, 0),
        dram=tiers.get(c.TIER_DRAM, 0),
        disk=tiers.get(c.TIER_DISK, 0),
        remote=tiers.get(c.TIER_REMOTE, 0),
        unknown=unknown,
    )


@dataclass(frozen=True, slots=True)
class _ResFacts:
    """What one resource says, computed once per resource (not once per span)."""

    role: str | None
    pod: str
    tenant: str | None
    model: str | None


def _res_facts(res: Attributes, cfg: ResolveConfig) -> _ResFacts:
    return _ResFacts(
        role=_role(res, cfg),
        pod=_first_str(cfg.pod_keys, res) or c.UNKNOWN_POD,
        tenant=_first_str(cfg.tenant_keys, res),
        model=_first_str(cfg.model_keys, res),
    )


def _engine(  # noqa: PLR0917 - hot path: positional calls are cheaper
    trace_id: str,
    span_id: str,
    start_time: float,
    end_time: float,
    status_code: int,
    attrs: Attributes,
    rf: _ResFacts,
    tenant: str | None,
    model: str | None,
    cfg: ResolveConfig,
) -> EngineSpan:
    prompt = _tokens(attrs, cfg.input_token_keys)
    if prompt is None:
        raise _BadSpan(RejectReason.MISSING_TOKENS, f"none of {', '.join(cfg.input_token_keys)}")
    output = _tokens(attrs, cfg.output_token_keys) or 0
    cached = _cached(attrs, cfg)
    if cached.total > prompt:
        raise _BadSpan(RejectReason.BAD_VALUE, f"cached tokens {cached.total} > prompt tokens {prompt}")
    request_id = attrs.get(cfg.request_id_key)
    return EngineSpan(
        trace_id=trace_id,
        span_id=span_id,
        request_id=str(request_id) if request_id not in (None, "") else span_id,
        role=rf.role,
        tenant=tenant,
        model=model or c.UNKNOWN_MODEL,
        pod=rf.pod,
        start_time=start_time,
        end_time=end_time,
        prompt_tokens=prompt,
        output_tokens=output,
        cached=cached,
        queue=_seconds(attrs, c.ATTR_LAT_QUEUE),
        prefill=_seconds(attrs, c.ATTR_LAT_PREFILL),
        decode=_seconds(attrs, c.ATTR_LAT_DECODE),
        ttft=_seconds(attrs, c.ATTR_LAT_TTFT),
        e2e=_seconds(attrs, c.ATTR_LAT_E2E),
        error=status_code == c.OTLP_STATUS_ERROR or attrs.get(cfg.error_type_key) is not None,
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


def _hints(  # noqa: PLR0917 - hot path
    trace_id: str,
    name: str,
    attrs: Attributes,
    rf: _ResFacts,
    tenant: str | None,
    model: str | None,
    cfg: ResolveConfig,
    engine: bool,
) -> TraceHints | None:
    dis = _flag(attrs.get(cfg.disaggregation_key))
    if dis is None and name in cfg.sidecar_span_names:
        dis = True
    if engine and rf.role == c.ROLE_PREFILL:
        dis = True  # a prefill-role engine span proves the trace is disaggregated
    if tenant is None and model is None and dis is None:
        return None
    return TraceHints(trace_id, tenant, model, dis)


class Resolver:
    """Resolves spans one by one into a `ResolvedBatch` (the shared core of `resolve_batch` and
    `decode_and_resolve`). Resource facts are computed once per resource mapping."""

    __slots__ = ("_facts", "cfg", "engine", "errors", "hints", "ignored", "rejected")

    def __init__(self, cfg: ResolveConfig) -> None:
        self.cfg = cfg
        self.engine: list[EngineSpan] = []
        self.hints: dict[str, TraceHints] = {}
        self.rejected = 0
        self.ignored = 0
        self.errors: list[str] = []
        self._facts: dict[int, tuple[Attributes, _ResFacts]] = {}

    def facts(self, res: Attributes) -> _ResFacts:
        held = self._facts.get(id(res))
        if held is not None and held[0] is res:
            return held[1]
        rf = _res_facts(res, self.cfg)
        self._facts[id(res)] = (res, rf)  # keeps `res` alive, so its id is not reused meanwhile
        return rf

    def add(  # noqa: PLR0917 - hot path: called once per span
        self,
        trace_id: str,
        span_id: str,
        name: str,
        start_time: float,
        end_time: float,
        status_code: int,
        attrs: Attributes,
        rf: _ResFacts,
    ) -> None:
        cfg = self.cfg
        is_engine = name in cfg.engine_span_names or cfg.engine_marker_attribute in attrs
        # tenant / model: the span's own attributes first, then its resource (DESIGN §4)
        tenant = _first_str(cfg.tenant_keys, attrs) or rf.tenant
        model = _first_str(cfg.model_keys, attrs) or rf.model
        if is_engine:
            try:
                self.engine.append(
                    _engine(
                        trace_id, span_id, start_time, end_time, status_code, attrs, rf, tenant, model, cfg
                    )
                )
            except _BadSpan as exc:
                self.rejected += 1
                if len(self.errors) < MAX_ERRORS:
                    self.errors.append(clip(f"{exc} (span {span_id})", c.MAX_REASON_CHARS))
        hint = _hints(trace_id, name, attrs, rf, tenant, model, cfg, is_engine)
        if hint is not None:
            self.hints[trace_id] = merge_hints(self.hints.get(trace_id), hint)
        elif not is_engine:
            self.ignored += 1

    def result(self) -> ResolvedBatch:
        engine, hints, rewritten = sanitize(tuple(self.engine), self.hints)
        return ResolvedBatch(engine, hints, self.rejected, tuple(self.errors), self.ignored, rewritten)


def resolve_batch(spans: Sequence[Span], cfg: ResolveConfig) -> ResolvedBatch:
    """Classify and resolve one decoded batch. Never raises on bad span content."""
    r = Resolver(cfg)
    for span in spans:
        r.add(
            span.trace_id,
            span.span_id,
            span.name,
            span.start_time,
            span.end_time,
            span.status_code,
            span.attributes,
            r.facts(span.resource),
        )
    return r.result()


def decode_and_resolve(
    body: bytes,
    content_type: str | None,
    content_encoding: str | None,
    *,
    max_decompressed_bytes: int,
    max_spans: int,
    cfg: ResolveConfig,
    latest_end: float = math.inf,
) -> ResolvedBatch:
    """`decode_traces` then `resolve_batch`, same result and same errors, in one pass for protobuf.

    The protobuf path resolves straight from the parsed messages, without building an
    intermediate `Span` per span; JSON goes through `decode_traces` + `resolve_batch`. Decode
    rejects (bad ids/times) come first in `errors`, then resolution rejects, then the engine spans
    ending after `latest_end` (`reject_future`). A clean protobuf batch is decoded and resolved by
    the native extension when it is built (`observer.ingest.fastpath`, docs/ingest.md); any other
    batch takes the Python path whole."""
    if otlp.media_type(content_type) != c.CT_PROTOBUF:
        decoded = otlp.decode_traces(body, content_type, content_encoding, max_decompressed_bytes, max_spans)
        resolved = _merge_rejects(resolve_batch(decoded.spans, cfg), decoded.rejected, decoded.errors)
    else:
        data = otlp.unwrap_body(body, content_encoding, max_decompressed_bytes)
        fast = fastpath.decode(data, max_spans, cfg)
        if fast is not None:
            resolved = ResolvedBatch(fast[0], fast[1], 0, (), fast[2], fast[3])
        else:
            resolved = _resolve_protobuf(data, max_spans, cfg)
    return reject_future(resolved, latest_end)


def reject_future(resolved: ResolvedBatch, latest_end: float) -> ResolvedBatch:
    """Reject (FUTURE_TIME) the engine spans that end after `latest_end`: the receiver's clock plus
    `ingest.max_clock_skew_seconds`. Windows count a record that ends after `now` in the bucket of
    `now`, and a rebuild from the store (an SLO change, a restart) would count it there again, for
    as long as its end time lies ahead. Their traces' hints are kept."""
    if all(e.end_time <= latest_end for e in resolved.engine):
        return resolved
    kept: list[EngineSpan] = []
    errors = list(resolved.errors)
    late = 0
    for e in resolved.engine:
        if e.end_time <= latest_end:
            kept.append(e)
            continue
        late += 1
        if len(errors) < MAX_ERRORS:
            errors.append(f"{RejectReason.FUTURE_TIME.value} (span {e.span_id})")
    return ResolvedBatch(
        engine=tuple(kept),
        hints=resolved.hints,
        rejected=resolved.rejected + late,
        errors=tuple(errors),
        ignored=resolved.ignored,
        rewritten=resolved.rewritten,
    )


def _resolve_protobuf(data: bytes, max_spans: int, cfg: ResolveConfig) -> ResolvedBatch:
    """The Python path of a protobuf batch: resolved straight from the parsed messages."""
    rej = otlp.Rejects()
    r = Resolver(cfg)
    add, facts, attrs_of = r.add, r.facts, otlp.pb_attributes
    for tid, sid, _pid, sp, resource in otlp.pb_spans(data, max_spans, rej):
        add(
            tid.hex(),
            sid.hex(),
            sp.name,
            sp.start_time_unix_nano / 1e9,
            sp.end_time_unix_nano / 1e9,
            sp.status.code,
            attrs_of(sp.attributes),
            facts(resource),
        )
    return _merge_rejects(r.result(), rej.count, tuple(rej.errors))


def _merge_rejects(resolved: ResolvedBatch, rejected: int, errors: tuple[str, ...]) -> ResolvedBatch:
    if not rejected:
        return resolved
    return ResolvedBatch(
        engine=resolved.engine,
        hints=resolved.hints,
        rejected=resolved.rejected + rejected,
        errors=errors + resolved.errors,
        ignored=resolved.ignored,
        rewritten=resolved.rewritten,
    )
