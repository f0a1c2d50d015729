"""Export: the whole pipeline (load → validate → generate → render) for the CLI and the API.

- `export(dir, settings)` backs `pd-observer alerts export DIR`: the SLOs of the config (`slos:`);
- `rules_for_api(settings, slos)` backs `GET /api/v1/alerts/rules`: the service passes its stored
  SLO set (the one `PUT /api/v1/slos` edits), which wins over the config once seeded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alerts.generate import RuleSet, generate
from alerts.render import (
    alertmanager_dict,
    render_alertmanager,
    render_prometheus_rule,
    render_rules,
    rules_dict,
)
from alerts.routing import AlertmanagerConfig, build_routing
from alerts.settings import AlertsSettings, parse_alerts_settings
from alerts.spec import WindowSet, load_window_set, slos_from_settings
from alerts.validate import Issue, check
from observer.config import Settings
from observer.files import write_files
from observer.model import SloSpec

RULES_FILE = "pd-observer-rules.yaml"
PROMETHEUS_RULE_FILE = "pd-observer-prometheusrule.yaml"
ALERTMANAGER_FILE = "alertmanager.yml"


@dataclass(frozen=True, slots=True)
class Built:
    alerts: AlertsSettings
    windows: WindowSet
    rules: RuleSet
    routing: AlertmanagerConfig
    warnings: tuple[Issue, ...]


def build(settings: Settings, slos: Sequence[SloSpec] | None = None) -> Built:
    """Load, validate and generate for `slos` (None: the config's `slos:`). Raises
    observer.config.ConfigError on bad definitions."""
    alerts = parse_alerts_settings(settings)
    windows = load_window_set(alerts.window_set)
    specs = tuple(slos) if slos is not None else slos_from_settings(settings)
    warnings = check(specs, windows)
    return Built(
        alerts=alerts,
        windows=windows,
        rules=generate(specs, windows, alerts),
        routing=build_routing(alerts),
        warnings=warnings,
    )


def render_all(settings: Settings) -> dict[str, str]:
    """File name -> content, in a fixed order."""
    b = build(settings)
    return {
        RULES_FILE: render_rules(b.rules),
        PROMETHEUS_RULE_FILE: render_prometheus_rule(
            b.rules,
            name=b.alerts.prometheus_rule_name,
            namespace=b.alerts.prometheus_rule_namespace,
            labels=b.alerts.prometheus_rule_labels,
        ),
        ALERTMANAGER_FILE: render_alertmanager(b.routing),
    }


def export(directory: str | Path, settings: Settings) -> list[Path]:
    """Write the rule file, the PrometheusRule object and alertmanager.yml into `directory`, all
    or none (`observer.files.write_files`)."""
    out = Path(directory)
    return write_files({out / name: text for name, text in render_all(settings).items()})


def rules_for_api(settings: Settings, slos: Sequence[SloSpec] | None = None) -> dict[str, Any]:
    """Body of `GET /api/v1/alerts/rules`: the rule groups, the window set and the routing, for
    `slos` (the service's stored set; None: the config's `slos:`)."""
    b = build(settings, slos)
    return {
        "window_set": b.windows.name,
        **rules_dict(b.rules),
        "alertmanager": alertmanager_dict(b.routing),
        "warnings": [str(w) for w in b.warnings],
    }
