"""RequestRecord factory for aggregation tests."""

from __future__ import annotations

import itertools
from typing import Any

from observer.model import RequestRecord, TierTokens

_ids = itertools.count()


def rec(
    tenant: str = "acme",
    end: float = 1000.0,
    *,
    model: str = "m1",
    prompt: int = 100,
    output: int = 10,
    cached: TierTokens | None = None,
    error: bool = False,
    **latencies: Any,
) -> RequestRecord:
    """A record ending at `end`; latencies (ttft, itl, e2e, queue, prefill, kv_transfer, decode)
    default to None."""
    n = next(_ids)
    fields: dict[str, Any] = dict.fromkeys(
        ("ttft", "itl", "e2e", "queue", "prefill", "kv_transfer", "decode")
    )
    fields.update(latencies)
    return RequestRecord(
        request_id=f"req-{n}",
        trace_id=f"{n:032x}",
        tenant=tenant,
        model=model,
        start_time=end - 1.0,
        end_time=end,
        prompt_tokens=prompt,
        output_tokens=output,
        cached=cached if cached is not None else TierTokens(),
        error=error,
        **fields,
    )
