"""Alertmanager routing as data (pure): a tree by severity, then by team; grouping; inhibition.

```
root (default receiver, grouped by alertname, slo, tenant, pool)
├── severity="page"   -> page_receiver     ├── tenant=~"<team tenants>" -> team.receiver
│                                          └── pool=~"<team pools>"     -> team.receiver
└── severity="ticket" -> ticket_receiver   ├── tenant=~...              -> team.ticket_receiver
                                           └── pool=~...                -> team.ticket_receiver
```
Inhibition: a page burn-rate alert mutes the ticket burn-rate alert of the same slo+tenant;
the observer-blind alert mutes the signal alerts whose evidence it makes meaningless.
"""

from __future__ import annotations

from dataclasses import dataclass

from alerts.generate import BLIND_INHIBITS, tenant_regex
from alerts.settings import DEFAULT_RECEIVER, AlertsSettings
from observer import conventions as c


@dataclass(frozen=True, slots=True)
class Receiver:
    name: str
    webhook_url: str | None = None
    send_resolved: bool = True


@dataclass(frozen=True, slots=True)
class Route:
    receiver: str
    matchers: tuple[str, ...] = ()
    routes: tuple[Route, ...] = ()
    group_by: tuple[str, ...] | None = None
    group_wait: str | None = None
    group_interval: str | None = None
    repeat_interval: str | None = None

    def walk(self) -> tuple[tuple[tuple[str, ...], str], ...]:
        """(accumulated matchers, receiver) for every node, root first."""
        out: list[tuple[tuple[str, ...], str]] = [(self.matchers, self.receiver)]
        for child in self.routes:
            out += [(self.matchers + m, r) for m, r in child.walk()]
        return tuple(out)


@dataclass(frozen=True, slots=True)
class InhibitRule:
    source_matchers: tuple[str, ...]
    target_matchers: tuple[str, ...]
    equal: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AlertmanagerConfig:
    route: Route
    receivers: tuple[Receiver, ...]
    inhibit_rules: tuple[InhibitRule, ...]


def eq(label: str, value: str) -> str:
    return f'{label}="{value}"'


def re_match(label: str, regex: str) -> str:
    return f'{label}=~"{regex}"'


def _team_routes(settings: AlertsSettings, severity: str) -> tuple[Route, ...]:
    routes: list[Route] = []
    for _team, ts in sorted(settings.teams.items()):
        receiver = ts.receiver if severity == c.SEVERITY_PAGE else ts.tickets_to
        if ts.tenants:
            routes.append(
                Route(receiver=receiver, matchers=(re_match(c.LABEL_TENANT, tenant_regex(ts.tenants)),))
            )
        if ts.pools:
            routes.append(
                Route(receiver=receiver, matchers=(re_match(c.LABEL_POOL, tenant_regex(ts.pools)),))
            )
    return tuple(routes)


def build_routing(settings: AlertsSettings) -> AlertmanagerConfig:
    route = Route(
        receiver=settings.default_receiver,
        group_by=settings.group_by,
        group_wait=settings.group_wait,
        group_interval=settings.group_interval,
        repeat_interval=settings.repeat_interval_ticket,
        routes=(
            Route(
                receiver=settings.page_receiver,
                matchers=(eq(c.LABEL_SEVERITY, c.SEVERITY_PAGE),),
                repeat_interval=settings.repeat_interval_page,
                routes=_team_routes(settings, c.SEVERITY_PAGE),
            ),
            Route(
                receiver=settings.ticket_receiver,
                matchers=(eq(c.LABEL_SEVERITY, c.SEVERITY_TICKET),),
                repeat_interval=settings.repeat_interval_ticket,
                routes=_team_routes(settings, c.SEVERITY_TICKET),
            ),
        ),
    )
    names = sorted({DEFAULT_RECEIVER, *settings.receivers})
    receivers = tuple(
        Receiver(name=n, webhook_url=r.webhook_url, send_resolved=r.send_resolved)
        if (r := settings.receivers.get(n)) is not None
        else Receiver(name=n)
        for n in names
    )
    inhibit = (
        InhibitRule(
            source_matchers=(eq(c.LABEL_SEVERITY, c.SEVERITY_PAGE), re_match(c.LABEL_SLO, ".+")),
            target_matchers=(eq(c.LABEL_SEVERITY, c.SEVERITY_TICKET), re_match(c.LABEL_SLO, ".+")),
            equal=(c.LABEL_SLO, c.LABEL_TENANT),
        ),
        InhibitRule(
            source_matchers=(eq(c.LABEL_ALERTNAME, c.ALERT_OBSERVER_BLIND),),
            target_matchers=(re_match(c.LABEL_ALERTNAME, "|".join(BLIND_INHIBITS)),),
        ),
    )
    return AlertmanagerConfig(route=route, receivers=receivers, inhibit_rules=inhibit)
