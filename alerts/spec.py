"""Load: SLO specs (from our settings or a Sloth `prometheus/v1` spec) and burn-rate window sets.

Loading only parses and converts; `alerts.validate` judges whether the result makes sense.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from observer import conventions as c
from observer.config import ConfigError, Settings
from observer.model import SloSpec
from observer.sources.promql import duration_seconds

SLOTH_VERSION = "prometheus/v1"
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# vLLM histograms a Sloth latency SLI may be written over (field notes §1) -> our SLI.
_SLOTH_HISTOGRAM_SLI = {
    c.VLLM_TTFT: c.SLI_TTFT,
    c.VLLM_ITL: c.SLI_ITL,
    c.VLLM_ITL_LEGACY: c.SLI_ITL,
    c.VLLM_E2E: c.SLI_E2E,
}
_LE_RE = re.compile(r"""le\s*=~?\s*["']([0-9.eE+-]+)["']""")
SLOTH_SLI_LABEL = "pd_observer_sli"
SLOTH_THRESHOLD_LABEL = "pd_observer_threshold_seconds"


def parse_duration(text: str) -> int:
    """'5m' -> 300, '1h30m' -> 5400 (`promql.duration_seconds`; surrounding whitespace ignored)."""
    try:
        return duration_seconds(str(text).strip())
    except ValueError:
        raise ConfigError(
            f"bad duration {text!r}: use e.g. 5m, 1h30m, 3d (units y w d h m s, largest first)"
        ) from None


def format_duration(seconds: int) -> str:
    """300 -> '5m', the largest unit that divides exactly (Prometheus duration syntax)."""
    for unit, size in sorted(_DURATION_UNITS.items(), key=lambda kv: -kv[1]):
        if unit != "w" and seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True, slots=True)
class BurnWindow:
    """One multi-window pair: alert when the burn rate over both windows exceeds `factor`."""

    severity: str  # conventions.SEVERITY_PAGE | SEVERITY_TICKET
    long_seconds: int
    short_seconds: int
    factor: float
    for_seconds: int = 0

    @property
    def long(self) -> str:
        return format_duration(self.long_seconds)

    @property
    def short(self) -> str:
        return format_duration(self.short_seconds)


@dataclass(frozen=True, slots=True)
class WindowSet:
    name: str
    period_seconds: int
    windows: tuple[BurnWindow, ...]

    @property
    def durations(self) -> tuple[str, ...]:
        """Every distinct window, shortest first (one recording rule each)."""
        secs = sorted({s for w in self.windows for s in (w.short_seconds, w.long_seconds)})
        return tuple(format_duration(s) for s in secs)


def parse_window_set(data: Any, origin: str) -> WindowSet:
    if not isinstance(data, dict) or not isinstance(data.get("windows"), list):
        raise ConfigError(f"window set {origin}: needs a `windows` list")
    try:
        windows = tuple(
            BurnWindow(
                severity=str(w["severity"]),
                long_seconds=parse_duration(w["long"]),
                short_seconds=parse_duration(w["short"]),
                factor=float(w["factor"]),
                for_seconds=parse_duration(w["for"]) if w.get("for") else 0,
            )
            for w in data["windows"]
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"window set {origin}: bad window entry ({exc})") from exc
    return WindowSet(
        name=str(data.get("name", origin)),
        period_seconds=parse_duration(data.get("period", "30d")),
        windows=windows,
    )


def packaged_window_sets() -> tuple[str, ...]:
    """Names of the window sets shipped in alerts/windows/."""
    root = resources.files("alerts").joinpath("windows")
    return tuple(sorted(p.name.removesuffix(".yaml") for p in root.iterdir() if p.name.endswith(".yaml")))


def load_window_set(name_or_path: str) -> WindowSet:
    """A packaged window set by name (`sre-workbook`, `pyrra`) or a YAML file path."""
    if name_or_path in packaged_window_sets():
        text = resources.files("alerts").joinpath("windows", f"{name_or_path}.yaml").read_text("utf-8")
    else:
        path = Path(name_or_path)
        if not path.is_file():
            known = ", ".join(packaged_window_sets())
            raise ConfigError(f"unknown window set {name_or_path!r} (packaged: {known}; or a file path)")
        text = path.read_text("utf-8")
    return parse_window_set(yaml.safe_load(text), name_or_path)


def slos_from_settings(settings: Settings) -> tuple[SloSpec, ...]:
    """Our own SLO definitions (`Settings.slos`)."""
    return settings.slo_specs()


def _sloth_sli(slo: dict[str, Any], labels: dict[str, Any]) -> tuple[str, float | None]:
    if SLOTH_SLI_LABEL in labels:
        sli = str(labels[SLOTH_SLI_LABEL])
        thr = labels.get(SLOTH_THRESHOLD_LABEL)
        return sli, (float(thr) if thr is not None and sli != c.SLI_ERROR else None)
    events = (slo.get("sli") or {}).get("events") or {}
    queries = " ".join(str(events.get(k, "")) for k in ("error_query", "total_query"))
    for metric_name, sli in _SLOTH_HISTOGRAM_SLI.items():
        if metric_name + "_bucket" in queries:
            le = _LE_RE.search(queries)
            if le is None:
                raise ConfigError(
                    f"sloth SLO {slo.get('name')!r}: latency query over {metric_name} without le"
                )
            return sli, float(le.group(1))
    return c.SLI_ERROR, None


def slos_from_sloth(text: str) -> tuple[SloSpec, ...]:
    """Convert a Sloth `prometheus/v1` spec into our SLO specs.

    Sloth judges latency at histogram bucket boundaries; we judge each request at the exact
    threshold. The SLI is taken from the labels `pd_observer_sli` / `pd_observer_threshold_seconds`
    when present, else recognised from a vLLM histogram in the queries (threshold = its `le`),
    else it is an availability (error) SLO. `objective` is a percentage in Sloth.
    """
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("sloth spec is not valid YAML") from exc
    if not isinstance(doc, dict) or doc.get("version") != SLOTH_VERSION:
        raise ConfigError(f"not a Sloth spec: version must be {SLOTH_VERSION!r}")
    service_labels = doc.get("labels") or {}
    out: list[SloSpec] = []
    for slo in doc.get("slos") or []:
        if not isinstance(slo, dict) or "name" not in slo or "objective" not in slo:
            raise ConfigError("sloth spec: every SLO needs name and objective")
        labels = {**service_labels, **(slo.get("labels") or {})}
        sli, threshold = _sloth_sli(slo, labels)
        tenants = labels.get(c.LABEL_TENANT)
        out.append(
            SloSpec(
                name=str(slo["name"]),
                sli=sli,
                objective=round(float(slo["objective"]) / 100.0, 10),
                threshold_seconds=threshold,
                tenants=tuple(str(tenants).split(",")) if tenants else (),
                description=str(slo.get("description", "")),
            )
        )
    return tuple(out)
