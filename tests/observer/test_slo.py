"""observer.slo: exact per-request judgement, attainment, burn rate, spec validation."""

from __future__ import annotations

from typing import Any

import pytest

from observer import conventions as c
from observer.model import RequestRecord, SloSpec, TierTokens
from observer.slo import SloSpecError, attainment, burn_rate, judge, validate_slo, validate_slos

TTFT = SloSpec("ttft-2s", c.SLI_TTFT, 0.99, 2.0)
ITL = SloSpec("itl-100ms", c.SLI_ITL, 0.99, 0.1)
E2E = SloSpec("e2e-30s", c.SLI_E2E, 0.95, 30.0)
AVAIL = SloSpec("availability", c.SLI_ERROR, 0.999)


def record(
    ttft: float | None = 1.0,
    itl: float | None = 0.05,
    e2e: float | None = 10.0,
    error: bool = False,
    tenant: str = "acme",
) -> RequestRecord:
    return RequestRecord(
        request_id="r",
        trace_id="0" * 32,
        tenant=tenant,
        model="m",
        start_time=0.0,
        end_time=1.0,
        prompt_tokens=10,
        output_tokens=2,
        cached=TierTokens(),
        ttft=ttft,
        itl=itl,
        e2e=e2e,
        queue=None,
        prefill=None,
        kv_transfer=None,
        decode=None,
        error=error,
    )


@pytest.mark.parametrize(
    ("slo", "field"),
    [(TTFT, "ttft"), (ITL, "itl"), (E2E, "e2e")],
)
def test_latency_judged_exactly_at_the_threshold(slo: SloSpec, field: str) -> None:
    thr = slo.threshold_seconds
    assert thr is not None
    values: list[dict[str, Any]] = [{field: thr}, {field: thr + 1e-9}, {field: thr - 1e-9}]
    assert judge(record(**values[0]), slo) is True  # value == threshold is good
    assert judge(record(**values[1]), slo) is False
    assert judge(record(**values[2]), slo) is True


def test_unknown_latency_is_not_applicable() -> None:
    assert judge(record(itl=None), ITL) is None  # e.g. a one-token answer
    assert judge(record(ttft=None), TTFT) is None


def test_errors_count_against_availability_only() -> None:
    failed = record(error=True, ttft=50.0)
    assert judge(failed, AVAIL) is False
    assert judge(failed, TTFT) is None
    assert judge(record(), AVAIL) is True


def test_tenant_scoped_slo() -> None:
    scoped = SloSpec("gold-ttft", c.SLI_TTFT, 0.99, 1.0, tenants=("gold",))
    assert judge(record(tenant="acme"), scoped) is None
    assert judge(record(tenant="gold", ttft=0.5), scoped) is True
    assert judge(record(tenant="gold", ttft=1.5), scoped) is False


def test_attainment() -> None:
    assert attainment(0, 0) is None
    assert attainment(99, 100) == 0.99
    assert attainment(5, 5) == 1.0
    with pytest.raises(ValueError, match="invalid"):
        attainment(6, 5)


def test_burn_rate_values() -> None:
    assert burn_rate(None, 0.99) is None
    assert burn_rate(1.0, 0.99) == 0.0
    assert burn_rate(0.99, 0.99) == pytest.approx(1.0)  # spending the budget exactly
    assert burn_rate(0.856, 0.99) == pytest.approx(14.4)  # the SRE-workbook page threshold
    assert burn_rate(0.0, 0.999) == pytest.approx(1000.0)
    with pytest.raises(ValueError, match="objective"):
        burn_rate(0.5, 1.0)


def test_validation() -> None:
    validate_slos([TTFT, ITL, E2E, AVAIL])
    with pytest.raises(SloSpecError, match="duplicate"):
        validate_slos([TTFT, TTFT])
    with pytest.raises(SloSpecError, match="unknown sli"):
        validate_slo(SloSpec("x", "tpot", 0.9, 1.0))
    with pytest.raises(SloSpecError, match="threshold"):
        validate_slo(SloSpec("x", c.SLI_TTFT, 0.9))
    with pytest.raises(SloSpecError, match="no threshold"):
        validate_slo(SloSpec("x", c.SLI_ERROR, 0.9, 1.0))
    with pytest.raises(SloSpecError, match="objective"):
        validate_slo(SloSpec("x", c.SLI_ERROR, 1.0))
    with pytest.raises(SloSpecError, match="empty"):
        validate_slo(SloSpec("", c.SLI_ERROR, 0.9))
