"""Every PromQL expression of the dashboards: panel targets, variable queries, annotations.

Pure string building from `observer.conventions` names; nothing here names one deployment.
Template variables (`$namespace`, `$pool`, `$model`, `$tenant`, `$window`) are matched with
`=~` so "All" (`.*`) and multi-value selections (`(a|b)`) work; `$__rate_interval` is Grafana's.

Which label carries what, per source:
- pd-observer's own series: `tenant`, `model`, `pool`, `pod`, `role`, `tier`, `slo`, `window`.
  The namespace filter is NOT applied to them (the observer may run in another namespace than
  the fleet it watches; its pool/tenant labels already say which fleet).
- vLLM pods: `model_name`; `namespace`, `pod`, `pool`, `role` as the scrape config's Kubernetes
  relabelling sets them.
- EPP: pool as `name`, tenant as `fairness_id`; `namespace` from the scrape.
Where names changed between generations (vLLM legacy, EPP), both are queried with `or`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from observer import conventions as c

# Template variable names (dashboard URL parameters are `var-<name>`).
VAR_DATASOURCE = "datasource"
VAR_NAMESPACE = "namespace"
VAR_POOL = "pool"
VAR_MODEL = "model"
VAR_TENANT = "tenant"
VAR_WINDOW = "window"
RATE = "$__rate_interval"
ALL_VALUE = ".*"
LE = "le"


def ref(var: str) -> str:
    """`$var` as it appears inside a PromQL string."""
    return "$" + var


@dataclass(frozen=True, slots=True)
class Query:
    """One panel target: PromQL, legend template, instant or range."""

    expr: str
    legend: str = ""
    instant: bool = False


def counter(name: str) -> str:
    """A counter as exposed (`_total` appended by prometheus_client / vLLM)."""
    return name + c.COUNTER_SUFFIX


def sel(metric: str, *matchers: str) -> str:
    """`metric{m1, m2}` (no braces when there is no matcher)."""
    ms = ", ".join(m for m in matchers if m)
    return f"{metric}{{{ms}}}" if ms else metric


def re_(label: str, var: str) -> str:
    """`label=~"$var"`."""
    return f'{label}=~"{ref(var)}"'


def eq(label: str, value: str) -> str:
    return f'{label}="{value}"'


def by(*labels: str) -> str:
    return ", ".join(labels)


def num(x: float) -> str:
    """A float as PromQL: 2, 0.1 (no binary noise)."""
    return repr(round(float(x), 10)).removesuffix(".0")


def lg(label: str) -> str:
    """A legend reference to a label: `{{label}}`."""
    return "{{" + label + "}}"


LG_POOL = lg(c.LABEL_POOL)
LG_ROLE = lg(c.LABEL_ROLE)
LG_POD = lg(c.LABEL_POD)
LG_TENANT = lg(c.LABEL_TENANT)
LG_TIER = lg(c.LABEL_TIER)
LG_SLO = lg(c.LABEL_SLO)
LG_SOURCE = lg(c.LABEL_SOURCE)
LG_REASON = lg(c.LABEL_REASON)
LG_SCORER = lg(c.LABEL_SCORER)
LG_QUANTILE = lg(c.LABEL_QUANTILE)
LG_EPP_POOL = lg(c.EPP_LABEL_POOL)
LG_EPP_FAIRNESS = lg(c.EPP_LABEL_FAIRNESS)
LG_EPP_DECISION_TYPE = lg(c.EPP_LABEL_DECISION_TYPE)


# --- matcher sets ---------------------------------------------------------------------------
T = re_(c.LABEL_TENANT, VAR_TENANT)
M = re_(c.LABEL_MODEL, VAR_MODEL)
P = re_(c.LABEL_POOL, VAR_POOL)
W = re_(c.LABEL_WINDOW, VAR_WINDOW)
NS = re_(c.PROM_LABEL_NAMESPACE, VAR_NAMESPACE)
VM = re_(c.VLLM_LABEL_MODEL, VAR_MODEL)
EPP_POOL = re_(c.EPP_LABEL_POOL, VAR_POOL)
EPP_TENANT = re_(c.EPP_LABEL_FAIRNESS, VAR_TENANT)
EPP_MODEL = re_(c.EPP_LABEL_MODEL, VAR_MODEL)
VLLM = (NS, P, VM)  # the filters every vLLM series gets
PREFILL = eq(c.LABEL_ROLE, c.ROLE_PREFILL)
DECODE = eq(c.LABEL_ROLE, c.ROLE_DECODE)
EPP_CURRENT = "llm_d_epp"  # key of the newest generation in conventions.EPP_GENERATIONS


def rate(metric: str, *matchers: str) -> str:
    return f"rate({sel(counter(metric), *matchers)}[{RATE}])"


def sum_rate(metric: str, labels: Iterable[str], *matchers: str) -> str:
    grp = by(*labels)
    prefix = f"sum by ({grp}) " if grp else "sum "
    return f"{prefix}({rate(metric, *matchers)})"


def either(*exprs: str) -> str:
    """The first expression that has data (generations of one metric)."""
    return "\nor\n".join(exprs)


def epp_names(key: str) -> tuple[str, ...]:
    """The EPP metric `key` across generations, newest first, without duplicates."""
    seen: list[str] = []
    for gen in c.EPP_GENERATIONS.values():
        if gen[key] not in seen:
            seen.append(gen[key])
    return tuple(seen)


def hquantile(q: float, metric: str, labels: Iterable[str], *matchers: str) -> str:
    """histogram_quantile over a classic histogram's buckets."""
    grp = by(LE, *labels)
    return (
        f"histogram_quantile({num(q)}, sum by ({grp}) (rate({sel(metric + '_bucket', *matchers)}[{RATE}])))"
    )


# --- template variables ---------------------------------------------------------------------
# Grafana `label_values(metric, label)` queries; the selector part is plain PromQL.
@dataclass(frozen=True, slots=True)
class VariableQuery:
    name: str
    label: str
    metric_selector: str
    label_name: str

    @property
    def query(self) -> str:
        return f"label_values({self.metric_selector}, {self.label_name})"


VARIABLES: tuple[VariableQuery, ...] = (
    VariableQuery(VAR_NAMESPACE, "Namespace", c.VLLM_NUM_RUNNING, c.PROM_LABEL_NAMESPACE),
    VariableQuery(VAR_POOL, "Pool", c.M_POD_QUEUE, c.LABEL_POOL),
    VariableQuery(VAR_MODEL, "Model", counter(c.M_REQUESTS), c.LABEL_MODEL),
    VariableQuery(VAR_TENANT, "Tenant", sel(counter(c.M_REQUESTS), M), c.LABEL_TENANT),
    VariableQuery(VAR_WINDOW, "Window", c.M_PREFIX_HIT_RATE, c.LABEL_WINDOW),
)
MULTI_VARIABLES = (VAR_NAMESPACE, VAR_POOL, VAR_MODEL, VAR_TENANT)  # "All" + multi-select


# --- fleet SLO overview ---------------------------------------------------------------------
def fleet_request_rate() -> Query:
    return Query(f"sum({rate(c.M_REQUESTS, T, M)})", "requests/s")


def fleet_error_ratio() -> Query:
    return Query(f"sum({rate(c.M_REQUEST_ERRORS, T, M)})\n/\nsum({rate(c.M_REQUESTS, T, M)})", "errors")


def fleet_hit_rate() -> Query:
    return Query(
        f"sum({rate(c.M_CACHED_TOKENS, T, M)})\n/\nsum({rate(c.M_PROMPT_TOKENS, T, M)})", "prefix hit rate"
    )


def signals_firing() -> tuple[Query, ...]:
    return (
        Query(f"sum({sel(c.M_CASCADE, T)}) or vector(0)", "cascading tenants"),
        Query(f"sum({sel(c.M_DECODE_STARVATION, P)}) or vector(0)", "starving pools"),
        Query(f"sum({sel(c.M_DECODE_PRESSURE, P)}) or vector(0)", "pools under decode pressure"),
    )


def slo_attainment() -> Query:
    return Query(
        f"min by ({by(c.LABEL_SLO, c.LABEL_TENANT)}) ({sel(c.M_SLO_ATTAINMENT, T, W)})",
        f"{LG_SLO} · {LG_TENANT}",
        instant=True,
    )


def slo_burn_rate() -> Query:
    return Query(
        f"max by ({by(c.LABEL_SLO, c.LABEL_TENANT)}) ({sel(c.M_SLO_BURN_RATE, T, W)})",
        f"{LG_SLO} · {LG_TENANT}",
    )


def slo_burn_rate_recorded(window: str) -> Query:
    """Burn rate from the alerts' recording rule over `window`: error ratio / (1 − objective)."""
    return Query(
        f"max by ({by(c.LABEL_SLO, c.LABEL_TENANT)}) ({sel(c.slo_error_ratio_record(window), T)})\n"
        f"/ on ({c.LABEL_SLO}) group_left ()\n"
        f"(1 - max by ({c.LABEL_SLO}) ({c.M_SLO_OBJECTIVE}))",
        f"{LG_SLO} · {LG_TENANT} ({window})",
    )


def latency_quantile(sli: str, quantile: str = "0.9") -> Query:
    return Query(
        f"max by ({c.LABEL_TENANT}) "
        f"({sel(c.M_LATENCY_QUANTILE, eq(c.LABEL_PHASE, sli), eq(c.LABEL_QUANTILE, quantile), T, W)})",
        f"{LG_TENANT} p{quantile.removeprefix('0.')}",
    )


def slo_threshold(slo_name: str, threshold_seconds: float) -> Query:
    """A constant line at an SLO's latency threshold."""
    return Query(f"vector({num(threshold_seconds)})", f"SLO {slo_name} ({num(threshold_seconds)} s)")


def vllm_latency_p90(metric: str) -> Query:
    return Query(hquantile(0.9, metric, (c.LABEL_POOL,), *VLLM), f"vLLM p90 {LG_POOL}")


def source_health() -> tuple[Query, ...]:
    return (
        Query(f"max by ({c.LABEL_SOURCE}) ({c.M_SOURCE_UP})", f"up {LG_SOURCE}"),
        Query(f"max by ({c.LABEL_SOURCE}) ({c.M_SOURCE_AGE})", f"age s {LG_SOURCE}"),
    )


# --- tenants --------------------------------------------------------------------------------
def hit_rate_by_tier() -> Query:
    """Token-weighted hit rate per tenant split by tier (stack the tiers to get the total)."""
    return Query(
        f"{sum_rate(c.M_CACHED_TOKENS, (c.LABEL_TENANT, c.LABEL_TIER), T, M)}\n"
        f"/ ignoring ({c.LABEL_TIER}) group_left ()\n"
        f"{sum_rate(c.M_PROMPT_TOKENS, (c.LABEL_TENANT,), T, M)}",
        f"{LG_TENANT} {LG_TIER}",
    )


def prefix_hit_rate_gauge() -> Query:
    return Query(f"max by ({c.LABEL_TENANT}) ({sel(c.M_PREFIX_HIT_RATE, T, W)})", LG_TENANT)


def tier_share() -> Query:
    return Query(
        f"max by ({by(c.LABEL_TENANT, c.LABEL_TIER)}) ({sel(c.M_TIER_SHARE, T, W)})",
        f"{LG_TENANT} {LG_TIER}",
    )


def top_cache_misses(k: int) -> Query:
    """Tenants with the most prompt tokens not served from any cache tier."""
    missing = (
        f"{sum_rate(c.M_PROMPT_TOKENS, (c.LABEL_TENANT,), T, M)}\n"
        f"- ({sum_rate(c.M_CACHED_TOKENS, (c.LABEL_TENANT,), T, M)} or "
        f"0 * {sum_rate(c.M_PROMPT_TOKENS, (c.LABEL_TENANT,), T, M)})"
    )
    return Query(f"topk({k},\n{missing}\n)", LG_TENANT, instant=True)


def tenant_requests() -> Query:
    return Query(sum_rate(c.M_REQUESTS, (c.LABEL_TENANT,), T, M), LG_TENANT)


def epp_requests_by_fairness() -> Query:
    exprs = [
        f"sum by ({c.EPP_LABEL_FAIRNESS}) (rate({sel(n, NS, EPP_TENANT, EPP_MODEL)}[{RATE}]))"
        for n in epp_names("request_total")
    ]
    return Query(either(*exprs), f"EPP {LG_EPP_FAIRNESS}")


# --- KV tiers -------------------------------------------------------------------------------
def pod_tier_usage() -> Query:
    return Query(
        f"max by ({by(c.LABEL_POD, c.LABEL_TIER)}) ({sel(c.M_POD_TIER_USAGE, P)})",
        f"{LG_POD} {LG_TIER}",
    )


def vllm_hbm_usage() -> Query:
    return Query(
        either(
            f"max by ({c.LABEL_POD}) ({sel(c.VLLM_KV_USAGE, *VLLM)})",
            f"max by ({c.LABEL_POD}) ({sel(c.VLLM_KV_USAGE_LEGACY, *VLLM)})",
        ),
        f"HBM {LG_POD}",
    )


def vllm_dram_usage() -> Query:
    return Query(f"max by ({c.LABEL_POD}) ({sel(c.VLLM_CPU_OFFLOAD_USAGE, *VLLM)})", f"DRAM {LG_POD}")


def lmcache_disk_bytes() -> Query:
    return Query(f"max by ({c.LABEL_POD}) ({sel(c.LMCACHE_LOCAL_STORAGE_USAGE, NS, P)})", f"disk {LG_POD}")


def vllm_cached_by_source() -> Query:
    return Query(
        sum_rate(c.VLLM_PROMPT_TOKENS_CACHED_BY_SOURCE, (c.LABEL_SOURCE,), *VLLM),
        LG_SOURCE,
    )


def pod_evictions() -> tuple[Query, ...]:
    return (
        Query(
            f"sum by ({by(c.LABEL_POD, c.LABEL_TIER)}) ({sel(c.M_POD_EVICTION_RATE, P)})",
            f"{LG_POD} {LG_TIER}",
        ),
        Query(
            f"sum by ({c.LABEL_POD}) ({rate(c.LMCACHE_CPU_EVICT, NS, P)})",
            f"LMCache DRAM {LG_POD}",
        ),
    )


def pod_demotions() -> Query:
    return Query(
        f"sum by ({by(c.LABEL_POD, c.LABEL_TIER)}) ({sel(c.M_POD_DEMOTION_RATE, P)})",
        f"{LG_POD} → {LG_TIER}",
    )


def preemptions() -> Query:
    return Query(sum_rate(c.VLLM_PREEMPTIONS, (c.LABEL_POD,), *VLLM), LG_POD)


def cascade_evidence() -> tuple[Query, ...]:
    return (
        Query(f"max by ({c.LABEL_TENANT}) ({sel(c.M_HBM_SHARE_DROP, T)})", f"HBM share drop {LG_TENANT}"),
        Query(f"max by ({c.LABEL_TENANT}) ({sel(c.M_TTFT_RATIO, T)})", f"TTFT p90 / baseline {LG_TENANT}"),
    )


def cascade_state() -> Query:
    return Query(f"max by ({c.LABEL_TENANT}) ({sel(c.M_CASCADE, T)})", LG_TENANT)


def cascade_annotation() -> str:
    """Marks where a tenant's cache partition cascade is firing."""
    return f"max by ({c.LABEL_TENANT}) ({sel(c.M_CASCADE, T)}) > 0"


# --- P/D balance ----------------------------------------------------------------------------
def prefill_queue() -> tuple[Query, ...]:
    return (
        Query(f"max by ({c.LABEL_POD}) ({sel(c.M_POD_QUEUE, P, PREFILL)})", f"observer {LG_POD}"),
        Query(
            f"sum by ({c.LABEL_POD}) ({sel(c.VLLM_NUM_WAITING, *VLLM, PREFILL)})",
            f"vLLM waiting {LG_POD}",
        ),
        Query(
            either(
                *(f"max by ({c.EPP_LABEL_POOL}) ({sel(n, NS, EPP_POOL)})" for n in epp_names("queue_size"))
            ),
            f"EPP avg queue {LG_EPP_POOL}",
        ),
    )


def starvation() -> tuple[Query, ...]:
    return (
        Query(
            f"max by ({c.LABEL_POOL}) ({sel(c.M_PRE_DECODE_SHARE, P)})", f"pre-decode TTFT share {LG_POOL}"
        ),
        Query(f"max by ({c.LABEL_POOL}) ({sel(c.M_DECODE_BUSY_RATIO, P)})", f"decode busy ratio {LG_POOL}"),
        Query(f"max by ({c.LABEL_POOL}) ({sel(c.M_DECODE_STARVATION, P)})", f"starvation {LG_POOL}"),
        Query(f"max by ({c.LABEL_POOL}) ({sel(c.M_DECODE_PRESSURE, P)})", f"decode pressure {LG_POOL}"),
    )


KV_PHASE = eq(c.LABEL_PHASE, c.PHASE_KV_TRANSFER)


def kv_transfer_time() -> tuple[Query, ...]:
    return (
        Query(
            f"max by ({c.LABEL_QUANTILE}) ({sel(c.M_LATENCY_QUANTILE, KV_PHASE, T, W)})",
            f"observer q{LG_QUANTILE}",
        ),
        Query(hquantile(0.9, c.VLLM_NIXL_XFER_TIME, (c.LABEL_POOL,), *VLLM), f"NIXL p90 {LG_POOL}"),
    )


def replicas_by_role() -> tuple[Query, ...]:
    return (
        Query(
            f"count by ({by(c.LABEL_POOL, c.LABEL_ROLE)}) ({sel(c.VLLM_NUM_RUNNING, *VLLM)})",
            f"pods {LG_POOL} {LG_ROLE}",
        ),
        Query(
            f"max by ({by(c.LABEL_POOL, c.LABEL_ROLE)}) ({sel(c.M_CURRENT_REPLICAS, P)})",
            f"autoscaler current {LG_POOL} {LG_ROLE}",
        ),
        Query(
            either(
                *(
                    f"max by ({c.EPP_LABEL_POOL}) ({sel(n, NS, EPP_POOL)})"
                    for n in epp_names("ready_endpoints")
                )
            ),
            f"EPP ready {LG_EPP_POOL}",
        ),
    )


def pd_ratio() -> tuple[Query, ...]:
    return (
        Query(f"max by ({c.LABEL_POOL}) ({sel(c.M_PD_RATIO_NEEDED, P)})", f"P:D needed {LG_POOL}"),
        Query(f"max by ({c.LABEL_POOL}) ({sel(c.M_PD_RATIO_DEPLOYED, P)})", f"P:D deployed {LG_POOL}"),
    )


def running_by_role() -> Query:
    return Query(
        f"sum by ({by(c.LABEL_POOL, c.LABEL_ROLE)}) ({sel(c.VLLM_NUM_RUNNING, *VLLM)})",
        f"running {LG_POOL} {LG_ROLE}",
    )


def decider_decisions() -> Query:
    return Query(
        f"sum by ({c.EPP_LABEL_DECISION_TYPE}) (rate({sel(c.EPP_DISAGG_DECISION, NS)}[{RATE}]))",
        LG_EPP_DECISION_TYPE,
    )


# --- autoscaler -----------------------------------------------------------------------------
def desired_vs_current() -> tuple[Query, ...]:
    return (
        Query(
            f"max by ({by(c.LABEL_POOL, c.LABEL_ROLE)}) ({sel(c.M_DESIRED_REPLICAS, P)})",
            f"desired {LG_POOL} {LG_ROLE}",
        ),
        Query(
            f"max by ({by(c.LABEL_POOL, c.LABEL_ROLE)}) ({sel(c.M_CURRENT_REPLICAS, P)})",
            f"current {LG_POOL} {LG_ROLE}",
        ),
    )


def decisions_by_reason() -> Query:
    return Query(
        f"sum by ({by(c.LABEL_POOL, c.LABEL_REASON)}) (increase({sel(counter(c.M_DECISIONS), P)}[{RATE}]))",
        f"{LG_POOL} {LG_REASON}",
    )


def decisions_annotation() -> str:
    """One marker where a pool's desired replicas of a role changed (a scaling decision), titled
    by pool and role. Not the decisions counter: every tick adds a reason to it, holds
    (`steady`, `cooldown`, ...) included, which would mark every tick."""
    return f"max by ({by(c.LABEL_POOL, c.LABEL_ROLE)}) (changes({sel(c.M_DESIRED_REPLICAS, P)}[{RATE}])) > 0"


def scorer_weights() -> Query:
    return Query(
        f"max by ({by(c.LABEL_POOL, c.LABEL_SCORER)}) ({sel(c.M_SCORER_WEIGHT, P)})", f"{LG_POOL} {LG_SCORER}"
    )


def actuation_errors() -> Query:
    return Query(
        f"sum by ({c.LABEL_POOL}) (increase({sel(counter(c.M_ACTUATION_ERRORS), P)}[{RATE}]))",
        f"errors {LG_POOL}",
    )


def seconds_since_last_action() -> Query:
    return Query(
        f"time() - max by ({c.LABEL_POOL}) ({sel(c.M_AUTOSCALER_LAST_ACTION, P)})", LG_POOL, instant=True
    )
