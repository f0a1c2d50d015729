"""Export: the whole pipeline (settings → generate → render) for the CLI and the HTTP API.

- `export(dir, settings)` backs `pd-observer dashboards export DIR`: the SLOs of the config;
- `dashboards_index(settings, slos)` backs `GET /api/v1/dashboards`;
- `dashboard_json(uid, settings, slos)` backs `GET /api/v1/dashboards/{uid}` (None -> 404).

The service passes its stored SLO set (the one `PUT /api/v1/slos` edits) as `slos`; None means
the config's `slos:`. The SLOs only draw the latency thresholds on the TTFT/ITL panels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dashboards.generate import Generated, generate_dashboards
from dashboards.render import (
    dashboard_dict,
    file_name,
    render_configmaps,
    render_json,
    render_provisioning,
)
from dashboards.settings import parse_dashboards_settings
from observer.config import Settings, load_settings
from observer.files import write_files
from observer.model import SloSpec

PROVISIONING_FILE = "provisioning/dashboards/pd-observer.yaml"
CONFIGMAPS_FILE = "pd-observer-dashboards-configmaps.yaml"


def _settings(settings: Settings | None) -> Settings:
    return settings if settings is not None else load_settings(env={})


def _generated(settings: Settings, slos: Sequence[SloSpec] | None = None) -> tuple[Generated, ...]:
    specs = tuple(slos) if slos is not None else settings.slo_specs()
    return generate_dashboards(parse_dashboards_settings(settings), specs)


def render_all(settings: Settings) -> dict[str, str]:
    """Relative file path -> content, in a fixed order (dashboards, provider, ConfigMaps)."""
    ds = parse_dashboards_settings(settings)
    generated = _generated(settings)
    files = {file_name(g.uid): render_json(g.model) for g in generated}
    files[PROVISIONING_FILE] = render_provisioning(ds)
    files[CONFIGMAPS_FILE] = render_configmaps(generated, ds)
    return files


def export(directory: str | Path, settings: Settings) -> list[Path]:
    """Write every dashboard JSON, the Grafana provider YAML and the ConfigMaps into `directory`,
    all or none (`observer.files.write_files`)."""
    out = Path(directory)
    return write_files({out / name: text for name, text in render_all(settings).items()})


def dashboards_index(
    settings: Settings | None = None, slos: Sequence[SloSpec] | None = None
) -> list[dict[str, Any]]:
    """Body of `GET /api/v1/dashboards`: uid, title, tags and panel count of each dashboard."""
    out = []
    for g in _generated(_settings(settings), slos):
        data = dashboard_dict(g.model)
        out.append(
            {
                "uid": g.uid,
                "title": g.title,
                "tags": data.get("tags", []),
                "panels": sum(1 for p in data.get("panels", []) if p.get("type") != "row"),
            }
        )
    return out


def dashboard_json(
    uid: str, settings: Settings | None = None, slos: Sequence[SloSpec] | None = None
) -> dict[str, Any] | None:
    """Body of `GET /api/v1/dashboards/{uid}`: the Grafana dashboard JSON, or None if unknown."""
    for g in _generated(_settings(settings), slos):
        if g.uid == uid:
            return dashboard_dict(g.model)
    return None
