"""What the fleet model produces, and what the emitters turn into real protocols.

The model (simulator.fleet) is pure and clock-driven; it hands these frozen records to a
`FleetSink`. Emitters (simulator.emit.*) implement the sink: OTLP spans through the real
OpenTelemetry SDK, vLLM/EPP Prometheus metrics, vLLM KV events. Times are simulated epoch
seconds (the scenario's start time + simulated offset).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class EngineTiming:
    """One vLLM engine's view of a request (what its `llm_request` span carries)."""

    pod: str
    role: str  # observer.conventions.ROLE_PREFILL | ROLE_DECODE | ROLE_BOTH
    arrival: float  # span start
    scheduled: float  # left the queue
    first_token: float  # prefill done / first token produced
    finished: float  # span end
    prompt_tokens: int
    output_tokens: int
    cached_by_tier: Mapping[str, int] = field(default_factory=dict)  # conventions.KNOWN_TIERS keys


@dataclass(frozen=True, slots=True)
class ArrivedRequest:
    """A request reaching the router (the EPP), before any routing or queueing.

    The real EPP counts a request here (its request counter), not when it completes; the twin's
    emitters that count requests at the router take it from this event.
    """

    request_id: str
    tenant: str
    model: str
    at: float  # arrival at the router (same as the CompletedRequest's `arrival` later)


@dataclass(frozen=True, slots=True)
class CompletedRequest:
    """A finished request with the twin's ground truth."""

    request_id: str
    trace_seed: int  # deterministic trace id source (same seed -> same ids)
    tenant: str
    model: str
    arrival: float  # at the router
    prefill: EngineTiming | None  # None when decode prefilled locally (P/D decider)
    decode: EngineTiming
    prompt_tokens: int
    output_tokens: int
    cached_by_tier: Mapping[str, int]  # ground truth of hits (prefill side for P/D)
    kv_transfer_seconds: float  # 0 when not disaggregated
    error: bool = False

    @property
    def cached_tokens(self) -> int:
        return sum(self.cached_by_tier.values())

    @property
    def disaggregated(self) -> bool:
        return self.prefill is not None

    @property
    def ttft(self) -> float:
        return self.decode.first_token - self.arrival

    @property
    def e2e(self) -> float:
        return self.decode.finished - self.arrival


@dataclass(frozen=True, slots=True)
class PodSnapshot:
    """Per-pod state at a tick: what vLLM's /metrics would show (gauges + cumulative counters)."""

    pod: str
    role: str
    model: str
    pool: str
    ready: bool
    running: int
    waiting: int
    kv_usage: float  # 0..1, HBM (vllm:kv_cache_usage_perc)
    cpu_offload_usage: float  # 0..1, DRAM (vllm:kv_offload_cpu_cache_usage_perc)
    disk_usage_bytes: float  # LMCache local storage
    prefix_queries: int  # cumulative tokens
    prefix_hits: int
    prompt_tokens: int
    generation_tokens: int
    cached_by_source: Mapping[str, int]  # vLLM source label (device|host|disk|p2p) -> cumulative tokens
    prompt_by_source: Mapping[str, int]  # local_compute|local_cache_hit|external_kv_transfer -> cumulative
    preemptions: int
    evictions_by_tier: Mapping[str, int]  # tier -> cumulative blocks evicted out of the tier
    demotions_by_tier: Mapping[str, int]  # tier -> cumulative blocks demoted down from the tier
    busy_seconds: float  # cumulative time the engine had work


@dataclass(frozen=True, slots=True)
class KvEvent:
    """A vLLM KV cache event (field notes §4)."""

    pod: str
    model: str
    time: float
    kind: str  # conventions.KV_EVENT_BLOCK_STORED | KV_EVENT_BLOCK_REMOVED | KV_EVENT_ALL_CLEARED
    block_hashes: tuple[int, ...] = ()
    medium: str | None = None  # GPU | CPU | STORAGE
    parent_block_hash: int | None = None
    block_size: int = 16


@dataclass(frozen=True, slots=True)
class FleetEvent:
    """Something an operator would see in the story (scale, weight change, scenario phase)."""

    time: float
    kind: str
    detail: Mapping[str, object] = field(default_factory=dict)


class FleetSink(Protocol):
    """Where the fleet model sends what happened. Emitters implement it.

    Every request is announced twice: `request_arrived` when it reaches the router, then
    `request_completed` with its ground truth when it finishes (same `request_id`).
    """

    def request_arrived(self, arrival: ArrivedRequest) -> None: ...

    def request_completed(self, request: CompletedRequest) -> None: ...

    def pods_sampled(self, now: float, pods: tuple[PodSnapshot, ...]) -> None: ...

    def kv_events(self, events: tuple[KvEvent, ...]) -> None: ...

    def fleet_event(self, event: FleetEvent) -> None: ...
