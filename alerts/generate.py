"""Generate: SLO specs + a window set + alert settings -> rule groups (pure, no I/O).

Every metric, label, record and alert name comes from `observer.conventions`.
Annotation templates use only `{{ $labels.NAME }}` and `{{ printf "%.2f" $value }}` so the
evidence is always shown with the same precision (and tests can predict the text).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from alerts.settings import DEFAULT_SEVERITY, AlertsSettings
from alerts.spec import WindowSet, format_duration, parse_duration
from observer import conventions as c
from observer.model import SloSpec
from observer.sources.promql import quote

VALUE = '{{ printf "%.2f" $value }}'


def label_ref(name: str) -> str:
    return "{{ $labels." + name + " }}"


@dataclass(frozen=True, slots=True)
class RecordingRule:
    record: str
    expr: str
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class AlertRule:
    alert: str
    expr: str
    for_seconds: int
    labels: tuple[tuple[str, str], ...]
    annotations: tuple[tuple[str, str], ...]

    def label(self, name: str) -> str | None:
        return dict(self.labels).get(name)

    @property
    def severity(self) -> str:
        return dict(self.labels)[c.LABEL_SEVERITY]


Rule = RecordingRule | AlertRule


@dataclass(frozen=True, slots=True)
class RuleGroup:
    name: str
    rules: tuple[Rule, ...]
    interval: str | None = None


@dataclass(frozen=True, slots=True)
class RuleSet:
    groups: tuple[RuleGroup, ...]

    @property
    def alerts(self) -> tuple[AlertRule, ...]:
        return tuple(r for g in self.groups for r in g.rules if isinstance(r, AlertRule))

    @property
    def alert_names(self) -> tuple[str, ...]:
        return tuple(sorted({a.alert for a in self.alerts}))


# Alerts whose evidence comes from the observer's sources: meaningless while it is blind.
BLIND_INHIBITS: tuple[str, ...] = (
    c.ALERT_CACHE_CASCADE,
    c.ALERT_DECODE_STARVATION,
    c.ALERT_DECODE_PRESSURE,
    c.ALERT_KV_SATURATION,
    c.ALERT_PREFILL_QUEUE,
    c.ALERT_PD_IMBALANCE,
)


def num(x: float) -> str:
    """A float as PromQL/text: 14.4, 6, 0.01 (no binary noise like 0.010000000000000009)."""
    text = repr(round(float(x), 10))
    return text.removesuffix(".0")


def tenant_regex(tenants: Sequence[str]) -> str:
    """A RE2 alternation matching exactly these names (validated to alerts.settings.TENANT_PATTERN:
    `.` and `+` are its only regex metacharacters, each matched literally as a one-character
    class; Prometheus and Alertmanager anchor the whole regex)."""
    return "|".join(t.replace(".", "[.]").replace("+", "[+]") for t in sorted(tenants))


def _counter(name: str) -> str:
    return name + c.COUNTER_SUFFIX


def slo_recording_rules(windows: WindowSet) -> RuleGroup:
    by = f"{c.LABEL_SLO}, {c.LABEL_TENANT}"
    rules = tuple(
        RecordingRule(
            record=c.slo_error_ratio_record(w),
            expr=(
                f"sum by ({by}) (rate({_counter(c.M_SLO_ERRORS)}[{w}]))\n/\n"
                f"sum by ({by}) (rate({_counter(c.M_SLO_REQUESTS)}[{w}]))"
            ),
        )
        for w in windows.durations
    )
    return RuleGroup(name="pd-observer-slo-error-ratios", rules=rules)


def _slo_selector(spec: SloSpec) -> str:
    # names are validated (alerts.validate), and quoted as every PromQL value is (promql.quote)
    sel = f"{c.LABEL_SLO}={quote(spec.name)}"
    if spec.tenants:
        sel += f", {c.LABEL_TENANT}=~{quote(tenant_regex(spec.tenants))}"
    return "{" + sel + "}"


def slo_burn_alerts(spec: SloSpec, windows: WindowSet, settings: AlertsSettings) -> tuple[AlertRule, ...]:
    budget = num(1 - spec.objective)
    sel = _slo_selector(spec)
    period = format_duration(windows.period_seconds)
    what = (
        f"{spec.sli} <= {num(spec.threshold_seconds)} s"
        if spec.threshold_seconds is not None
        else "requests without error"
    )
    out: list[AlertRule] = []
    for w in windows.windows:
        f = num(w.factor)
        spent = num(100 * w.factor * w.long_seconds / windows.period_seconds)
        expr = (
            f"{c.slo_error_ratio_record(w.long)}{sel} / {budget} > {f}\n"
            f"and\n"
            f"{c.slo_error_ratio_record(w.short)}{sel} / {budget} > {f}"
        )
        slo, tenant = label_ref(c.LABEL_SLO), label_ref(c.LABEL_TENANT)
        out.append(
            AlertRule(
                alert=c.ALERT_SLO_BURN,
                expr=expr,
                for_seconds=w.for_seconds,
                labels=(
                    (c.LABEL_SEVERITY, w.severity),
                    (c.LABEL_SLO, spec.name),
                    (c.LABEL_LONG_WINDOW, w.long),
                    (c.LABEL_SHORT_WINDOW, w.short),
                ),
                annotations=(
                    (
                        c.ANNOTATION_SUMMARY,
                        f"SLO {slo} of tenant {tenant} burns its error budget {VALUE}x too fast "
                        f"({w.long}/{w.short})",
                    ),
                    (
                        c.ANNOTATION_DESCRIPTION,
                        f"Tenant {tenant} burns the {period} error budget of SLO {slo} "
                        f"(objective {num(spec.objective * 100)}% of {what}) at {VALUE}x over the "
                        f"last {w.long}, and above {f}x over the last {w.short}. Burn rate = error "
                        f"ratio / {budget}; {f}x spends {spent}% "
                        f"of the budget in {w.long}.",
                    ),
                    (c.ANNOTATION_RUNBOOK, settings.runbook_url(c.ALERT_SLO_BURN)),
                ),
            )
        )
    return tuple(out)


def _signal(  # noqa: PLR0917 - one positional slot per column of the alert table
    settings: AlertsSettings,
    alert: str,
    expr: str,
    for_: str,
    summary: str,
    description: str,
    extra_labels: tuple[tuple[str, str], ...] = (),
) -> AlertRule:
    severity = settings.severity.get(alert, DEFAULT_SEVERITY[alert])
    return AlertRule(
        alert=alert,
        expr=expr,
        for_seconds=parse_duration(for_) if for_ else 0,
        labels=((c.LABEL_SEVERITY, severity), *extra_labels),
        annotations=(
            (c.ANNOTATION_SUMMARY, summary),
            (c.ANNOTATION_DESCRIPTION, description),
            (c.ANNOTATION_RUNBOOK, settings.runbook_url(alert)),
        ),
    )


def signal_alerts(settings: AlertsSettings) -> RuleGroup:
    s = settings.signals
    pool, tenant, pod, role, source = (
        label_ref(c.LABEL_POOL),
        label_ref(c.LABEL_TENANT),
        label_ref(c.LABEL_POD),
        label_ref(c.LABEL_ROLE),
        label_ref(c.LABEL_SOURCE),
    )
    ratio = (
        f"max by ({c.LABEL_POOL}) ({c.M_PD_RATIO_NEEDED}) / max by ({c.LABEL_POOL}) ({c.M_PD_RATIO_DEPLOYED})"
    )
    low = num(round(1 / s.pd_imbalance_ratio, 4))
    rules = (
        _signal(
            settings,
            c.ALERT_CACHE_CASCADE,
            f"max by ({c.LABEL_TENANT}) ({c.M_CASCADE}) > 0",
            s.cascade_for,
            f"Cache partition cascade for tenant {tenant}",
            f"Tenant {tenant}: the HBM share of its prefix-cache hits fell >= 0.3 below its baseline "
            f"and its TTFT p90 is >= 2x baseline while fleet load is flat (cascade signal = {VALUE}). "
            f"Another tenant is evicting its prefix from HBM; see {c.M_HBM_SHARE_DROP} and "
            f"{c.M_TTFT_RATIO} for tenant {tenant}.",
        ),
        _signal(
            settings,
            c.ALERT_DECODE_STARVATION,
            f"max by ({c.LABEL_POOL}) ({c.M_DECODE_STARVATION}) > 0",
            s.starvation_for,
            f"Decode starvation in pool {pool}",
            f"Pool {pool}: >= 50% of TTFT is spent before decode starts while decode pods are <= 50% "
            f"busy, for consecutive windows (starvation signal = {VALUE}). Prefill is the "
            f"bottleneck; TTFT degrades for every tenant with no request failing.",
        ),
        _signal(
            settings,
            c.ALERT_DECODE_PRESSURE,
            f"max by ({c.LABEL_POOL}) ({c.M_DECODE_PRESSURE}) > 0",
            s.pressure_for,
            f"Decode pressure in pool {pool}",
            f"Pool {pool}: decode is overloaded (ITL p90 over SLO, KV usage >= 0.9 or preemptions; "
            f"pressure signal = {VALUE}).",
        ),
        _signal(
            settings,
            c.ALERT_KV_SATURATION,
            f"max by ({c.LABEL_POOL}, {c.LABEL_POD}, {c.LABEL_ROLE}) "
            f'({c.M_POD_TIER_USAGE}{{{c.LABEL_TIER}="{c.TIER_HBM}"}}) >= {num(s.kv_saturation_usage)}',
            s.kv_saturation_for,
            f"KV cache (HBM) saturated on {role} pod {pod} in pool {pool}",
            f"Pod {pod} ({role}, pool {pool}) uses {VALUE} of its HBM KV cache "
            f"(threshold {num(s.kv_saturation_usage)}) for {s.kv_saturation_for}: prefixes are being "
            f"evicted or demoted, and requests may be preempted.",
        ),
        _signal(
            settings,
            c.ALERT_PREFILL_QUEUE,
            f'avg by ({c.LABEL_POOL}) ({c.M_POD_QUEUE}{{{c.LABEL_ROLE}="{c.ROLE_PREFILL}"}})'
            f" >= {num(s.prefill_queue_depth)}",
            s.prefill_queue_for,
            f"Prefill queue building up in pool {pool}",
            f"Pool {pool}: prefill pods hold {VALUE} waiting requests on average "
            f"(threshold {num(s.prefill_queue_depth)}) for {s.prefill_queue_for}; TTFT grows with the queue.",
        ),
        _signal(
            settings,
            c.ALERT_PD_IMBALANCE,
            f"{ratio} > {num(s.pd_imbalance_ratio)}\nor\n{ratio} < {low}",
            s.pd_imbalance_for,
            f"Prefill/decode imbalance in pool {pool}",
            f"Pool {pool}: the prefill:decode replica ratio the load needs is {VALUE}x the deployed "
            f"ratio (pods counted by their {c.K8S_LABEL_ROLE} label; alert outside "
            f"{low}..{num(s.pd_imbalance_ratio)}).",
        ),
        _signal(
            settings,
            c.ALERT_OBSERVER_BLIND,
            f"max by ({c.LABEL_SOURCE}) ({c.M_SOURCE_UP}) == 0",
            s.blind_for,
            f"pd-observer is blind: source {source} is down",
            f"Source {source} is down ({c.M_SOURCE_UP} = {VALUE}): the signals computed from it "
            "are stale, and the signal alerts they drive are inhibited.",
            ((c.LABEL_REASON, c.BLIND_REASON_DOWN),),
        ),
        _signal(
            settings,
            c.ALERT_OBSERVER_BLIND,
            f"max by ({c.LABEL_SOURCE}) ({c.M_SOURCE_AGE}) > {num(s.source_max_age_seconds)}",
            s.blind_for,
            f"pd-observer is blind: data from source {source} is stale",
            f"The newest data from source {source} is {VALUE} s old (limit "
            f"{num(s.source_max_age_seconds)} s): signals computed from it are stale, and the "
            "signal alerts they drive are inhibited.",
            ((c.LABEL_REASON, c.BLIND_REASON_STALE),),
        ),
        _signal(
            settings,
            c.ALERT_OBSERVER_BLIND,
            f"absent({c.M_SOURCE_UP})",
            s.blind_for,
            "pd-observer is blind: its metrics are absent",
            f"Prometheus has no {c.M_SOURCE_UP} series at all (absent = {VALUE}): pd-observer is "
            "down or not scraped, so no SLO or signal alert can fire.",
            ((c.LABEL_REASON, c.BLIND_REASON_ABSENT),),
        ),
    )
    return RuleGroup(name="pd-observer-signals", rules=rules)


def autoscaler_alerts(settings: AlertsSettings) -> RuleGroup:
    s = settings.signals
    pool, role = label_ref(c.LABEL_POOL), label_ref(c.LABEL_ROLE)
    by = f"{c.LABEL_POOL}, {c.LABEL_ROLE}"
    rules = (
        _signal(
            settings,
            c.ALERT_AUTOSCALER_STUCK,
            f"max by ({by}) ({c.M_DESIRED_REPLICAS}) - max by ({by}) ({c.M_CURRENT_REPLICAS}) != 0",
            s.stuck_for,
            f"Autoscaler stuck: {role} replicas of pool {pool} do not reach the desired count",
            f"Pool {pool} role {role}: desired minus current replicas = {VALUE} for {s.stuck_for}. "
            "The scale request is not taking effect (quota, Pending pods, an owner reverting the "
            "change, or actuation errors).",
        ),
        _signal(
            settings,
            c.ALERT_AUTOSCALER_THRASHING,
            # changes of the desired replica counts, i.e. scaling decisions: the decisions
            # counter also counts every tick's holds (`steady`, `cooldown`, ...)
            f"sum by ({c.LABEL_POOL}) (changes({c.M_DESIRED_REPLICAS}[1h])) "
            f"> {s.thrashing_decisions_per_hour}",
            "",
            f"Autoscaler thrashing in pool {pool}",
            f"Pool {pool}: {VALUE} scaling decisions in the last hour (limit "
            f"{s.thrashing_decisions_per_hour}). The loop is flapping; capacity churn costs warm KV caches.",
        ),
        _signal(
            settings,
            c.ALERT_AUTOSCALER_ACTUATION,
            f"sum by ({c.LABEL_POOL}) "
            f"(increase({_counter(c.M_ACTUATION_ERRORS)}[{s.actuation_errors_window}])) > 0",
            "",
            f"Autoscaler cannot actuate pool {pool}",
            f"Pool {pool}: {VALUE} actuation errors in the last {s.actuation_errors_window} "
            "(Kubernetes API rejected or failed the scale/patch).",
        ),
        _signal(
            settings,
            c.ALERT_AUTOSCALER_LEADERLESS,
            # every `serve` running the loop exports the gauge: 1 on the leader, 0 standing by
            f"max({c.M_AUTOSCALER_LEADER}) == 0",
            s.leaderless_for,
            "No pd-observer instance leads the autoscaler",
            f"The highest autoscaler_leader gauge is {VALUE}: every instance running the control "
            f"loop has been standing by for {s.leaderless_for}, so nothing scales the pools or moves "
            "the EPP levers (the Lease cannot be taken or renewed).",
        ),
    )
    return RuleGroup(name="pd-observer-autoscaler", rules=rules)


def generate(specs: Sequence[SloSpec], windows: WindowSet, settings: AlertsSettings) -> RuleSet:
    """All rule groups: SLO error-ratio recordings, burn-rate alerts, signal and autoscaler alerts."""
    burn = tuple(a for spec in specs for a in slo_burn_alerts(spec, windows, settings))
    groups = [slo_recording_rules(windows)]
    if burn:
        groups.append(RuleGroup(name="pd-observer-slo-burn", rules=burn))
    groups += [signal_alerts(settings), autoscaler_alerts(settings)]
    prefix = settings.rule_group_prefix
    return RuleSet(
        groups=tuple(
            RuleGroup(name=prefix + g.name.removeprefix("pd-observer"), rules=g.rules, interval=g.interval)
            for g in groups
        )
    )
