"""What sources return: frozen snapshots stamped with the time they were read.

A value that a source could not read, or read stale, is `None` (unknown), never zero.
Rates are per second over the source's rate window.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from observer import conventions as c

VALID_ROLES = (c.ROLE_PREFILL, c.ROLE_DECODE, c.ROLE_BOTH)  # a pod's role label: one of these, or none


@dataclass(frozen=True, slots=True)
class PodTarget:
    """A serving pod as discovery found it. Role and pool come from labels, never from the name."""

    pod: str
    role: str | None  # conventions.ROLE_PREFILL | ROLE_DECODE | ROLE_BOTH | None
    pool: str
    namespace: str = ""
    model: str | None = None
    metrics_url: str | None = None  # http://ip:port/metrics for the direct-scrape source
    kv_events_endpoint: str | None = None  # tcp://ip:5557
    kv_replay_endpoint: str | None = None  # tcp://ip:5558
    ready: bool = True


@dataclass(frozen=True, slots=True)
class EppTarget:
    """An Endpoint Picker serving one pool (direct-scrape source)."""

    pool: str
    metrics_url: str


@dataclass(frozen=True, slots=True)
class PodSample:
    """One pod's metrics at `time`. Every value None = unknown."""

    pod: str
    role: str | None
    pool: str
    model: str | None
    time: float
    kv_usage: float | None = None  # HBM, 0..1
    cpu_offload_usage: float | None = None  # DRAM offload, 0..1
    disk_bytes: float | None = None  # LMCache local storage bytes
    waiting: float | None = None
    running: float | None = None
    preemption_rate: float | None = None  # preemptions/s
    prompt_tokens_rate: float | None = None  # tokens/s
    generation_tokens_rate: float | None = None  # tokens/s
    prefix_queries_rate: float | None = None  # tokens/s
    prefix_hits_rate: float | None = None  # tokens/s
    cached_tokens_rate_by_tier: Mapping[str, float] | None = None  # tier -> tokens/s
    dram_eviction_rate: float | None = None  # LMCache CPU evictions/s

    @property
    def known(self) -> bool:
        return self.kv_usage is not None or self.running is not None


@dataclass(frozen=True, slots=True)
class PoolSample:
    """EPP values for one pool at `time`."""

    pool: str
    time: float
    kv_cache_utilization: float | None = None
    queue_size: float | None = None
    running_requests: float | None = None
    ready_endpoints: float | None = None


@dataclass(frozen=True, slots=True)
class FleetSnapshot:
    """Everything one source read in one pass."""

    source: str  # conventions.SOURCE_*
    time: float  # when it was read
    ok: bool  # False: the source failed; every value in pods/pools is unknown
    error: str | None = None
    vllm_generation: str | None = None  # conventions.VLLM_GENERATION_*; None when none found
    epp_generation: str | None = None  # a key of conventions.EPP_GENERATIONS
    pods: tuple[PodSample, ...] = ()
    pools: tuple[PoolSample, ...] = ()
    stale_pods: tuple[str, ...] = field(default=())

    def pod(self, name: str) -> PodSample | None:
        return next((p for p in self.pods if p.pod == name), None)

    def pool(self, name: str) -> PoolSample | None:
        return next((p for p in self.pools if p.pool == name), None)


def unknown_pods(targets: tuple[PodTarget, ...], now: float) -> tuple[PodSample, ...]:
    """Samples for every target with every value unknown (a failed or stale source)."""
    return tuple(PodSample(pod=t.pod, role=t.role, pool=t.pool, model=t.model, time=now) for t in targets)
