"""Aggregation: sliding windows over request end times, quantile sketches, tenant folding."""

from observer.aggregate.sketch import QuantileSketch, quantile_rank
from observer.aggregate.tenants import (
    QUANTILE_LEVELS,
    Quantiles,
    SloStatus,
    TenantModelTotals,
    TenantSlots,
    TenantStats,
    Totals,
)
from observer.aggregate.windows import Aggregator

__all__ = [
    "QUANTILE_LEVELS",
    "Aggregator",
    "QuantileSketch",
    "Quantiles",
    "SloStatus",
    "TenantModelTotals",
    "TenantSlots",
    "TenantStats",
    "Totals",
    "quantile_rank",
]
