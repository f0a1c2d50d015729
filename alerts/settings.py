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
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from observer import conventions as c
from observer.config import ConfigError, Settings
from observer.k8snames import Labels, Namespace
from observer.sections import Section
from observer.sources.promql import LABEL_NAME_PATTERN, duration_seconds

NAME_PATTERN = r"^[A-Za-z0-9_.:-]+$"
# Tenants in SLOs and teams: NAME_PATTERN plus `@` and `+`, so tenant ids that are e-mail
# addresses (`alice+ops@example.com`) can scope alerts; `.` and `+` are matched literally
# (generate.tenant_regex).
TENANT_PATTERN = r"^[A-Za-z0-9_.:@+-]+$"
# Alertmanager's intervals (model.ParseDuration): units largest first, each at most once; `5m5m`
# and `1s1m` passed the former pattern `^([0-9]+(ms|s|m|h|d|w|y))+$` and Alertmanager refused the file.
AM_DURATION_RE = re.compile(
    r"(?:[0-9]+y)?(?:[0-9]+w)?(?:[0-9]+d)?(?:[0-9]+h)?(?:[0-9]+m)?(?:[0-9]+s)?(?:[0-9]+ms)?"
)
# A URL as Prometheus and Alertmanager parse it: scheme, a host, no space or control character.
URL_PATTERN = r"^https?://[^\x00-\x20\x7f/?#]+[^\x00-\x20\x7f]*$"
GROUP_BY_ALL = "..."  # Alertmanager: group by every label (alone)
DEFAULT_RECEIVER = "default"
# The signal alerts and their default severity; `alerts.severity` overrides. The SLO burn alert
# is not here: each of its window pairs has its own severity (the window set).
DEFAULT_SEVERITY: dict[str, str] = {
    c.ALERT_CACHE_CASCADE: c.SEVERITY_TICKET,
    c.ALERT_DECODE_STARVATION: c.SEVERITY_PAGE,
    c.ALERT_DECODE_PRESSURE: c.SEVERITY_TICKET,
    c.ALERT_KV_SATURATION: c.SEVERITY_TICKET,
    c.ALERT_PREFILL_QUEUE: c.SEVERITY_TICKET,
    c.ALERT_PD_IMBALANCE: c.SEVERITY_TICKET,
    c.ALERT_OBSERVER_BLIND: c.SEVERITY_PAGE,
    c.ALERT_AUTOSCALER_STUCK: c.SEVERITY_PAGE,
    c.ALERT_AUTOSCALER_THRASHING: c.SEVERITY_TICKET,
    c.ALERT_AUTOSCALER_ACTUATION: c.SEVERITY_TICKET,
    c.ALERT_AUTOSCALER_LEADERLESS: c.SEVERITY_TICKET,
}


def _am_duration(positive: bool) -> AfterValidator:
    def check(v: str) -> str:
        if not v or not AM_DURATION_RE.fullmatch(v):
            raise ValueError(f"{v!r} is not a duration (units y w d h m s ms, largest first, e.g. 1h30m)")
        if positive and not v.strip("0ywdhms"):
            raise ValueError(f"{v!r} must be longer than 0")
        return v

    return AfterValidator(check)


def _rule_duration(positive: bool) -> AfterValidator:
    """A duration written into the rules (`for`, a range): whole seconds, Prometheus' grammar."""

    def check(v: str) -> str:
        if duration_seconds(v) <= 0 and positive:  # ValueError for anything but a duration
            raise ValueError(f"{v!r} must be longer than 0")
        return v

    return AfterValidator(check)


AmInterval = Annotated[str, _am_duration(positive=True)]  # group_interval, repeat_interval
AmWait = Annotated[str, _am_duration(positive=False)]  # group_wait may be 0
RuleHold = Annotated[str, _rule_duration(positive=False)]  # `for`: 0 = fire at once
RuleRange = Annotated[str, _rule_duration(positive=True)]  # a PromQL range `[W]`


class ReceiverSettings(Section):
    """An Alertmanager receiver. With no webhook_url it is a null receiver (notifications dropped)."""

    webhook_url: str | None = Field(None, pattern=URL_PATTERN)
    send_resolved: bool = True


class TeamSettings(Section):
    """A team owns tenants (SLO alerts) and pools (signal alerts); its alerts go to its receivers."""

    tenants: tuple[str, ...] = ()
    pools: tuple[str, ...] = ()
    receiver: str = Field(min_length=1, description="receiver for page alerts (and tickets by default)")
    ticket_receiver: str | None = Field(None, description="receiver for ticket alerts; default `receiver`")

    @model_validator(mode="after")
    def _check(self) -> TeamSettings:
        for name in self.tenants:
            if not re.fullmatch(TENANT_PATTERN, name):
                raise ValueError(f"team tenant {name!r} must match {TENANT_PATTERN}")
        for name in self.pools:
            if not re.fullmatch(NAME_PATTERN, name):
                raise ValueError(f"team pool {name!r} must match {NAME_PATTERN}")
        if not self.tenants and not self.pools:
            raise ValueError("a team needs at least one tenant or pool")
        return self

    @property
    def tickets_to(self) -> str:
        return self.ticket_receiver or self.receiver


class SignalThresholds(Section):
    """Thresholds and hold times (`for`) of the signal alerts."""

    cascade_for: RuleHold = "2m"
    starvation_for: RuleHold = "5m"
    pressure_for: RuleHold = "10m"
    kv_saturation_usage: float = Field(0.9, gt=0, le=1)
    kv_saturation_for: RuleHold = "10m"
    prefill_queue_depth: float = Field(5.0, gt=0, description="mean waiting requests per prefill pod")
    prefill_queue_for: RuleHold = "5m"
    pd_imbalance_ratio: float = Field(1.5, gt=1, description="needed/deployed P:D ratio off by this factor")
    pd_imbalance_for: RuleHold = "15m"
    source_max_age_seconds: float = Field(120.0, gt=0)
    blind_for: RuleHold = "2m"
    stuck_for: RuleHold = "15m"
    thrashing_decisions_per_hour: int = Field(6, ge=1)
    actuation_errors_window: RuleRange = "15m"
    leaderless_for: RuleHold = Field(
        "5m",
        description="no `serve` instance leading its autoscaler loop this long",
    )


class AlertsSettings(Section):
    runbook_base_url: str = Field(
        "https://github.com/pd-observer/pd-observer/blob/main/docs/runbooks/",
        pattern=URL_PATTERN,
        description="runbook_url = this + <AlertName>.md (no `{{`: annotations are templates)",
    )
    window_set: str = Field("sre-workbook", min_length=1, description="packaged set name or YAML path")
    rule_group_prefix: str = Field("pd-observer", pattern=NAME_PATTERN)
    receivers: dict[str, ReceiverSettings] = Field(default_factory=dict)
    default_receiver: str = DEFAULT_RECEIVER
    page_receiver: str = DEFAULT_RECEIVER
    ticket_receiver: str = DEFAULT_RECEIVER
    teams: dict[str, TeamSettings] = Field(default_factory=dict)
    group_by: tuple[str, ...] = (c.LABEL_ALERTNAME, c.LABEL_SLO, c.LABEL_TENANT, c.LABEL_POOL)
    group_wait: AmWait = "30s"
    group_interval: AmInterval = "5m"
    repeat_interval_page: AmInterval = "1h"
    repeat_interval_ticket: AmInterval = "12h"
    severity: dict[str, str] = Field(
        default_factory=dict, description="alert name -> page|ticket, overriding the defaults"
    )
    signals: SignalThresholds = SignalThresholds()
    prometheus_rule_name: str = Field("pd-observer", pattern=NAME_PATTERN)
    prometheus_rule_namespace: Namespace | None = None
    prometheus_rule_labels: Labels = Field(default_factory=dict)

    @field_validator("runbook_base_url")
    @classmethod
    def _no_template(cls, v: str) -> str:
        if "{{" in v:  # the whole rule file failed to load (promtool: "template: ... unexpected")
            raise ValueError("must not contain '{{' (Prometheus expands annotations as templates)")
        return v

    @field_validator("receivers")
    @classmethod
    def _receiver_names(cls, v: dict[str, ReceiverSettings]) -> dict[str, ReceiverSettings]:
        if any(not name.strip() for name in v):  # Alertmanager: "missing name in receiver"
            raise ValueError("a receiver name must not be empty")
        return v

    @field_validator("group_by")
    @classmethod
    def _group_by(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if GROUP_BY_ALL in v and len(v) > 1:
            raise ValueError(f"{GROUP_BY_ALL!r} (every label) cannot be combined with other labels")
        for label in v:
            if label != GROUP_BY_ALL and not re.fullmatch(LABEL_NAME_PATTERN, label):
                raise ValueError(f"{label!r} is not a label name ({LABEL_NAME_PATTERN}) or '{GROUP_BY_ALL}'")
        return v

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
            if alert == c.ALERT_SLO_BURN:
                raise ValueError(
                    f"severity.{alert}: set by the window set (alerts.window_set), per window pair"
                )
            if alert not in DEFAULT_SEVERITY:  # a typo was ignored: the alert kept its default
                raise ValueError(f"severity.{alert}: no such alert (one of {', '.join(DEFAULT_SEVERITY)})")
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
