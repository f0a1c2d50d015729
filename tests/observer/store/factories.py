"""Builders of model values for store tests."""

from __future__ import annotations

import random

from observer import conventions as c
from observer.model import EngineSpan, RequestRecord, SloSpec, TierTokens

DEFAULT_CACHED = TierTokens(10, 5, 3, 2, 1)


def record(
    i: int,
    end: float,
    *,
    tenant: str = "acme",
    model: str = "llama",
    prompt: int = 100,
    output: int = 20,
    cached: TierTokens = DEFAULT_CACHED,
    error: bool = False,
    trace_id: str | None = None,
    prefix: str = "req",
) -> RequestRecord:
    return RequestRecord(
        request_id=f"{prefix}-{i}",
        trace_id=trace_id if trace_id is not None else f"{i:032x}",
        tenant=tenant,
        model=model,
        start_time=end - 1.5,
        end_time=end,
        prompt_tokens=prompt,
        output_tokens=output,
        cached=cached,
        ttft=0.25,
        itl=0.02,
        e2e=1.5,
        queue=0.01,
        prefill=0.2,
        kv_transfer=0.04,
        decode=1.2,
        error=error,
        disaggregated=True,
        prefill_pod="p-0",
        decode_pod="d-1",
        complete=True,
    )


def random_records(
    rng: random.Random, n: int, t0: float, span_s: float, prefix: str = "rnd"
) -> list[RequestRecord]:
    out = []
    for i in range(n):
        out.append(
            record(
                i,
                t0 + rng.random() * span_s,
                tenant=rng.choice(["a", "b", "c"]),
                model=rng.choice(["m1", "m2"]),
                prompt=rng.randint(1, 5000),
                output=rng.randint(0, 500),
                cached=TierTokens(*(rng.randint(0, 100) for _ in range(5))),
                error=rng.random() < 0.1,
                prefix=prefix,
            )
        )
    return out


def engine_span(i: int, end: float = 1000.0, role: str | None = c.ROLE_PREFILL) -> EngineSpan:
    return EngineSpan(
        trace_id=f"{i:032x}",
        span_id=f"{i:016x}",
        request_id=f"span-req-{i}",
        role=role,
        tenant=None if i % 2 else "acme",
        model="llama",
        pod=f"pod-{i}",
        start_time=end - 0.5,
        end_time=end,
        prompt_tokens=1000 + i,
        output_tokens=1,
        cached=TierTokens(1, 2, 3, 4, 5),
        queue=0.01,
        prefill=0.4,
        decode=None,
        ttft=0.45,
        e2e=0.5,
        error=False,
    )


def slo(name: str, objective: float = 0.99, tenants: tuple[str, ...] = ()) -> SloSpec:
    return SloSpec(name=name, sli=c.SLI_TTFT, objective=objective, threshold_seconds=2.0, tenants=tenants)
