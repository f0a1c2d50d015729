"""The `alerts` section of the settings, parsed from the free-form `Settings.alerts` dict.

```yaml
alerts:
  runbook_base_url: https://runbooks.example.com/pd-observer/   # + <AlertName>.md
  window_set: sre-workbook           # or pyrra, or a path to a window-set YAML file
  receivers: {oncall: {webhook_url: http://pager/hook}, tickets: {webhook_url: http://jira/hook}}
  page_receiver: oncall
  ticket_receiver: tickets
  teams:
    search: {tenants: [acme, globex], pools: [pool-a], receiver: search-oncall}
```
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from observer import conventions as c
from observer.config import ConfigError, Settings

NAME_PATTERN = r"^[A-Za-z0-9_.:-]+$"
DURATION_PATTERN = r"^([0-9]+(ms|s|m|h|d|w|y))+$"
DEFAULT_RECEIVER = "default"


class _Model(BaseModel):
    # finite numbers: a threshold of .inf rendered `>= inf`, a rule that never fires
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ReceiverSettings(_Model):
    """An Alertmanager receiver. With no webhook_url it is a null receiver (notifications dropped)."""

    webhook_url: str | None = Field(None, pattern=r"^https?://")
    send_resolved: bool = True


class TeamSettings(_Model):
    """A team owns tenants (SLO alerts) and pools (signal alerts); its alerts go to its receivers."""

    tenants: tuple[str, ...] = ()
    pools: tuple[str, ...] = ()
    receiver: str = Field(min_length=1, description="receiver for page alerts (and tickets by default)")
    ticket_receiver: str | None = Field(None, description="receiver for ticket alerts; default `receiver`")

    @model_validator(mode="after")
    def _check(self) -> TeamSettings:
        for name in (*self.tenants, *self.pools):
            if not re.fullmatch(NAME_PATTERN, name):
                raise ValueError(f"team tenant/pool {name!r} must match {NAME_PATTERN}")
        if not self.tenants and not self.pools:
            raise ValueError("a team needs at least one tenant or pool")
        return self

    @property
    def tickets_to(self) -> str:
        return self.ticket_receiver or self.receiver


class SignalThresholds(_Model):
    """Thresholds and hold times (`for`) of the signal alerts."""

    cascade_for: str = Field("2m", pattern=DURATION_PATTERN)
    starvation_for: str = Field("5m", pattern=DURATION_PATTERN)
    pressure_for: str = Field("10m", pattern=DURATION_PATTERN)
    kv_saturation_usage: float = Field(0.9, gt=0, le=1)
    kv_saturation_for: str = Field("10m", pattern=DURATION_PATTERN)
    prefill_queue_depth: float = Field(5.0, gt=0, description="mean waiting requests per prefill pod")
    prefill_queue_for: str = Field("5m", pattern=DURATION_PATTERN)
    pd_imbalance_ratio: float = Field(1.5, gt=1, description="needed/deployed P:D ratio off by this factor")
    pd_imbalance_for: str = Field("15m", pattern=DURATION_PATTERN)
    source_max_age_seconds: float = Field(120.0, gt=0)
    blind_for: str = Field("2m", pattern=DURATION_PATTERN)
    stuck_for: str = Field("15m", pattern=DURATION_PATTERN)
    thrashing_decisions_per_hour: int = Field(6, ge=1)
    actuation_errors_window: str = Field("15m", pattern=DURATION_PATTERN)
    leaderless_for: str = Field(
        "5m",
        pattern=DURATION_PATTERN,
        description="no `serve` instance leading its autoscaler loop this long",
    )


class AlertsSettings(_Model):
    runbook_base_url: str = Field(
        "https://github.com/pd-observer/pd-observer/blob/main/docs/runbooks/",
        pattern=r"^https?://",
        description="runbook_url = this + <AlertName>.md",
    )
    window_set: str = Field("sre-workbook", min_length=1, description="packaged set name or YAML path")
    rule_group_prefix: str = Field("pd-observer", pattern=NAME_PATTERN)
    receivers: dict[str, ReceiverSettings] = Field(default_factory=dict)
    default_receiver: str = DEFAULT_RECEIVER
    page_receiver: str = DEFAULT_RECEIVER
    ticket_receiver: str = DEFAULT_RECEIVER
    teams: dict[str, TeamSettings] = Field(default_factory=dict)
    group_by: tuple[str, ...] = (c.LABEL_ALERTNAME, c.LABEL_SLO, c.LABEL_TENANT, c.LABEL_POOL)
    group_wait: str = Field("30s", pattern=DURATION_PATTERN)
    group_interval: str = Field("5m", pattern=DURATION_PATTERN)
    repeat_interval_page: str = Field("1h", pattern=DURATION_PATTERN)
    repeat_interval_ticket: str = Field("12h", pattern=DURATION_PATTERN)
    severity: dict[str, str] = Field(
        default_factory=dict, description="alert name -> page|ticket, overriding the defaults"
    )
    signals: SignalThresholds = SignalThresholds()
    prometheus_rule_name: str = Field("pd-observer", pattern=NAME_PATTERN)
    prometheus_rule_namespace: str | None = None
    prometheus_rule_labels: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> AlertsSettings:
        known = {*self.receivers, DEFAULT_RECEIVER}
        used = {
            "default_receiver": self.default_receiver,
            "page_receiver": self.page_receiver,
            "ticket_receiver": self.ticket_receiver,
        }
        for team, ts in self.teams.items():
            used[f"teams.{team}.receiver"] = ts.receiver
            used[f"teams.{team}.ticket_receiver"] = ts.tickets_to
        for where, name in used.items():
            if name not in known:
                raise ValueError(f"{where}: unknown receiver {name!r} (define it under alerts.receivers)")
        for alert, sev in self.severity.items():
            if sev not in c.SEVERITIES:
                raise ValueError(f"severity.{alert}: must be one of {', '.join(c.SEVERITIES)}")
        owners: dict[tuple[str, str], str] = {}
        for team, ts in sorted(self.teams.items()):
            for kind, names in ((c.LABEL_TENANT, ts.tenants), (c.LABEL_POOL, ts.pools)):
                for name in names:
                    other = owners.setdefault((kind, name), team)
                    if other != team:
                        raise ValueError(f"{kind} {name!r} belongs to two teams: {other}, {team}")
        return self

    def runbook_url(self, alert: str) -> str:
        base = self.runbook_base_url if self.runbook_base_url.endswith("/") else self.runbook_base_url + "/"
        return f"{base}{alert}.md"


def parse_alerts_settings(raw: dict[str, Any] | Settings) -> AlertsSettings:
    """Parse `Settings.alerts` (or the dict itself). Raises ConfigError with one line."""
    data = raw.alerts if isinstance(raw, Settings) else raw
    try:
        return AlertsSettings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in ("alerts", *first["loc"]))
        msg = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"invalid configuration: {loc}: {msg}") from exc
