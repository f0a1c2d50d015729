"""Read vLLM, EPP and LMCache metrics per pod and pool from Prometheus (prometheus-api-client).

Detects which name generation the fleet exposes and uses it. A failing Prometheus gives a
snapshot with `ok=False` and every value unknown; a pod whose newest sample is older than
`stale_after_seconds` is unknown too. Answers are untrusted (a pod can put anything in its labels,
and Prometheus keeps it): every label value of every row is made safe in `query`
(`clean_rows`, observer/sources/untrusted.py) before pod, model, role or pool names are read,
and each answer is read under `max_body_bytes` (observer/sources/capped.py): past it the read
fails like any failed query, as it does when an answer is not complete within `timeout_seconds`
(the whole answer's deadline, each of the `retries` its own).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from observer import conventions as c
from observer.sources import promql
from observer.sources.capped import DEFAULT_MAX_API_BYTES, capped_session
from observer.sources.names import VLLM_SOURCE_LABEL, VllmNames, counter, detect_epp, detect_vllm
from observer.sources.names import all_candidate_names as _candidates
from observer.sources.samples import (
    VALID_ROLES,
    FleetSnapshot,
    PodSample,
    PodTarget,
    PoolSample,
    unknown_pods,
)
from observer.sources.untrusted import Clean, ValueCleaner, clean_value

MAX_BODY_SETTING = "sources.prometheus.max_body_bytes"  # named by a ResponseTooLarge
TIMEOUT_SETTING = "sources.prometheus.timeout_seconds"  # named by an AnswerTooSlow


@dataclass(frozen=True, slots=True)
class PrometheusSourceConfig:
    url: str = "http://127.0.0.1:9090"
    bearer_token: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout_seconds: float = 5.0  # each answer, connect to last byte (and each socket operation)
    retries: int = 2
    backoff_factor: float = 0.2
    rate_window_seconds: int = 60  # >= 4 scrape intervals
    stale_after_seconds: float = 60.0
    pod_label: str = c.PROM_LABEL_POD
    namespace_label: str = c.PROM_LABEL_NAMESPACE
    namespace: str | None = None  # restrict every query to this namespace
    role_label: str | None = None  # when series carry the role (pods not found by discovery)
    pool_label: str | None = None
    default_pool: str = "default"
    max_body_bytes: int = DEFAULT_MAX_API_BYTES  # per query answer, received and decoded


Query = Callable[[str], list[dict[str, Any]]]


def _value(item: Mapping[str, Any]) -> float | None:
    try:
        v = float(item["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return None if math.isnan(v) or math.isinf(v) else v


def clean_rows(rows: list[dict[str, Any]], clean: Clean = clean_value) -> list[dict[str, Any]]:
    """Instant-query rows with every label value passed through `clean`; a label whose value is
    not a string (never from Prometheus itself) is dropped, a row without a `metric` object gets
    an empty one. `rows` itself (the same list) when every value is already clean."""
    out: list[dict[str, Any]] | None = None
    for i, row in enumerate(rows):
        metric = row.get("metric") if isinstance(row, dict) else None
        fixed = _clean_labels(metric, clean) if isinstance(metric, dict) else {}
        if fixed is not metric:
            if out is None:
                out = list(rows[:i])
            out.append({**row, "metric": fixed} if isinstance(row, dict) else {"metric": fixed})
        elif out is not None:
            out.append(row)
    return rows if out is None else out


def _clean_labels(metric: dict[str, Any], clean: Clean) -> dict[str, Any]:
    """`metric` itself when every value is a clean string (checked without counting; the common
    short ASCII value inline), else a copy of its string values through `clean` (which counts
    each rewrite once)."""
    limit = c.MAX_VALUE_CHARS
    for v in metric.values():
        if type(v) is str and v.isascii() and len(v) <= limit and "\x00" not in v:
            continue
        if not isinstance(v, str) or clean_value(v) is not v:
            return {k: clean(v) for k, v in metric.items() if isinstance(v, str)}
    return metric


class PrometheusSource:
    """A MetricSource over the Prometheus HTTP API."""

    name = c.SOURCE_PROMETHEUS

    def __init__(
        self,
        config: PrometheusSourceConfig,
        targets: Callable[[], tuple[PodTarget, ...]] = tuple,
        client: PrometheusConnect | None = None,
    ) -> None:
        self.config = config
        self._targets = targets
        self.cleaner = ValueCleaner(self.name)  # label values of the answers
        headers = dict(config.headers)
        if config.bearer_token:
            headers["Authorization"] = f"Bearer {config.bearer_token}"
        retry = Retry(
            total=config.retries,
            backoff_factor=config.backoff_factor,
            status_forcelist=(429, 502, 503, 504),
            allowed_methods=("GET", "POST"),
        )
        self._client = client or PrometheusConnect(
            url=config.url,
            headers=headers or None,
            retry=retry,
            timeout=config.timeout_seconds,
            session=capped_session(
                config.max_body_bytes, MAX_BODY_SETTING, config.timeout_seconds, TIMEOUT_SETTING
            ),
        )

    # -- queries ---------------------------------------------------------------------------
    def _matchers(self) -> dict[str, str]:
        return {self.config.namespace_label: self.config.namespace} if self.config.namespace else {}

    def query(self, q: str) -> list[dict[str, Any]]:
        """An instant query's rows, label values made safe (`clean_rows`)."""
        result: list[dict[str, Any]] = self._client.custom_query(q)
        return clean_rows(result, self.cleaner)

    def present_names(self) -> set[str]:
        """Which candidate metric names exist (generation detection)."""
        rows = self.query(promql.names_present_query(_candidates(), self._matchers()))
        return {str(r["metric"].get("__name__")) for r in rows}

    def _by_pod(self, q: str) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for row in self.query(q):
            pod = row["metric"].get(self.config.pod_label)
            if pod is not None:
                out[str(pod)] = _value(row)
        return out

    def _gauge(self, name: str, agg: str = "avg") -> str:
        return f"{agg} {promql.by([self.config.pod_label])} ({promql.selector(name, self._matchers())})"

    def _rate(self, name: str, extra_by: tuple[str, ...] = ()) -> str:
        sel = promql.selector(counter(name), self._matchers())
        labels = promql.by([self.config.pod_label, *extra_by])
        return f"sum {labels} (rate({sel}[{int(self.config.rate_window_seconds)}s]))"

    # -- read --------------------------------------------------------------------------------
    def read(self, now: float) -> FleetSnapshot:
        targets = self._targets()
        try:
            present = self.present_names()
            vllm = detect_vllm(present)
            epp = detect_epp(present)
            pods, stale = self._read_pods(vllm, targets, now) if vllm else (unknown_pods(targets, now), ())
            pools = self._read_pools(epp, now) if epp else ()
        except (PrometheusApiClientException, requests.exceptions.RequestException, ValueError) as exc:
            return FleetSnapshot(
                source=self.name,
                time=now,
                ok=False,
                error=f"{type(exc).__name__}: {exc}"[:500],
                pods=unknown_pods(targets, now),
            )
        return FleetSnapshot(
            source=self.name,
            time=now,
            ok=True,
            vllm_generation=vllm.generation if vllm else None,
            epp_generation=epp,
            pods=pods,
            pools=pools,
            stale_pods=stale,
        )

    def _pod_meta(self, name: str) -> dict[str, dict[str, str]]:
        """pod -> its labels (model, role, pool) from the HBM usage series."""
        cfg = self.config
        labels = [cfg.pod_label, c.VLLM_LABEL_MODEL]
        labels += [x for x in (cfg.role_label, cfg.pool_label) if x]
        q = f"max {promql.by(labels)} ({promql.selector(name, self._matchers())})"
        out: dict[str, dict[str, str]] = {}
        for row in self.query(q):
            m = {k: str(v) for k, v in row["metric"].items()}
            if cfg.pod_label in m:
                out[m[cfg.pod_label]] = m
        return out

    def _read_pods(
        self, n: VllmNames, targets: tuple[PodTarget, ...], now: float
    ) -> tuple[tuple[PodSample, ...], tuple[str, ...]]:
        cfg = self.config
        meta = self._pod_meta(n.kv_usage)
        last_seen = self._by_pod(
            f"max {promql.by([cfg.pod_label])} (timestamp({promql.selector(n.kv_usage, self._matchers())}))"
        )
        kv = self._by_pod(self._gauge(n.kv_usage))
        cpu = self._by_pod(self._gauge(n.cpu_offload_usage))
        disk = self._by_pod(self._gauge(n.disk_bytes, "sum"))
        running = self._by_pod(self._gauge(n.running, "sum"))
        waiting = self._by_pod(self._gauge(n.waiting, "sum"))
        preempt = self._by_pod(self._rate(n.preemptions))
        prompt = self._by_pod(self._rate(n.prompt_tokens))
        gen = self._by_pod(self._rate(n.generation_tokens))
        pq = self._by_pod(self._rate(n.prefix_queries))
        ph = self._by_pod(self._rate(n.prefix_hits))
        evict = self._by_pod(self._rate(n.dram_evictions))
        by_tier: dict[str, dict[str, float]] = {}
        for row in self.query(self._rate(n.cached_by_source, (VLLM_SOURCE_LABEL,))):
            pod = row["metric"].get(cfg.pod_label)
            tier = c.VLLM_CACHED_SOURCE_TO_TIER.get(str(row["metric"].get(VLLM_SOURCE_LABEL)), c.TIER_UNKNOWN)
            v = _value(row)
            if pod is not None and v is not None:
                tiers = by_tier.setdefault(str(pod), {})
                tiers[tier] = tiers.get(tier, 0.0) + v

        known = {t.pod: t for t in targets}
        names = list(known) + sorted(p for p in meta if p not in known)
        samples: list[PodSample] = []
        stale: list[str] = []
        for pod in names:
            t = known.get(pod)
            m = meta.get(pod, {})
            role = t.role if t else (m.get(cfg.role_label) if cfg.role_label else None)
            role = role if role in VALID_ROLES else None  # like discovery: a known role or none
            pool = (
                t.pool
                if t
                else (m.get(cfg.pool_label, cfg.default_pool) if cfg.pool_label else cfg.default_pool)
            )
            model = m.get(c.VLLM_LABEL_MODEL) or (t.model if t else None)
            seen = last_seen.get(pod)
            if seen is None or now - seen > cfg.stale_after_seconds:
                stale.append(pod)
                samples.append(PodSample(pod=pod, role=role, pool=pool, model=model, time=now))
                continue
            samples.append(
                PodSample(
                    pod=pod,
                    role=role,
                    pool=pool,
                    model=model,
                    time=now,
                    kv_usage=kv.get(pod),
                    cpu_offload_usage=cpu.get(pod),
                    disk_bytes=disk.get(pod),
                    waiting=waiting.get(pod),
                    running=running.get(pod),
                    preemption_rate=preempt.get(pod),
                    prompt_tokens_rate=prompt.get(pod),
                    generation_tokens_rate=gen.get(pod),
                    prefix_queries_rate=pq.get(pod),
                    prefix_hits_rate=ph.get(pod),
                    cached_tokens_rate_by_tier=by_tier.get(pod),
                    dram_eviction_rate=evict.get(pod),
                )
            )
        return tuple(samples), tuple(stale)

    def _read_pools(self, generation: str, now: float) -> tuple[PoolSample, ...]:
        names = c.EPP_GENERATIONS[generation]
        lbl = c.EPP_LABEL_POOL

        def per_pool(metric: str) -> dict[str, float | None]:
            q = f"max {promql.by([lbl])} ({promql.selector(metric, self._matchers())})"
            return {str(r["metric"][lbl]): _value(r) for r in self.query(q) if lbl in r["metric"]}

        kv = per_pool(names["kv_cache_utilization"])
        queue = per_pool(names["queue_size"])
        running = per_pool(names["running_requests"])
        ready = per_pool(names["ready_endpoints"])
        pools = sorted(set(kv) | set(queue) | set(running) | set(ready))
        return tuple(
            PoolSample(
                pool=p,
                time=now,
                kv_cache_utilization=kv.get(p),
                queue_size=queue.get(p),
                running_requests=running.get(p),
                ready_endpoints=ready.get(p),
            )
            for p in pools
        )

    def tenant_request_rate(self, generation: str, tenant: str, model: str | None = None) -> float | None:
        """EPP request rate of one tenant (fairness id): tenant and model escaped via promql.quote."""
        matchers = {**self._matchers(), c.EPP_LABEL_FAIRNESS: tenant}
        if model is not None:
            matchers[c.EPP_LABEL_MODEL] = model
        sel = promql.selector(c.EPP_GENERATIONS[generation]["request_total"], matchers)
        rows = self.query(f"sum(rate({sel}[{int(self.config.rate_window_seconds)}s]))")
        return _value(rows[0]) if rows else None
