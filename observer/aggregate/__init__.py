"""Aggregation: sliding windows over request end times, quantile sketches, tenant and model folding."""

from observer.aggregate.sketch import QuantileSketch, quantile_rank
from observer.aggregate.tenants import (
    QUANTILE_LEVELS,
    LabelSlots,
    ModelSlots,
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
    "LabelSlots",
    "ModelSlots",
    "QuantileSketch",
    "Quantiles",
    "SloStatus",
    "TenantModelTotals",
    "TenantSlots",
    "TenantStats",
    "Totals",
    "quantile_rank",
]
