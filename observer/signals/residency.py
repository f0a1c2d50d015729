"""Tier residency: per-tenant tier shares of cache hits, per-pod tier usage. Pure.

Also builds the signal inputs from RequestRecords (`tenant_pod_hits`, `tenant_windows`) so the
aggregator can feed the cascade signal.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from observer import conventions as c
from observer.model import RequestRecord, TierTokens
from observer.signals.types import TenantPodHits, TenantWindow
from observer.sources.samples import PodSample


def serving_pod(r: RequestRecord) -> str | None:
    """The pod whose cache served the prefix: the prefill pod for P/D, else the decode pod."""
    return r.prefill_pod or r.decode_pod


def tenant_pod_hits(records: Iterable[RequestRecord]) -> tuple[TenantPodHits, ...]:
    acc: dict[tuple[str, str], TierTokens] = {}
    for r in records:
        pod = serving_pod(r)
        if pod is None or not r.cached.total:
            continue
        acc[(r.tenant, pod)] = acc.get((r.tenant, pod), TierTokens()) + r.cached
    return tuple(TenantPodHits(t, p, h) for (t, p), h in sorted(acc.items()))


def _p90(values: list[float]) -> float | None:
    if not values:
        return None
    values.sort()
    return values[max(0, math.ceil(0.9 * len(values)) - 1)]  # nearest rank


def tenant_windows(records: Iterable[RequestRecord]) -> tuple[TenantWindow, ...]:
    """Records of one window -> per-tenant windows (exact nearest-rank TTFT p90)."""
    reqs: dict[str, int] = {}
    ttfts: dict[str, list[float]] = {}
    hits: dict[str, TierTokens] = {}
    pods: dict[str, dict[str, TierTokens]] = {}
    for r in records:
        reqs[r.tenant] = reqs.get(r.tenant, 0) + 1
        if r.ttft is not None:
            ttfts.setdefault(r.tenant, []).append(r.ttft)
        hits[r.tenant] = hits.get(r.tenant, TierTokens()) + r.cached
        pod = serving_pod(r)
        if pod is not None and r.cached.total:
            mine = pods.setdefault(r.tenant, {})
            mine[pod] = mine.get(pod, TierTokens()) + r.cached
    return tuple(
        TenantWindow(t, reqs[t], _p90(ttfts.get(t, [])), hits[t], pods.get(t, {})) for t in sorted(reqs)
    )


def tier_shares(hits: TierTokens) -> dict[str, float] | None:
    """Share of cached tokens per tier; None when there were no hits."""
    total = hits.total
    return None if not total else {k: v / total for k, v in hits.as_dict().items()}


@dataclass(frozen=True, slots=True)
class PodTierUsage:
    pod: str
    pool: str
    role: str | None
    usage: Mapping[str, float | None]  # hbm, dram: 0..1; disk: bytes
    dram_eviction_rate: float | None


def pod_tier_usage(samples: Iterable[PodSample]) -> tuple[PodTierUsage, ...]:
    return tuple(
        PodTierUsage(
            pod=s.pod,
            pool=s.pool,
            role=s.role,
            usage={c.TIER_HBM: s.kv_usage, c.TIER_DRAM: s.cpu_offload_usage, c.TIER_DISK: s.disk_bytes},
            dram_eviction_rate=s.dram_eviction_rate,
        )
        for s in samples
    )
