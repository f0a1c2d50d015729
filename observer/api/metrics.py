"""`collect()`-time Prometheus collector over the aggregator (DESIGN §4 exported metrics).

Counters are cumulative since process start (Prometheus handles the reset on restart); gauges are
computed from the windows at scrape time. Tenant and model labels are bounded by the
aggregator's folding (`aggregation.max_tenants` / `max_models`, the rest under `other`; the exact
bound is in observer/aggregate/windows.py) and their values by ingest (observer/ingest/sanitize.py:
at most `conventions.MAX_VALUE_CHARS` characters).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from observer import conventions as c

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from observer.pipeline import Pipeline

GAUGE_QUANTILES = (("p50", "0.5"), ("p90", "0.9"), ("p99", "0.99"))
GAUGE_LATENCIES = (c.SLI_TTFT, c.SLI_ITL, c.SLI_E2E, *c.PHASES)


class AggregatorCollector(Collector):
    def __init__(self, pipeline: Pipeline) -> None:
        self._p = pipeline

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        p = self._p
        now = p.clock()
        windows = p.settings.aggregation.windows_seconds
        with p.lock:
            totals = p.aggregator.totals()
            per_window = {w: p.aggregator.tenants(w, now) for w in windows}
            slos = list(p.aggregator.slos)
            tracked = p.aggregator.tracked_tenants
            tracked_models = p.aggregator.tracked_models

        tm = [c.LABEL_TENANT, c.LABEL_MODEL]
        requests = CounterMetricFamily(c.M_REQUESTS, "Requests served, by tenant and model", labels=tm)
        prompt = CounterMetricFamily(c.M_PROMPT_TOKENS, "Prompt tokens, by tenant and model", labels=tm)
        output = CounterMetricFamily(c.M_OUTPUT_TOKENS, "Output tokens, by tenant and model", labels=tm)
        errors = CounterMetricFamily(c.M_REQUEST_ERRORS, "Requests that ended in error", labels=tm)
        cached = CounterMetricFamily(
            c.M_CACHED_TOKENS,
            "Prompt tokens served from the prefix cache, by KV tier",
            labels=[*tm, c.LABEL_TIER],
        )
        for (tenant, model), t in sorted(totals.by_tenant_model.items()):
            requests.add_metric([tenant, model], t.requests)
            prompt.add_metric([tenant, model], t.prompt_tokens)
            output.add_metric([tenant, model], t.output_tokens)
            errors.add_metric([tenant, model], t.errors)
            for tier, n in t.cached.as_dict().items():
                cached.add_metric([tenant, model, tier], n)
        yield from (requests, prompt, output, errors, cached)

        st = [c.LABEL_SLO, c.LABEL_TENANT]
        slo_req = CounterMetricFamily(c.M_SLO_REQUESTS, "Requests judged against an SLO", labels=st)
        slo_err = CounterMetricFamily(
            c.M_SLO_ERRORS, "Requests judged bad against an SLO (exact threshold, per request)", labels=st
        )
        for (slo, tenant), (total, bad) in sorted(totals.by_slo_tenant.items()):
            slo_req.add_metric([slo, tenant], total)
            slo_err.add_metric([slo, tenant], bad)
        yield from (slo_req, slo_err)

        # the cardinality bounds: per label, the records folded into `other` and the values tracked
        for label, folded, tracked_now, (m_folded, m_tracked) in (
            ("tenant", totals.folded, tracked, (c.M_TENANTS_FOLDED, c.M_TRACKED_TENANTS)),
            ("model", totals.models_folded, tracked_models, (c.M_MODELS_FOLDED, c.M_TRACKED_MODELS)),
        ):
            counter = CounterMetricFamily(
                m_folded, f"Requests whose {label} was folded into `other` (cardinality bound)"
            )
            counter.add_metric([], folded)
            yield counter
            gauge = GaugeMetricFamily(m_tracked, f"{label.capitalize()}s tracked individually")
            gauge.add_metric([], tracked_now)
            yield gauge

        objective = GaugeMetricFamily(c.M_SLO_OBJECTIVE, "SLO objective", labels=[c.LABEL_SLO])
        for spec in slos:
            objective.add_metric([spec.name], spec.objective)
        yield objective

        tw = [c.LABEL_TENANT, c.LABEL_WINDOW]
        hit = GaugeMetricFamily(c.M_PREFIX_HIT_RATE, "Token-weighted prefix-cache hit rate", labels=tw)
        share = GaugeMetricFamily(
            c.M_TIER_SHARE, "Share of cached tokens served from each KV tier", labels=[*tw, c.LABEL_TIER]
        )
        lat = GaugeMetricFamily(
            c.M_LATENCY_QUANTILE,
            "Latency quantiles from the window's sketch",
            labels=[c.LABEL_TENANT, c.LABEL_PHASE, c.LABEL_QUANTILE, c.LABEL_WINDOW],
        )
        att = GaugeMetricFamily(c.M_SLO_ATTAINMENT, "good/total over the window", labels=[c.LABEL_SLO, *tw])
        burn = GaugeMetricFamily(
            c.M_SLO_BURN_RATE, "(1 - attainment)/(1 - objective) over the window", labels=[c.LABEL_SLO, *tw]
        )
        for w, stats in per_window.items():
            wl = c.WINDOW_LABELS.get(w, f"{w}s")
            for s in stats:
                if s.prefix_hit_rate is not None:
                    hit.add_metric([s.tenant, wl], s.prefix_hit_rate)
                if s.tier_shares is not None:
                    for tier, v in s.tier_shares.items():
                        share.add_metric([s.tenant, wl, tier], v)
                for name in GAUGE_LATENCIES:
                    q = s.quantiles.get(name)
                    if q is None:
                        continue
                    for attr, label in GAUGE_QUANTILES:
                        v = getattr(q, attr)
                        if v is not None:
                            lat.add_metric([s.tenant, name, label, wl], v)
                for slo_name, status in s.slo.items():
                    if status.attainment is not None:
                        att.add_metric([slo_name, s.tenant, wl], status.attainment)
                    if status.burn_rate is not None:
                        burn.add_metric([slo_name, s.tenant, wl], status.burn_rate)
        yield from (hit, share, lat, att, burn)
