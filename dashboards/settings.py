"""The `dashboards` section of the settings, parsed from the free-form `Settings.dashboards` dict.

```yaml
dashboards:
  folder: pd-observer                 # Grafana folder (provisioning provider + ConfigMap annotation)
  tags: [pd-observer]
  refresh: 30s
  time_from: now-1h
  datasource_regex: ""                # restrict the datasource variable's choices (Grafana regex)
  burn_windows: [5m, 1h]              # recording-rule windows (alerts window set) plotted as burn rates
  top_tenants: 10
  provisioning_path: /var/lib/grafana/dashboards/pd-observer
  configmap_namespace: monitoring     # optional
  configmap_labels: {}                # extra labels on the ConfigMaps
```
"""

from __future__ import annotations

from pydantic import Field, ValidationError, field_validator

from observer.config import ConfigError, Settings
from observer.k8snames import Labels, Namespace
from observer.sections import Section
from observer.sources.promql import duration_seconds

DURATION_PATTERN = r"^([0-9]+(ms|s|m|h|d|w|y))+$"


class DashboardsSettings(Section):
    """Knobs of the generated dashboards; nothing here names one deployment."""

    folder: str = Field("pd-observer", min_length=1)
    tags: tuple[str, ...] = ("pd-observer",)
    refresh: str = Field("30s", pattern=DURATION_PATTERN)
    time_from: str = Field("now-1h", pattern=r"^now-[0-9]+[smhdwy]$")
    datasource_regex: str = ""
    burn_windows: tuple[str, ...] = Field(("5m", "1h"), min_length=1)
    top_tenants: int = Field(10, ge=1, le=100)
    provisioning_path: str = Field("/var/lib/grafana/dashboards/pd-observer", pattern=r"^/")
    configmap_namespace: Namespace | None = None
    configmap_labels: Labels = Field(default_factory=dict)

    @field_validator("burn_windows")
    @classmethod
    def _durations(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for w in v:  # a PromQL range: `5m5m` passed the loose pattern and broke every burn panel
            if duration_seconds(w) <= 0:
                raise ValueError(f"{w!r} must be longer than 0")
        return v


def parse_dashboards_settings(settings: Settings) -> DashboardsSettings:
    """Validate `settings.dashboards`; raise ConfigError with one line naming the bad field."""
    try:
        return DashboardsSettings.model_validate(settings.dashboards)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(root)"
        msg = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"invalid configuration: dashboards.{loc}: {msg}") from err
