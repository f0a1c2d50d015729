"""Combine sinks, and record what the twin did (bounded) for tests and the demo report."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from observer import conventions as c
from simulator.events import ArrivedRequest, CompletedRequest, FleetEvent, FleetSink, KvEvent, PodSnapshot


class Fanout:
    """A `FleetSink` forwarding every call to each of its sinks, in order."""

    def __init__(self, sinks: Iterable[FleetSink]) -> None:
        self.sinks: tuple[FleetSink, ...] = tuple(sinks)

    def request_arrived(self, arrival: ArrivedRequest) -> None:
        for s in self.sinks:
            s.request_arrived(arrival)

    def request_completed(self, request: CompletedRequest) -> None:
        for s in self.sinks:
            s.request_completed(request)

    def pods_sampled(self, now: float, pods: tuple[PodSnapshot, ...]) -> None:
        for s in self.sinks:
            s.pods_sampled(now, pods)

    def kv_events(self, events: tuple[KvEvent, ...]) -> None:
        for s in self.sinks:
            s.kv_events(events)

    def fleet_event(self, event: FleetEvent) -> None:
        for s in self.sinks:
            s.fleet_event(event)


def _quantile(values: list[float], q: float) -> float | None:
    """Nearest-rank quantile (exact on the recorded values); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


@dataclass(slots=True)
class _TenantBucket:
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    cached_by_tier: dict[str, int] = field(default_factory=dict)
    ttfts: list[float] = field(default_factory=list)


@dataclass(slots=True)
class _Bucket:
    start: float
    tenants: dict[str, _TenantBucket] = field(default_factory=dict)
    replicas: dict[str, int] = field(default_factory=dict)  # role -> ready pods (last sample)
    kv_usage: dict[str, float] = field(default_factory=dict)  # role -> mean HBM usage (last sample)
    waiting: dict[str, int] = field(default_factory=dict)  # role -> queued requests (last sample)


@dataclass(frozen=True, slots=True)
class TenantPoint:
    """One tenant in one timeline bucket."""

    requests: int
    errors: int
    prompt_tokens: int
    cached_tokens: int
    hit_rate: float | None  # token-weighted, None without prompt tokens
    ttft_p90: float | None
    cached_by_tier: dict[str, int]


@dataclass(frozen=True, slots=True)
class TimelinePoint:
    """What happened in [start, start + bucket_seconds)."""

    start: float
    requests_per_second: float
    replicas: dict[str, int]
    kv_usage: dict[str, float]
    waiting: dict[str, int]
    tenants: dict[str, TenantPoint]


class Recorder:
    """A bounded in-memory `FleetSink`: recent raw events plus a per-bucket timeline.

    Memory is bounded by `max_requests` (raw requests kept), `max_events` (fleet and KV
    events kept) and `max_buckets` (timeline buckets kept, oldest dropped first). TTFT
    quantiles are exact over the requests of a bucket.
    """

    def __init__(
        self,
        *,
        bucket_seconds: float = 10.0,
        max_requests: int = 10_000,
        max_events: int = 10_000,
        max_buckets: int = 8_640,
    ) -> None:
        if bucket_seconds <= 0:
            raise ValueError("bucket_seconds must be > 0")
        self.bucket_seconds = bucket_seconds
        self.requests: deque[CompletedRequest] = deque(maxlen=max_requests)
        self.fleet_events: deque[FleetEvent] = deque(maxlen=max_events)
        self.kv: deque[KvEvent] = deque(maxlen=max_events)
        self.latest_pods: tuple[PodSnapshot, ...] = ()
        self.total_requests = 0  # completed
        self.total_arrivals = 0  # arrived at the router (completed or still in flight)
        self.total_kv_events = 0
        self._max_buckets = max_buckets
        self._buckets: dict[float, _Bucket] = {}

    def _bucket(self, t: float) -> _Bucket:
        start = math.floor(t / self.bucket_seconds) * self.bucket_seconds
        b = self._buckets.get(start)
        if b is None:
            b = self._buckets[start] = _Bucket(start)
            if len(self._buckets) > self._max_buckets:
                del self._buckets[min(self._buckets)]
        return b

    # -- FleetSink ----------------------------------------------------------------------------
    def request_arrived(self, arrival: ArrivedRequest) -> None:
        self.total_arrivals += 1

    def request_completed(self, request: CompletedRequest) -> None:
        self.requests.append(request)
        self.total_requests += 1
        tb = self._bucket(request.decode.finished).tenants.setdefault(request.tenant, _TenantBucket())
        tb.requests += 1
        tb.errors += int(request.error)
        tb.prompt_tokens += request.prompt_tokens
        tb.cached_tokens += request.cached_tokens
        for tier, n in request.cached_by_tier.items():
            tb.cached_by_tier[tier] = tb.cached_by_tier.get(tier, 0) + n
        tb.ttfts.append(request.ttft)

    def pods_sampled(self, now: float, pods: tuple[PodSnapshot, ...]) -> None:
        self.latest_pods = pods
        b = self._bucket(now)
        replicas: dict[str, int] = {}
        kv: dict[str, list[float]] = {}
        waiting: dict[str, int] = {}
        for p in pods:
            if p.ready:
                replicas[p.role] = replicas.get(p.role, 0) + 1
                kv.setdefault(p.role, []).append(p.kv_usage)
            waiting[p.role] = waiting.get(p.role, 0) + p.waiting
        b.replicas = replicas
        b.kv_usage = {role: sum(v) / len(v) for role, v in kv.items()}
        b.waiting = waiting

    def kv_events(self, events: tuple[KvEvent, ...]) -> None:
        self.kv.extend(events)
        self.total_kv_events += len(events)

    def fleet_event(self, event: FleetEvent) -> None:
        self.fleet_events.append(event)

    # -- reads ----------------------------------------------------------------------------------
    def timeline(self) -> list[TimelinePoint]:
        """Per-bucket load, replicas per role, and per-tenant TTFT p90 and hit rate."""
        out: list[TimelinePoint] = []
        last_replicas: dict[str, int] = {}
        for _, b in sorted(self._buckets.items()):
            if b.replicas:
                last_replicas = b.replicas
            tenants = {
                name: TenantPoint(
                    requests=tb.requests,
                    errors=tb.errors,
                    prompt_tokens=tb.prompt_tokens,
                    cached_tokens=tb.cached_tokens,
                    hit_rate=(tb.cached_tokens / tb.prompt_tokens) if tb.prompt_tokens else None,
                    ttft_p90=_quantile(tb.ttfts, 0.9),
                    cached_by_tier=dict(tb.cached_by_tier),
                )
                for name, tb in sorted(b.tenants.items())
            }
            out.append(
                TimelinePoint(
                    start=b.start,
                    requests_per_second=sum(t.requests for t in tenants.values()) / self.bucket_seconds,
                    replicas=dict(b.replicas or last_replicas),
                    kv_usage=dict(b.kv_usage),
                    waiting=dict(b.waiting),
                    tenants=tenants,
                )
            )
        return out

    def tenant_totals(self) -> dict[str, TenantPoint]:
        """Totals per tenant over the kept buckets (TTFT p90 over all their kept requests)."""
        acc: dict[str, _TenantBucket] = {}
        for b in self._buckets.values():
            for name, tb in b.tenants.items():
                a = acc.setdefault(name, _TenantBucket())
                a.requests += tb.requests
                a.errors += tb.errors
                a.prompt_tokens += tb.prompt_tokens
                a.cached_tokens += tb.cached_tokens
                for tier, n in tb.cached_by_tier.items():
                    a.cached_by_tier[tier] = a.cached_by_tier.get(tier, 0) + n
                a.ttfts.extend(tb.ttfts)
        return {
            name: TenantPoint(
                requests=a.requests,
                errors=a.errors,
                prompt_tokens=a.prompt_tokens,
                cached_tokens=a.cached_tokens,
                hit_rate=(a.cached_tokens / a.prompt_tokens) if a.prompt_tokens else None,
                ttft_p90=_quantile(a.ttfts, 0.9),
                cached_by_tier={t: a.cached_by_tier[t] for t in c.KNOWN_TIERS if t in a.cached_by_tier},
            )
            for name, a in sorted(acc.items())
        }
