"""Validation of SLO specs and window sets before generation."""

from __future__ import annotations

import pytest

from alerts.settings import TeamSettings
from alerts.spec import BurnWindow, WindowSet, load_window_set
from alerts.validate import Level, check, validate
from observer import conventions as c
from observer.config import ConfigError
from observer.model import SloSpec

GOOD = SloSpec(name="ttft-2s", sli=c.SLI_TTFT, objective=0.99, threshold_seconds=2.0)


def test_default_definitions_are_clean() -> None:
    assert validate([GOOD], load_window_set("sre-workbook")) == ()


def test_errors_name_the_problem() -> None:
    ws = WindowSet(
        name="bad",
        period_seconds=86400,
        windows=(
            BurnWindow(severity="urgent", long_seconds=300, short_seconds=3600, factor=0),
            BurnWindow(severity="page", long_seconds=3 * 86400, short_seconds=3600, factor=1),
        ),
    )
    specs = [
        GOOD,
        GOOD,
        SloSpec(name="bad name", sli="tpot", objective=0.9),
        SloSpec(name="lat", sli=c.SLI_ITL, objective=0.99, tenants=("ok", 'x"}or')),
    ]
    msgs = [str(i) for i in validate(specs, ws)]
    for expected in (
        "severity 'urgent'",
        "must be shorter",
        "factor 0 must be > 0",
        "exceeds the budget period",
        "duplicate SLO name",
        "name must match",
        "sli 'tpot'",
        "latency SLO needs threshold_seconds",
        "tenant 'x\"}or'",
    ):
        assert any(expected in m for m in msgs), (expected, msgs)
    with pytest.raises(ConfigError, match="invalid alert definitions"):
        check(specs, ws)


def test_a_burn_factor_that_can_never_fire_is_a_warning() -> None:
    loose = SloSpec(name="loose", sli=c.SLI_ERROR, objective=0.9)  # 14.4 x 0.1 > 1
    issues = check([loose], load_window_set("sre-workbook"))
    assert [i.level for i in issues] == [Level.WARNING]
    assert "can never fire" in issues[0].message


def test_a_trailing_newline_is_no_valid_name() -> None:
    """`re.match("^...$")` matches before a final newline: "acme\n" passed, and its rules did not
    parse (`promtool check rules`: unterminated quoted string)."""
    specs = [
        SloSpec(name="a", sli=c.SLI_ERROR, objective=0.99, tenants=("acme\n",)),
        SloSpec(name="b\n", sli=c.SLI_ERROR, objective=0.99),
    ]
    msgs = [str(i) for i in validate(specs, load_window_set("sre-workbook"))]
    assert any("tenant 'acme\\n'" in m for m in msgs), msgs
    assert any("slo b\n" in m and "name must match" in m for m in msgs), msgs
    with pytest.raises(ValueError, match="team tenant"):
        TeamSettings(tenants=("acme\n",), receiver="r")
