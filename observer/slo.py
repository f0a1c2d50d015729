"""Pure SLO math: judge one request against one SLO, attainment, burn rate, spec validation.

Rules (docs/signals.md, "Windows, quantiles and SLOs"):

* A request is judged only when the SLO covers its tenant (``SloSpec.tenants`` empty = all).
* Availability SLO (``sli == "error"``): good iff the request did not error.
* Latency SLOs (ttft / itl / e2e): good iff ``value <= threshold_seconds``, compared exactly on the
  per-request value (no histogram-bucket rounding). Not applicable (``None``) when the value is
  unknown (e.g. ITL of a one-token answer) or when the request errored: an errored request is
  charged to the availability SLO only, so one failure is not counted against every latency SLO
  with a meaningless latency.
* ``attainment = good / total`` (None when total is 0);
  ``burn_rate = (1 - attainment) / (1 - objective)`` (None when attainment is None).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from observer import conventions as c
from observer.model import RequestRecord, SloSpec


class SloSpecError(ValueError):
    """An SLO definition that cannot be evaluated."""


def judge(record: RequestRecord, slo: SloSpec) -> bool | None:
    """True good, False bad, None not applicable (tenant not covered, value unknown, errored)."""
    if slo.tenants and record.tenant not in slo.tenants:
        return None
    if slo.sli == c.SLI_ERROR:
        return not record.error
    if record.error:
        return None
    value: float | None = getattr(record, slo.sli)
    if value is None:
        return None
    threshold = slo.threshold_seconds
    assert threshold is not None  # validated specs only
    return value <= threshold


def attainment(good: int, total: int) -> float | None:
    """Share of good events; None when there were no events."""
    if total < 0 or good < 0 or good > total:
        raise ValueError(f"invalid SLO counts good={good} total={total}")
    if total == 0:
        return None
    return good / total


def burn_rate(attainment_value: float | None, objective: float) -> float | None:
    """Error-budget burn rate: (1 - attainment) / (1 - objective). 1.0 spends the budget exactly."""
    if not 0.0 < objective < 1.0:
        raise ValueError(f"objective must be within (0, 1), got {objective}")
    if attainment_value is None:
        return None
    return (1.0 - attainment_value) / (1.0 - objective)


def validate_slo(slo: SloSpec) -> None:
    """Raise SloSpecError when `slo` cannot be evaluated."""
    if not slo.name:
        raise SloSpecError("SLO name must not be empty")
    if slo.sli not in c.SLIS:
        raise SloSpecError(f"SLO {slo.name!r}: unknown sli {slo.sli!r} (one of {', '.join(c.SLIS)})")
    if not (0.0 < slo.objective < 1.0) or math.isnan(slo.objective):
        raise SloSpecError(f"SLO {slo.name!r}: objective must be within (0, 1)")
    if slo.sli == c.SLI_ERROR:
        if slo.threshold_seconds is not None:
            raise SloSpecError(f"availability SLO {slo.name!r} takes no threshold_seconds")
    elif (
        slo.threshold_seconds is None
        or not math.isfinite(slo.threshold_seconds)
        or slo.threshold_seconds <= 0
    ):
        raise SloSpecError(f"latency SLO {slo.name!r} needs a positive finite threshold_seconds")


def validate_slos(slos: Iterable[SloSpec]) -> tuple[SloSpec, ...]:
    """Validate each SLO and that names are unique; returns them as a tuple."""
    out = tuple(slos)
    seen: set[str] = set()
    for slo in out:
        validate_slo(slo)
        if slo.name in seen:
            raise SloSpecError(f"duplicate SLO name {slo.name!r}")
        seen.add(slo.name)
    return out
