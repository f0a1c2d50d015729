"""Validate: judge loaded SLO specs and a window set before anything is generated (pure)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from alerts.settings import NAME_PATTERN, TENANT_PATTERN
from alerts.spec import WindowSet
from observer import conventions as c
from observer.config import ConfigError
from observer.model import SloSpec


class Level(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Issue:
    level: Level
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.where}: {self.message}"


def validate(specs: Sequence[SloSpec], windows: WindowSet) -> tuple[Issue, ...]:
    """Every problem found, errors first. An empty tuple means generate may run."""
    issues: list[Issue] = []

    def err(where: str, msg: str) -> None:
        issues.append(Issue(Level.ERROR, where, msg))

    def warn(where: str, msg: str) -> None:
        issues.append(Issue(Level.WARNING, where, msg))

    if not windows.windows:
        err(f"window set {windows.name}", "no windows")
    for i, w in enumerate(windows.windows):
        where = f"window set {windows.name}[{i}]"
        if w.severity not in c.SEVERITIES:
            err(where, f"severity {w.severity!r} is not one of {', '.join(c.SEVERITIES)}")
        if w.short_seconds >= w.long_seconds:
            err(where, f"short window {w.short} must be shorter than long window {w.long}")
        if w.factor <= 0:
            err(where, f"factor {w.factor} must be > 0")
        if w.long_seconds > windows.period_seconds:
            err(where, f"long window {w.long} exceeds the budget period")
    names: set[str] = set()
    for spec in specs:
        where = f"slo {spec.name}"
        if spec.name in names:
            err(where, "duplicate SLO name")
        names.add(spec.name)
        if not re.fullmatch(NAME_PATTERN, spec.name):
            err(where, f"name must match {NAME_PATTERN}")
        if spec.sli not in c.SLIS:
            err(where, f"sli {spec.sli!r} is not one of {', '.join(c.SLIS)}")
        if not 0 < spec.objective < 1:
            err(where, f"objective {spec.objective} must be in (0, 1)")
            continue
        if spec.sli in c.LATENCY_SLIS and spec.threshold_seconds is None:
            err(where, "latency SLO needs threshold_seconds")
        for tenant in spec.tenants:
            if not re.fullmatch(TENANT_PATTERN, tenant):
                err(where, f"tenant {tenant!r} must match {TENANT_PATTERN}")
        budget = 1 - spec.objective
        for w in windows.windows:
            if w.factor * budget >= 1:
                warn(
                    where,
                    f"burn factor {w.factor} x budget {budget:.4g} >= 1: the {w.long}/{w.short} "
                    "alert can never fire",
                )
    issues.sort(key=lambda i: i.level != Level.ERROR)
    return tuple(issues)


def check(specs: Sequence[SloSpec], windows: WindowSet) -> tuple[Issue, ...]:
    """Validate; raise ConfigError naming the first error, else return the warnings."""
    issues = validate(specs, windows)
    errors = [i for i in issues if i.level == Level.ERROR]
    if errors:
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(f"invalid alert definitions: {errors[0].where}: {errors[0].message}{more}")
    return issues
