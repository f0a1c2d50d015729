"""Native protobuf decode + resolve for clean batches (`observer.ingest._otlpfast`, a C extension).

`decode(data, max_spans, cfg)` gives what the Python protobuf path of `decode_and_resolve`
gives (engine spans, hints, ignored count, rewritten count: its strings go through the same
`observer.ingest.sanitize` as the Python path's; a clean batch has no rejects), or None when the
batch is not clean (malformed wire data, a span the Python path would reject, a value of an
unexpected type on a key that matters, too many spans, ...): the caller then runs the Python
path on the whole batch, so errors and partial-success counts are the Python path's. Also
None when the extension is not built (no compiler at install time), when it is switched off
(`PD_OBSERVER_NATIVE_DECODE=0`) or for a `ResolveConfig` it cannot express; `path(cfg)` says
which path runs, and the first use logs it.

The C side gets everything it needs from here, once per `ResolveConfig`: the attribute keys in
priority order, span names, roles, the slot layout of the result dataclasses (read from
`dataclasses.fields`, so a model change disables the fast path instead of misassigning), and
the wire schema of every message (from the installed protobuf descriptors).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeAlias

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Status
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

from observer import conventions as c
from observer.ingest.sanitize import sanitize
from observer.model import EngineSpan, TierTokens, TraceHints

if TYPE_CHECKING:
    from observer.ingest.resolve import ResolveConfig

__all__ = ["DISABLE_ENV", "Resolved", "compiled", "decode", "path"]

# (engine spans in span order, trace id -> hints, ignored span count, rewritten string count):
# a ResolvedBatch without rejects
Resolved: TypeAlias = tuple[tuple[EngineSpan, ...], dict[str, TraceHints], int, int]

log = logging.getLogger(__name__)

DISABLE_ENV = c.ENV_PREFIX + "NATIVE_DECODE"  # "0" forces the Python path (default: native when built)

# The slots the C code fills, in its order (observer/ingest/_otlpfast.c ES_*/TT_*/TH_*).
ENGINE_SLOTS = (
    "trace_id", "span_id", "request_id", "role", "tenant", "model", "pod", "start_time", "end_time",
    "prompt_tokens", "output_tokens", "cached", "queue", "prefill", "decode", "ttft", "e2e", "error",
)  # fmt: skip
TIER_SLOTS = ("hbm", "dram", "disk", "remote", "unknown")
HINTS_SLOTS = ("trace_id", "tenant", "model", "disaggregated")
TIER_FIELDS = {c.TIER_HBM: 0, c.TIER_DRAM: 1, c.TIER_DISK: 2, c.TIER_REMOTE: 3}
# Messages the C code decodes itself, in its order (M_REQUEST ... M_ANY_VALUE).
MESSAGES = (
    ExportTraceServiceRequest,
    ResourceSpans,
    Resource,
    ScopeSpans,
    PbSpan,
    Status,
    KeyValue,
    AnyValue,
)


def _load() -> ModuleType | None:
    try:
        from observer.ingest import _otlpfast
    except ImportError:
        return None
    return _otlpfast


_native = _load()


def _slots(cls: type, order: tuple[str, ...]) -> tuple[Any, ...]:
    names = tuple(f.name for f in dataclasses.fields(cls))
    if sorted(names) != sorted(order):
        raise ValueError(f"{cls.__name__} fields {names} do not match the native layout {order}")
    return tuple(cls.__dict__[name] for name in order)


def _schema(mod: ModuleType) -> list[list[tuple[int, int, int]]]:
    """(number, kind, sub-message index) of every field of every message reachable from the request."""
    F: Any = PbSpan.DESCRIPTOR.fields_by_name["name"]  # a FieldDescriptor: its TYPE_* constants

    scalar = {
        F.TYPE_DOUBLE: mod.K_I64, F.TYPE_FIXED64: mod.K_I64, F.TYPE_SFIXED64: mod.K_I64,
        F.TYPE_FLOAT: mod.K_I32, F.TYPE_FIXED32: mod.K_I32, F.TYPE_SFIXED32: mod.K_I32,
        F.TYPE_INT64: mod.K_VARINT, F.TYPE_UINT64: mod.K_VARINT, F.TYPE_INT32: mod.K_VARINT,
        F.TYPE_BOOL: mod.K_VARINT, F.TYPE_UINT32: mod.K_VARINT, F.TYPE_ENUM: mod.K_VARINT,
        F.TYPE_SINT32: mod.K_VARINT, F.TYPE_SINT64: mod.K_VARINT,
        F.TYPE_STRING: mod.K_STRING, F.TYPE_BYTES: mod.K_BYTES,
    }  # fmt: skip
    order = [m.DESCRIPTOR for m in MESSAGES]
    index = {d.full_name: i for i, d in enumerate(order)}
    out: list[list[tuple[int, int, int]]] = []
    i = 0
    while i < len(order):
        fields: list[tuple[int, int, int]] = []
        for f in order[i].fields:
            repeated = f.is_repeated if hasattr(f, "is_repeated") else f.label == F.LABEL_REPEATED
            if f.type == F.TYPE_MESSAGE:
                sub = f.message_type
                if sub.full_name not in index:
                    index[sub.full_name] = len(order)
                    order.append(sub)
                fields.append((f.number, mod.K_MESSAGE, index[sub.full_name]))
            elif f.type in scalar and not (repeated and f.type not in (F.TYPE_STRING, F.TYPE_BYTES)):
                fields.append((f.number, scalar[f.type], -1))
            else:  # groups, packable repeated scalars: fall back when met
                fields.append((f.number, mod.K_UNSUPPORTED, -1))
        out.append(fields)
        i += 1
    return out


def _spec(cfg: ResolveConfig, mod: ModuleType) -> dict[str, Any]:
    tiers = [t for t, _ in cfg.tier_keys]
    if len(set(tiers)) != len(tiers) or not set(tiers) <= TIER_FIELDS.keys():
        raise ValueError(f"tier keys {tiers} are not distinct known tiers")
    return {
        "tenant_keys": cfg.tenant_keys,
        "model_keys": cfg.model_keys,
        "pod_keys": cfg.pod_keys,
        "role_keys": cfg.role_keys,
        "input_token_keys": cfg.input_token_keys,
        "output_token_keys": cfg.output_token_keys,
        "engine_marker_attribute": cfg.engine_marker_attribute,
        "cached_tokens_key": cfg.cached_tokens_key,
        "request_id_key": cfg.request_id_key,
        "error_type_key": cfg.error_type_key,
        "disaggregation_key": cfg.disaggregation_key,
        "service_name_key": cfg.service_name_key,
        "latency_keys": (
            c.ATTR_LAT_QUEUE,
            c.ATTR_LAT_PREFILL,
            c.ATTR_LAT_DECODE,
            c.ATTR_LAT_TTFT,
            c.ATTR_LAT_E2E,
        ),
        "tier_keys": tuple(k for _, k in cfg.tier_keys),
        "tier_fields": tuple(TIER_FIELDS[t] for t in tiers),
        "engine_span_names": sorted(cfg.engine_span_names),
        "sidecar_span_names": sorted(cfg.sidecar_span_names),
        "role_prefill": c.ROLE_PREFILL,
        "role_decode": c.ROLE_DECODE,
        "roles": tuple(c.ROLES),
        "suffix_prefill": c.SERVICE_SUFFIX_PREFILL,
        "suffix_decode": c.SERVICE_SUFFIX_DECODE,
        "unknown_pod": c.UNKNOWN_POD,
        "unknown_model": c.UNKNOWN_MODEL,
        "status_error": c.OTLP_STATUS_ERROR,
        "engine_type": EngineSpan,
        "engine_slots": _slots(EngineSpan, ENGINE_SLOTS),
        "tier_type": TierTokens,
        "tier_slots": _slots(TierTokens, TIER_SLOTS),
        "hints_type": TraceHints,
        "hints_slots": _slots(TraceHints, HINTS_SLOTS),
        "schema": _schema(mod),
    }


def _disabled() -> bool:
    return os.environ.get(DISABLE_ENV, "").strip() == "0"


@functools.lru_cache(maxsize=16)
def compiled(cfg: ResolveConfig) -> Any | None:
    """The native decoder for `cfg`, or None (Python path); logs which path runs, once per config."""
    if _native is None:
        log.warning("ingest decode: Python path (native extension observer.ingest._otlpfast not built)")
        return None
    if _disabled():
        log.info("ingest decode: Python path (%s=0)", DISABLE_ENV)
        return None
    if set(c.ROLES) != {c.ROLE_PREFILL, c.ROLE_DECODE}:
        log.warning("ingest decode: Python path (roles %s not supported natively)", c.ROLES)
        return None
    try:
        native = _native.Config(_spec(cfg, _native))
    except (ValueError, TypeError, KeyError) as exc:
        log.warning("ingest decode: Python path (config not supported natively: %s)", exc)
        return None
    log.info("ingest decode: native fast path (observer.ingest._otlpfast), Python path as fallback")
    return native


def path(cfg: ResolveConfig) -> str:
    """ "native" when `decode` runs the C decoder for `cfg`, else "python"."""
    return "native" if compiled(cfg) is not None else "python"


def decode(data: bytes, max_spans: int, cfg: ResolveConfig) -> Resolved | None:
    """The fused protobuf result for a clean batch, or None: run the Python path instead."""
    native = compiled(cfg)
    if native is None:
        return None
    out: tuple[tuple[EngineSpan, ...], dict[str, TraceHints], int] | None = native.decode(data, max_spans)
    if out is None:
        return None
    engine, hints, rewritten = sanitize(out[0], out[1])
    return engine, hints, out[2], rewritten
