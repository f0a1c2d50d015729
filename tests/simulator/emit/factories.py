"""Hand-built twin events for emitter tests (no fleet model needed)."""

from __future__ import annotations

from observer import conventions as c
from simulator.events import ArrivedRequest, CompletedRequest, EngineTiming, PodSnapshot

T0 = 1_800_000_000.0


def arrival_of(request: CompletedRequest) -> ArrivedRequest:
    """The router-arrival event the fleet model sends before `request` completes."""
    return ArrivedRequest(
        request_id=request.request_id, tenant=request.tenant, model=request.model, at=request.arrival
    )


def pd_request(i: int = 0, *, tenant: str = "acme", error: bool = False, t0: float = T0) -> CompletedRequest:
    """A disaggregated request: prefill on prefill-0, decode on decode-0."""
    a = t0 + i * 0.05
    pre = EngineTiming(
        pod="pd-prefill-0",
        role=c.ROLE_PREFILL,
        arrival=a + 0.002,
        scheduled=a + 0.010,
        first_token=a + 0.110,
        finished=a + 0.111,
        prompt_tokens=2000,
        output_tokens=1,
        cached_by_tier={c.TIER_HBM: 1024, c.TIER_DRAM: 512},
    )
    dec = EngineTiming(
        pod="pd-decode-0",
        role=c.ROLE_DECODE,
        arrival=a + 0.120,
        scheduled=a + 0.121,
        first_token=a + 0.140,
        finished=a + 1.140,
        prompt_tokens=2000,
        output_tokens=101,
    )
    return CompletedRequest(
        request_id=f"req-{i}",
        trace_seed=1000 + i,
        tenant=tenant,
        model="llama-3-70b",
        arrival=a,
        prefill=pre,
        decode=dec,
        prompt_tokens=2000,
        output_tokens=101,
        cached_by_tier={c.TIER_HBM: 1024, c.TIER_DRAM: 512},
        kv_transfer_seconds=0.009,
        error=error,
    )


def local_request(i: int = 0, *, tenant: str = "beta", t0: float = T0) -> CompletedRequest:
    """A request the decode pod prefilled locally (no P/D)."""
    a = t0 + i * 0.05
    dec = EngineTiming(
        pod="pd-decode-1",
        role=c.ROLE_DECODE,
        arrival=a + 0.002,
        scheduled=a + 0.004,
        first_token=a + 0.054,
        finished=a + 0.554,
        prompt_tokens=300,
        output_tokens=51,
        cached_by_tier={c.TIER_HBM: 256},
    )
    return CompletedRequest(
        request_id=f"loc-{i}",
        trace_seed=5000 + i,
        tenant=tenant,
        model="llama-3-70b",
        arrival=a,
        prefill=None,
        decode=dec,
        prompt_tokens=300,
        output_tokens=51,
        cached_by_tier={c.TIER_HBM: 256},
        kv_transfer_seconds=0.0,
    )


def snapshot(
    pod: str,
    role: str,
    *,
    kv: float = 0.5,
    running: int = 3,
    waiting: int = 1,
    scale: int = 1,
    pool: str = "pool-a",
) -> PodSnapshot:
    """A pod snapshot whose cumulative counters grow with `scale`."""
    return PodSnapshot(
        pod=pod,
        role=role,
        model="llama-3-70b",
        pool=pool,
        ready=True,
        running=running,
        waiting=waiting,
        kv_usage=kv,
        cpu_offload_usage=0.25,
        disk_usage_bytes=1.5e9,
        prefix_queries=10_000 * scale,
        prefix_hits=4_000 * scale,
        prompt_tokens=10_000 * scale,
        generation_tokens=2_000 * scale,
        cached_by_source={"device": 3_000 * scale, "host": 1_000 * scale},
        prompt_by_source={"local_compute": 6_000 * scale, "local_cache_hit": 4_000 * scale},
        preemptions=2 * scale,
        evictions_by_tier={c.TIER_HBM: 10 * scale},
        demotions_by_tier={c.TIER_HBM: 7 * scale},
        busy_seconds=30.0 * scale,
    )
