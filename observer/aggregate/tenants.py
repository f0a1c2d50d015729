"""Per-tenant outputs of the aggregator and the tenant- and model-folding bounds.

Folding (docs/signals.md): at most ``max_tenants`` tenants hold an individual slot; a record of
any other tenant is aggregated under ``conventions.OTHER_TENANT`` and counted as folded. A tenant
keeps its slot (its folding decision is stable) while any of its data is inside the longest
window; when all of it has aged out (its latest coarse bucket dropped) the slot is freed and the
next new tenant may take it. A record older than the longest window never claims a slot. A tenant
literally named ``other`` shares the ``other`` entry and takes no slot. Models fold the same way,
independently: at most ``max_models`` models hold a slot, the rest go under
``conventions.OTHER_MODEL``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from observer import conventions as c
from observer.model import TierTokens


@dataclass(frozen=True, slots=True)
class Quantiles:
    """p50/p90/p99 of one latency over a window (seconds); None when no value was seen."""

    p50: float | None = None
    p90: float | None = None
    p99: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        return {c.API_P50: self.p50, c.API_P90: self.p90, c.API_P99: self.p99}


QUANTILE_LEVELS: tuple[float, float, float] = (0.5, 0.9, 0.99)


@dataclass(frozen=True, slots=True)
class SloStatus:
    """One SLO for one tenant over a window: good/total events, attainment, burn rate."""

    good: int
    total: int
    attainment: float | None
    burn_rate: float | None
    objective: float


@dataclass(frozen=True)
class TenantStats:
    """One tenant (or `other`) over a window."""

    tenant: str
    requests: int
    prompt_tokens: int
    output_tokens: int
    cached: TierTokens
    errors: int
    prefix_hit_rate: float | None
    tier_shares: Mapping[str, float] | None
    quantiles: Mapping[str, Quantiles]
    slo: Mapping[str, SloStatus]

    @property
    def cached_tokens(self) -> int:
        return self.cached.total

    def as_api_dict(self) -> dict[str, Any]:
        """The DESIGN §4 tenant entry of `GET /api/v1/tenants`, plus documented extra keys."""
        q = self.quantiles
        empty = Quantiles()
        return {
            c.API_TENANT: self.tenant,
            c.API_REQUESTS: self.requests,
            c.API_PROMPT_TOKENS: self.prompt_tokens,
            c.API_CACHED_TOKENS: self.cached.total,
            c.API_PREFIX_HIT_RATE: self.prefix_hit_rate,
            c.API_CACHED_BY_TIER: self.cached.as_dict(),
            c.API_TTFT: q.get(c.SLI_TTFT, empty).as_dict(),
            c.API_ITL: q.get(c.SLI_ITL, empty).as_dict(),
            c.API_E2E: q.get(c.SLI_E2E, empty).as_dict(),
            c.API_SLO: {
                name: {c.API_ATTAINMENT: s.attainment, c.API_BURN_RATE: s.burn_rate}
                for name, s in self.slo.items()
            },
            c.API_OUTPUT_TOKENS: self.output_tokens,
            c.API_ERRORS: self.errors,
            c.API_PHASES: {p: q.get(p, empty).as_dict() for p in c.PHASES},
            c.API_TIER_SHARES: None if self.tier_shares is None else dict(self.tier_shares),
        }


@dataclass(frozen=True, slots=True)
class TenantModelTotals:
    """Cumulative counters of one (tenant, model) since process start."""

    requests: int
    prompt_tokens: int
    output_tokens: int
    cached: TierTokens
    errors: int


@dataclass(frozen=True)
class Totals:
    """Cumulative counters since process start, for Prometheus counters.

    `by_slo_tenant` maps (slo, tenant) to (requests judged, bad requests). `folded` counts records
    whose tenant was folded into `other`, `models_folded` those whose model was.
    """

    by_tenant_model: Mapping[tuple[str, str], TenantModelTotals]
    by_slo_tenant: Mapping[tuple[str, str], tuple[int, int]]
    folded: int
    models_folded: int = 0


class LabelSlots:
    """A folding bound on one label (tenant or model): who holds an individual slot, and since
    which coarse bucket. `last[v]` is the index of the latest coarse bucket holding data of v;
    values past `limit` fold into `fold` (which itself never takes a slot).
    """

    __slots__ = ("fold", "last", "limit")

    def __init__(self, limit: int, fold: str) -> None:
        if limit < 1:
            raise ValueError("the slot limit must be >= 1")
        self.limit = limit
        self.fold = fold
        self.last: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.last)

    def label(self, value: str, coarse_index: int, claim: bool) -> str | None:
        """The label the value's record goes under; None means folded into `fold`.

        `claim`: whether the record may take a free slot (False for records outside the window).
        """
        last = self.last.get(value)
        if last is not None:
            if coarse_index > last:
                self.last[value] = coarse_index
            return value
        if value == self.fold:
            return value
        if claim and len(self.last) < self.limit:
            self.last[value] = coarse_index
            return value
        return None

    def free_before(self, coarse_index: int) -> list[str]:
        """Free the slots of values whose latest data is in a bucket before `coarse_index`."""
        gone = [v for v, last in self.last.items() if last < coarse_index]
        for v in gone:
            del self.last[v]
        return gone


class TenantSlots(LabelSlots):
    """The tenant-folding bound (`max_tenants` slots, the rest under `other`)."""

    __slots__ = ()

    def __init__(self, max_tenants: int) -> None:
        if max_tenants < 1:
            raise ValueError("max_tenants must be >= 1")
        super().__init__(max_tenants, c.OTHER_TENANT)

    @property
    def max_tenants(self) -> int:
        return self.limit


class ModelSlots(LabelSlots):
    """The model-folding bound (`max_models` slots, the rest under `other`)."""

    __slots__ = ()

    def __init__(self, max_models: int) -> None:
        if max_models < 1:
            raise ValueError("max_models must be >= 1")
        super().__init__(max_models, c.OTHER_MODEL)

    @property
    def max_models(self) -> int:
        return self.limit
