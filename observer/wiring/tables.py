"""Plain-text tables for the CLI (replay)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from observer import conventions as c


def _f(v: float | None, fmt: str) -> str:
    return "—" if v is None else format(v, fmt)


def tenant_table(entries: Sequence[Mapping[str, Any]], slo: str | None) -> str:
    """Per tenant: requests, hit rate, tier shares, TTFT p50/p90/p99, SLO attainment."""
    head = (
        f"{'tenant':<14}{'requests':>9}{'hit rate':>9}{'HBM':>7}{'DRAM':>7}{'disk':>7}"
        f"{'TTFT p50':>10}{'p90':>9}{'p99':>9}{'SLO att.':>10}"
    )
    lines = [head, "-" * len(head)]
    for e in entries:
        shares = e.get(c.API_TIER_SHARES) or {}
        ttft = e[c.API_TTFT]
        att = e[c.API_SLO].get(slo, {}).get(c.API_ATTAINMENT) if slo else None
        lines.append(
            f"{e[c.API_TENANT]:<14}{e[c.API_REQUESTS]:>9}{_f(e[c.API_PREFIX_HIT_RATE], '.3f'):>9}"
            f"{_f(shares.get(c.TIER_HBM), '.2f'):>7}{_f(shares.get(c.TIER_DRAM), '.2f'):>7}"
            f"{_f(shares.get(c.TIER_DISK), '.2f'):>7}{_f(ttft[c.API_P50], '.3f'):>10}"
            f"{_f(ttft[c.API_P90], '.3f'):>9}{_f(ttft[c.API_P99], '.3f'):>9}{_f(att, '.4f'):>10}"
        )
    return "\n".join(lines)
