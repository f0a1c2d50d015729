"""Shared helpers for the dashboards tests: every target/variable/annotation of every dashboard."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dashboards.generate import Generated, generate
from dashboards.render import dashboard_dict
from observer.config import Settings, load_settings

GOLDEN = Path(__file__).parent / "golden"
UPDATE_ENV = "PD_OBSERVER_UPDATE_GOLDENS"


@dataclass(frozen=True)
class Expr:
    """A PromQL expression found in a dashboard, and where."""

    uid: str
    where: str
    expr: str


@pytest.fixture(scope="session")
def golden_settings() -> Settings:
    """Settings with non-default dashboards options and SLOs (tests/dashboards/golden/settings.yaml)."""
    return load_settings(GOLDEN / "settings.yaml", env={})


@pytest.fixture(scope="session")
def default_dashboards() -> tuple[Generated, ...]:
    return generate(load_settings(env={}))


@pytest.fixture(scope="session")
def dashboard_dicts(default_dashboards: tuple[Generated, ...]) -> dict[str, dict[str, Any]]:
    return {g.uid: dashboard_dict(g.model) for g in default_dashboards}


def panels(d: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that is not a row (rows are not collapsed, so panels are top level)."""
    return [p for p in d["panels"] if p["type"] != "row"]


LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+), *(?P<label>[a-zA-Z_][a-zA-Z0-9_]*)\)$")


def all_exprs(dashboards: dict[str, dict[str, Any]]) -> list[Expr]:
    """Panel targets, annotation queries and variable selectors (as `count by (label) (sel)`)."""
    out: list[Expr] = []
    for uid, d in dashboards.items():
        for p in panels(d):
            for t in p["targets"]:
                out.append(Expr(uid, f"panel {p['title']!r} {t['refId']}", t["expr"]))
        for a in d.get("annotations", {}).get("list", []):
            out.append(Expr(uid, f"annotation {a['name']!r}", a["expr"]))
        for v in d["templating"]["list"]:
            if v["type"] == "query":
                m = LABEL_VALUES.match(v["query"])
                assert m, f"{uid}: variable {v['name']} query is not label_values(...): {v['query']}"
                out.append(Expr(uid, f"variable {v['name']}", f"count by ({m['label']}) ({m['selector']})"))
    return out


# What Grafana would substitute: "All" for multi-value variables, one window, an interval.
SUBSTITUTIONS = {
    "namespace": ".*",
    "pool": ".*",
    "model": ".*",
    "tenant": ".*",
    "window": "5m",
    "__rate_interval": "10s",
    "__interval": "10s",
}
VAR_RE = re.compile(r"\$\{?(\w+)\}?")


def substitute(expr: str, **values: str) -> str:
    """Replace template variables by `SUBSTITUTIONS`, or by `values` given here."""
    table = {**SUBSTITUTIONS, **values}

    def repl(m: re.Match[str]) -> str:
        name = m.group(1)
        assert name in table, f"unknown template variable ${name} in {expr!r}"
        return table[name]

    return VAR_RE.sub(repl, expr)
