"""Workloads: request streams of tenants with long system prompts (block chains).

A workload is an iterator of `RequestSpec` in arrival order, generated lazily (bounded
memory) and deterministically from a seed (`random.Random`, seeded per tenant by string, so
adding a tenant never changes another tenant's stream).

Block ids: a tenant's system prompt is a chain of block ids derived from the tenant name
(stable across runs); the rest of each prompt gets fresh ids from a per-tenant counter, so
only the system prompt is reusable — which is what a prefix cache can hit.
"""

from __future__ import annotations

import heapq
import math
import random
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

RateFn = Callable[[float], float]

SYNTHETIC_BLOCK_BASE = 1 << 40  # synthetic ids live far above Mooncake's remapped ids


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One request as the client sends it. `arrival` is simulated seconds from the start."""

    request_id: str
    tenant: str
    arrival: float
    prompt_tokens: int
    output_tokens: int
    block_hashes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class LengthDist:
    """Log-normal token length with a median, a spread (sigma of ln) and bounds."""

    median: float
    sigma: float = 0.5
    low: int = 1
    high: int = 131_072

    def sample(self, rng: random.Random) -> int:
        value = self.median * math.exp(rng.gauss(0.0, self.sigma)) if self.sigma > 0 else self.median
        return max(self.low, min(self.high, round(value)))


@dataclass(frozen=True, slots=True)
class Poisson:
    """Constant rate (req/s)."""

    rate: float

    def rate_at(self, t: float) -> float:
        return self.rate

    @property
    def peak(self) -> float:
        return self.rate


@dataclass(frozen=True, slots=True)
class Diurnal:
    """rate(t) = base * (1 + amplitude * sin(2 pi (t / period) + phase)), amplitude in [0, 1]."""

    base: float
    amplitude: float = 0.5
    period: float = 86_400.0
    phase: float = 0.0

    def rate_at(self, t: float) -> float:
        return self.base * (1.0 + self.amplitude * math.sin(2.0 * math.pi * t / self.period + self.phase))

    @property
    def peak(self) -> float:
        return self.base * (1.0 + abs(self.amplitude))


@dataclass(frozen=True, slots=True)
class Burst:
    """`base` req/s, and `burst` req/s inside [start, end)."""

    base: float
    burst: float
    start: float
    end: float

    def rate_at(self, t: float) -> float:
        return self.burst if self.start <= t < self.end else self.base

    @property
    def peak(self) -> float:
        return max(self.base, self.burst)


Arrivals = Poisson | Diurnal | Burst


@dataclass(frozen=True, slots=True)
class TenantSpec:
    """A tenant: its system prompt (blocks), arrivals, lengths, and when it is active."""

    name: str
    arrivals: Arrivals
    system_prompt_blocks: int = 8
    user_tokens: LengthDist = field(default_factory=lambda: LengthDist(800.0, 0.6, 16, 32_768))
    output_tokens: LengthDist = field(default_factory=lambda: LengthDist(200.0, 0.6, 1, 4096))
    start: float = 0.0
    end: float = math.inf


def system_prompt_chain(tenant: str, blocks: int) -> tuple[int, ...]:
    """The tenant's system prompt as a stable chain of block ids."""
    root = SYNTHETIC_BLOCK_BASE + (zlib.crc32(tenant.encode()) << 24)
    return tuple(root + i for i in range(blocks))


def tenant_stream(
    spec: TenantSpec, seed: int, block_tokens: int = 512, horizon: float = math.inf
) -> Iterator[RequestSpec]:
    """Requests of one tenant, by thinning a Poisson process at the peak rate."""
    rng = random.Random(f"{seed}:{spec.name}")
    chain = system_prompt_chain(spec.name, spec.system_prompt_blocks)
    fresh = chain[-1] + 1 if chain else system_prompt_chain(spec.name, 1)[0]
    fresh += 1 << 23  # past the chain, inside the tenant's 2**24-id range
    peak = spec.arrivals.peak
    if peak <= 0:
        return
    t = spec.start
    end = min(spec.end, horizon)
    n = 0
    while True:
        t += rng.expovariate(peak)
        if t >= end:
            return
        if rng.random() * peak > spec.arrivals.rate_at(t):
            continue
        user = spec.user_tokens.sample(rng)
        output = spec.output_tokens.sample(rng)
        prompt = len(chain) * block_tokens + user
        extra = math.ceil(prompt / block_tokens) - len(chain)
        blocks = chain + tuple(range(fresh, fresh + extra))
        fresh += extra
        n += 1
        yield RequestSpec(
            request_id=f"{spec.name}-{n:07d}",
            tenant=spec.name,
            arrival=t,
            prompt_tokens=prompt,
            output_tokens=output,
            block_hashes=blocks,
        )


def merge_streams(streams: Iterable[Iterator[RequestSpec]]) -> Iterator[RequestSpec]:
    """Merge time-ordered streams into one (stable: ties keep stream order)."""
    return heapq.merge(*streams, key=lambda r: r.arrival)


def synthetic_workload(
    tenants: Iterable[TenantSpec], seed: int, block_tokens: int = 512, horizon: float = math.inf
) -> Iterator[RequestSpec]:
    """All tenants' requests in arrival order."""
    return merge_streams(tenant_stream(t, seed, block_tokens, horizon) for t in tenants)
