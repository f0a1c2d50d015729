"""A loopback /metrics endpoint exposing every series the dashboards read, with real labels.

Our series carry the labels pd-observer exports; vLLM/LMCache/EPP series carry the labels the
real exporters plus Kubernetes scrape relabelling give them (namespace, pod, pool, role).
Counters and histograms grow with every scrape, so rates, increases and changes are positive.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from observer import conventions as c

TENANTS = ("acme", "globex")
MODEL = "llama-3-8b"
POOL = "pool-a"
NAMESPACE = "llm"
SLOS = ("ttft-2s", "itl-100ms", "availability")
PODS = (("pool-a-prefill-0", c.ROLE_PREFILL), ("pool-a-decode-0", c.ROLE_DECODE))
WINDOWS = tuple(c.WINDOW_LABELS.values())
QUANTILES = ("0.5", "0.9", "0.99")


def _g(name: str, labels: dict[str, str], value: float) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, name, labels=list(labels))
    g.add_metric(list(labels.values()), value)
    return g


class _Fleet(Collector):
    def __init__(self) -> None:
        self.n = 0

    def collect(self) -> Iterable[Metric]:
        self.n += 1
        n = float(self.n)
        out: list[Metric] = []

        def gauge(name: str, rows: list[tuple[dict[str, str], float]]) -> None:
            g = GaugeMetricFamily(name, name, labels=list(rows[0][0]))
            for labels, v in rows:
                g.add_metric(list(labels.values()), v)
            out.append(g)

        def counter(name: str, rows: list[tuple[dict[str, str], float]]) -> None:
            m = CounterMetricFamily(name, name, labels=list(rows[0][0]))
            for labels, v in rows:
                m.add_metric(list(labels.values()), v * n)
            out.append(m)

        def hist(name: str, labels: dict[str, str]) -> None:
            h = HistogramMetricFamily(name, name, labels=list(labels))
            h.add_metric(list(labels.values()), [("0.1", 2 * n), ("1.0", 8 * n), ("+Inf", 10 * n)], 4 * n)
            out.append(h)

        tm = [{c.LABEL_TENANT: t, c.LABEL_MODEL: MODEL} for t in TENANTS]
        counter(c.M_REQUESTS, [(x, 10) for x in tm])
        counter(c.M_REQUEST_ERRORS, [(x, 0.1) for x in tm])
        counter(c.M_PROMPT_TOKENS, [(x, 1000) for x in tm])
        counter(c.M_OUTPUT_TOKENS, [(x, 200) for x in tm])
        counter(c.M_CACHED_TOKENS, [({**x, c.LABEL_TIER: tier}, 100) for x in tm for tier in c.KNOWN_TIERS])
        st = [{c.LABEL_SLO: s, c.LABEL_TENANT: t} for s in SLOS for t in TENANTS]
        counter(c.M_SLO_REQUESTS, [(x, 10) for x in st])
        counter(c.M_SLO_ERRORS, [(x, 0.2) for x in st])
        gauge(c.M_SLO_OBJECTIVE, [({c.LABEL_SLO: s}, 0.99) for s in SLOS])
        tw = [{c.LABEL_TENANT: t, c.LABEL_WINDOW: w} for t in TENANTS for w in WINDOWS]
        gauge(c.M_PREFIX_HIT_RATE, [(x, 0.4) for x in tw])
        gauge(c.M_TIER_SHARE, [({**x, c.LABEL_TIER: tier}, 0.25) for x in tw for tier in c.KNOWN_TIERS])
        gauge(
            c.M_LATENCY_QUANTILE,
            [
                ({c.LABEL_TENANT: t, c.LABEL_PHASE: ph, c.LABEL_QUANTILE: q, c.LABEL_WINDOW: w}, 0.3)
                for t in TENANTS
                for ph in (*c.LATENCY_SLIS, c.PHASE_KV_TRANSFER)
                for q in QUANTILES
                for w in WINDOWS
            ],
        )
        stw = [{c.LABEL_SLO: s, **x} for s in SLOS for x in tw]
        gauge(c.M_SLO_ATTAINMENT, [(x, 0.995) for x in stw])
        gauge(c.M_SLO_BURN_RATE, [(x, 0.5) for x in stw])
        for name, v in ((c.M_CASCADE, 1.0), (c.M_HBM_SHARE_DROP, 0.4), (c.M_TTFT_RATIO, 3.0)):
            gauge(name, [({c.LABEL_TENANT: t}, v) for t in TENANTS])
        for name in (
            c.M_DECODE_STARVATION,
            c.M_PRE_DECODE_SHARE,
            c.M_DECODE_BUSY_RATIO,
            c.M_DECODE_PRESSURE,
            c.M_PD_RATIO_NEEDED,
            c.M_PD_RATIO_DEPLOYED,
        ):
            gauge(name, [({c.LABEL_POOL: POOL}, 0.5)])
        pods = [{c.LABEL_POOL: POOL, c.LABEL_POD: p, c.LABEL_ROLE: r} for p, r in PODS]
        gauge(c.M_POD_TIER_USAGE, [({**x, c.LABEL_TIER: tier}, 0.7) for x in pods for tier in c.KNOWN_TIERS])
        pt = [{c.LABEL_POOL: POOL, c.LABEL_POD: p, c.LABEL_TIER: t} for p, _ in PODS for t in c.KNOWN_TIERS]
        gauge(c.M_POD_EVICTION_RATE, [(x, 3.0) for x in pt])
        gauge(c.M_POD_DEMOTION_RATE, [(x, 2.0) for x in pt])
        gauge(c.M_POD_QUEUE, [(x, 4.0) for x in pods])
        srcs = [{c.LABEL_SOURCE: s} for s in (c.SOURCE_PROMETHEUS, c.SOURCE_KV_EVENTS)]
        gauge(c.M_SOURCE_UP, [(x, 1.0) for x in srcs])
        gauge(c.M_SOURCE_AGE, [(x, 5.0) for x in srcs])
        pr = [{c.LABEL_POOL: POOL, c.LABEL_ROLE: r} for r in c.ROLES]
        # prefill's desired count moves every scrape (scaling decisions), decode's never: the
        # decisions counter below grows every scrape either way, as every tick's holds do
        gauge(
            c.M_DESIRED_REPLICAS, [(x, 3.0 + (n % 2 if x[c.LABEL_ROLE] == c.ROLE_PREFILL else 0)) for x in pr]
        )
        gauge(c.M_CURRENT_REPLICAS, [(x, 2.0) for x in pr])
        counter(c.M_DECISIONS, [({c.LABEL_POOL: POOL, c.LABEL_REASON: "prefill_queue"}, 1)])
        counter(c.M_ACTUATION_ERRORS, [({c.LABEL_POOL: POOL}, 1)])
        gauge(c.M_SCORER_WEIGHT, [({c.LABEL_POOL: POOL, c.LABEL_SCORER: c.SCORER_PREFIX_CACHE}, 2.0)])
        gauge(c.M_AUTOSCALER_LAST_ACTION, [({c.LABEL_POOL: POOL}, 1_700_000_000.0)])

        # vLLM / LMCache per pod, with the scrape's Kubernetes labels.
        vl = [
            {
                c.VLLM_LABEL_MODEL: MODEL,
                c.VLLM_LABEL_ENGINE: "0",
                c.PROM_LABEL_NAMESPACE: NAMESPACE,
                c.LABEL_POD: p,
                c.LABEL_POOL: POOL,
                c.LABEL_ROLE: r,
            }
            for p, r in PODS
        ]
        gauge(c.VLLM_NUM_RUNNING, [(x, 4.0) for x in vl])
        gauge(c.VLLM_NUM_WAITING, [(x, 2.0) for x in vl])
        gauge(c.VLLM_KV_USAGE, [(x, 0.8) for x in vl])
        gauge(c.VLLM_CPU_OFFLOAD_USAGE, [(x, 0.3) for x in vl])
        gauge(c.LMCACHE_LOCAL_STORAGE_USAGE, [(x, 1e9) for x in vl])
        counter(c.LMCACHE_CPU_EVICT, [(x, 5) for x in vl])
        counter(c.VLLM_PREEMPTIONS, [(x, 1) for x in vl])
        counter(
            c.VLLM_PROMPT_TOKENS_CACHED_BY_SOURCE,
            [({**x, c.LABEL_SOURCE: s}, 50) for x in vl for s in c.VLLM_CACHED_SOURCE_TO_TIER],
        )
        for name in (c.VLLM_TTFT, c.VLLM_NIXL_XFER_TIME):
            for x in vl:
                hist(name, x)
        # EPP
        epp = c.EPP_GENERATIONS["llm_d_epp"]
        ns = {c.PROM_LABEL_NAMESPACE: NAMESPACE}
        counter(
            epp["request_total"],
            [
                (
                    {
                        c.EPP_LABEL_MODEL: MODEL,
                        c.EPP_LABEL_TARGET_MODEL: MODEL,
                        c.EPP_LABEL_FAIRNESS: t,
                        **ns,
                    },
                    10,
                )
                for t in TENANTS
            ],
        )
        for key in ("queue_size", "ready_endpoints"):
            gauge(epp[key], [({c.EPP_LABEL_POOL: POOL, **ns}, 2.0)])
        counter(
            c.EPP_DISAGG_DECISION,
            [
                ({c.EPP_LABEL_DECISION_TYPE: d, **ns}, 5)
                for d in (c.EPP_DECISION_PD, c.EPP_DECISION_DECODE_ONLY)
            ],
        )
        return _merge(out)


def _merge(families: list[Metric]) -> list[Metric]:
    """Histograms are added one labelset at a time: merge families of the same name."""
    by_name: dict[str, Metric] = {}
    for f in families:
        if f.name in by_name:
            by_name[f.name].samples.extend(f.samples)
        else:
            by_name[f.name] = f
    return list(by_name.values())


@contextmanager
def serve_fixture() -> Iterator[str]:
    """Serve the fixture's /metrics on a loopback port; yields `host:port`."""
    registry = CollectorRegistry()
    registry.register(_Fleet())

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = generate_latest(registry)
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
