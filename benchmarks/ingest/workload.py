"""vLLM-shaped OTLP export bodies for the ingest benchmark, built and encoded with the real SDK.

Each batch holds whole traces only (a P/D trace never straddles two bodies), exactly
`spans_per_batch` spans: aggregated requests (one `llm_request` span on a plain vLLM pod) and P/D
requests (EPP `gateway.request` root + prefill-role and decode-role `llm_request` spans in one
trace), on per-pod resources, with `gen_ai.*` latency/token attributes, `tenant.id` and the
per-tier cached-token attributes (DESIGN §4, field notes §3).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Tracer, set_span_in_context

from observer import conventions as c

NS = 1_000_000_000
MODELS = ("meta-llama/Llama-3.1-70B-Instruct", "Qwen/Qwen3-32B")


@dataclass(frozen=True)
class WorkloadSpec:
    batches: int
    spans_per_batch: int = 512
    tenants: int = 50
    pd_share: float = 0.5  # share of requests served as P/D pairs
    pods: int = 8
    seed: int = 7
    tenant_offset: int = 0  # first tenant index (distinct tenants across phases)
    seconds_per_batch: float = 0.5  # how far the request start times advance per batch


class _Pods:
    """One SDK TracerProvider per pod resource, all finishing into one in-memory exporter."""

    def __init__(self, n: int) -> None:
        self.memory = InMemorySpanExporter()
        proc = SimpleSpanProcessor(self.memory)

        def tracer(service: str, pod: str, role: str | None) -> Tracer:
            attrs: dict[str, str] = {c.RES_SERVICE_NAME: service, c.RES_POD_NAME: pod}
            if role is not None:
                attrs[c.RES_LLMD_ROLE] = role
            tp = TracerProvider(resource=Resource.create(attrs))
            tp.add_span_processor(proc)
            return tp.get_tracer("vllm")

        self.aggregated = [tracer("vllm", f"vllm-agg-{i}", None) for i in range(n)]
        self.prefill = [tracer(c.SERVICE_VLLM_PREFILL, f"ms-prefill-{i}", c.ROLE_PREFILL) for i in range(n)]
        self.decode = [tracer(c.SERVICE_VLLM_DECODE, f"ms-decode-{i}", c.ROLE_DECODE) for i in range(n)]
        self.epp = tracer(c.SERVICE_EPP, "epp-0", None)

    def take(self) -> list[ReadableSpan]:
        spans = list(self.memory.get_finished_spans())
        self.memory.clear()
        return spans


def _engine_attrs(
    rng: random.Random, rid: str, tenant: str, model: str, *, prompt_side: bool, decode_side: bool
) -> dict[str, str | int | float]:
    prompt = rng.randrange(200, 8000)
    output = rng.randrange(2, 600) if decode_side else 1
    attrs: dict[str, str | int | float] = {
        c.ATTR_REQUEST_ID: rid,
        c.ATTR_REQUEST_MODEL: model,
        c.ATTR_LAT_QUEUE: rng.random() * 0.05,
        c.ATTR_LAT_TTFT: 0.05 + rng.random() * 0.5,
        c.ATTR_LAT_E2E: 1.0 + rng.random() * 5,
        c.ATTR_LAT_PREFILL: rng.random() * 0.4,
        c.ATTR_LAT_DECODE: rng.random() * 4 if decode_side else 0.0,
        c.ATTR_LAT_INFERENCE: rng.random() * 4,
        c.ATTR_PROMPT_TOKENS: prompt,
        c.ATTR_COMPLETION_TOKENS: output,
        c.ATTR_TENANT_ID: tenant,
    }
    if prompt_side:
        budget = rng.randrange(0, prompt)
        for tier in (c.TIER_HBM, c.TIER_DRAM, c.TIER_DISK):
            n = rng.randrange(0, budget + 1)
            budget -= n
            attrs[c.ATTR_TIER_HIT[tier]] = n
    return attrs


def batches(spec: WorkloadSpec, now: float) -> Iterator[tuple[bytes, int]]:
    """Yield `spec.batches` (encoded `ExportTraceServiceRequest` body, requests in it) pairs.

    Bodies are protobuf, uncompressed.

    Like a collector's export stream, batches advance in time: batch `b` holds requests that
    started within `spec.seconds_per_batch` of `now - spec.span_seconds + b * seconds_per_batch`
    (so every record lands in the live windows). Request ids are random, like vLLM's
    `chatcmpl-<uuid>` ids."""
    rng = random.Random(spec.seed)
    pods = _Pods(spec.pods)
    seq = 0
    step = spec.seconds_per_batch
    base = now - 60 - spec.batches * step  # the last batch ends ~1 min before `now`
    for b in range(spec.batches):
        left = spec.spans_per_batch
        requests = 0
        while left > 0:
            seq += 1
            rid = f"chatcmpl-{rng.getrandbits(128):032x}"
            tenant = f"tenant-{spec.tenant_offset + seq % spec.tenants}"
            model = MODELS[seq % len(MODELS)]
            t0 = int((base + b * step + rng.random() * step) * NS)
            requests += 1
            if left >= 3 and rng.random() < spec.pd_share:
                left -= 3
                _pd(pods, rng, rid, tenant, model, t0)
            else:
                left -= 1
                tr = pods.aggregated[rng.randrange(spec.pods)]
                attrs = _engine_attrs(rng, rid, tenant, model, prompt_side=True, decode_side=True)
                span = tr.start_span(
                    c.SPAN_VLLM_REQUEST, kind=SpanKind.SERVER, start_time=t0, attributes=attrs
                )
                span.end(end_time=t0 + int(float(attrs[c.ATTR_LAT_E2E]) * NS))
        yield encode_spans(pods.take()).SerializeToString(), requests


def _pd(pods: _Pods, rng: random.Random, rid: str, tenant: str, model: str, t0: int) -> None:
    root = pods.epp.start_span(c.SPAN_EPP_GATEWAY, kind=SpanKind.SERVER, start_time=t0)
    root.set_attribute(c.ATTR_REQUEST_MODEL, model)
    root.set_attribute(c.ATTR_EPP_PD_USED, True)
    root.set_attribute(c.ATTR_FAIRNESS_ID, tenant)
    ctx = set_span_in_context(root)
    i = rng.randrange(len(pods.prefill))
    pre_attrs = _engine_attrs(rng, rid + "-p", tenant, model, prompt_side=True, decode_side=False)
    pre_end = t0 + int((float(pre_attrs[c.ATTR_LAT_QUEUE]) + float(pre_attrs[c.ATTR_LAT_PREFILL])) * NS)
    pre = pods.prefill[i].start_span(
        c.SPAN_VLLM_REQUEST, context=ctx, kind=SpanKind.SERVER, start_time=t0, attributes=pre_attrs
    )
    pre.end(end_time=pre_end)
    d0 = pre_end + 5_000_000
    dec_attrs = _engine_attrs(rng, rid, tenant, model, prompt_side=False, decode_side=True)
    dec_attrs[c.ATTR_LAT_PREFILL] = 0.0
    dec_attrs[c.ATTR_LAT_QUEUE] = 0.0
    dec_attrs[c.ATTR_PROMPT_TOKENS] = pre_attrs[c.ATTR_PROMPT_TOKENS]
    dec = pods.decode[i].start_span(
        c.SPAN_VLLM_REQUEST, context=ctx, kind=SpanKind.SERVER, start_time=d0, attributes=dec_attrs
    )
    d_end = d0 + int(float(dec_attrs[c.ATTR_LAT_DECODE]) * NS)
    dec.end(end_time=d_end)
    root.end(end_time=d_end)
