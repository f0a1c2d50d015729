"""Per-pod vLLM metrics and EPP pool metrics of the twin, in Prometheus text format.

Each pod has its own `CollectorRegistry` with one custom collector built from the pod's
latest `PodSnapshot` (gauges, cumulative counters) and from histograms fed by the
`CompletedRequest`s that ran on it (decode pods also show the P/D KV-transfer time as vLLM's NIXL
histogram, and every pod its DRAM-tier evictions as LMCache's CPU eviction counter). The EPP has
its own registry; like the real EPP, its request counter counts a request when it ARRIVES at the
router (`request_arrived`), so its rate is the arrival rate even while requests queue; the error
counter, duration histogram and P/D decision counter are fed at completion. Names come from
`observer.conventions` for two vLLM generations (`v1`: vLLM >= 0.12, `legacy`: <= 0.11) and the
EPP generations of `conventions.EPP_GENERATIONS`.

`MetricsEmitter.serve()` starts ONE stdlib HTTP server (loopback, port 0 = ephemeral) with
`/metrics/<pod>`, `/metrics/epp` and `/targets.json` (Prometheus `http_sd` / `file_sd` target
groups that set `__metrics_path__` per pod). In-process: `render(pod)`, `render_epp()`, `latest()`.
See docs/simulator-emitters.md.
"""

from __future__ import annotations

import json
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from urllib.parse import unquote

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.openmetrics.exposition import escape_label_name, escape_metric_name
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from observer import conventions as c
from simulator.events import ArrivedRequest, CompletedRequest, EngineTiming, FleetEvent, KvEvent, PodSnapshot

VllmGeneration = str
VLLM_GENERATIONS: Final = (c.VLLM_GENERATION_V1, c.VLLM_GENERATION_LEGACY)
EPP_PATH: Final = "/metrics/epp"
METRICS_PATH_PREFIX: Final = "/metrics/"
TARGETS_PATH: Final = "/targets.json"
ENGINE_INDEX: Final = "0"
ERROR_CODE_SIMULATED: Final = "500"

_H_TTFT = "ttft"
_H_ITL = "itl"
_H_E2E = "e2e"
_H_QUEUE = "queue"
_H_PREFILL = "prefill"
_H_DECODE = "decode"
_H_NIXL = "nixl"  # KV transfer time (decode pods only: the NIXL read is the decode side's)


class _Hist:
    """A classic cumulative histogram (le buckets + sum + count), weighted observations."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float, n: int = 1) -> None:
        self.counts[bisect_left(self.bounds, value)] += n
        self.total += value * n

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        acc = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            acc += count
            out.append((repr(float(bound)), float(acc)))
        out.append(("+Inf", float(acc + self.counts[-1])))
        return out


def _new_hists() -> dict[str, _Hist]:
    return {
        _H_TTFT: _Hist(tuple(c.TTFT_BUCKETS)),
        _H_ITL: _Hist(tuple(c.ITL_BUCKETS)),
        _H_E2E: _Hist(tuple(c.E2E_BUCKETS)),
        _H_QUEUE: _Hist(tuple(c.E2E_BUCKETS)),
        _H_PREFILL: _Hist(tuple(c.E2E_BUCKETS)),
        _H_DECODE: _Hist(tuple(c.E2E_BUCKETS)),
        _H_NIXL: _Hist(tuple(c.NIXL_XFER_BUCKETS)),
    }


@dataclass(slots=True)
class _PodState:
    pod: str
    role: str
    model: str
    snapshot: PodSnapshot | None = None
    hists: dict[str, _Hist] = field(default_factory=_new_hists)
    finished: dict[str, int] = field(default_factory=dict)
    registry: CollectorRegistry | None = None


@dataclass(slots=True)
class _EppState:
    requests: dict[tuple[str, str], int] = field(default_factory=dict)  # (model, tenant), at arrival
    errors: dict[str, int] = field(default_factory=dict)  # model
    duration: dict[str, _Hist] = field(default_factory=dict)  # model
    decisions: dict[str, int] = field(default_factory=dict)
    tenants: set[str] = field(default_factory=set)


_TYPES: Final = {"gauge": "gauge", "counter": "counter", "histogram": "histogram"}  # as written
_OM_SUFFIXES: Final = ("_created", "_gsum", "_gcount")  # OpenMetrics samples, moved to their own gauge
_metric_names: dict[str, str] = {}  # escape_metric_name, cached (the twin repeats a few dozen names)
_label_names: dict[str, str] = {}
_go_float: Callable[[float], str] = floatToGoString  # a sample value as generate_latest writes it


def _metric_name(name: str) -> str:
    out = _metric_names.get(name)
    if out is None:
        out = _metric_names[name] = escape_metric_name(name)
    return out


def _label_name(name: str) -> str:
    out = _label_names.get(name)
    if out is None:
        out = _label_names[name] = escape_label_name(name)
    return out


def exposition(families: Iterable[Metric]) -> bytes:
    """`generate_latest` of a registry collecting `families`, byte for byte, formatted directly:
    the twin's pages are scraped every tick of every twin test, and `generate_latest` spent
    most of a page's time formatting samples. Covers what the twin exposes (gauges, counters,
    classic histograms; no timestamps, no OpenMetrics-only samples); anything else is handed
    to `generate_latest` itself. tests/simulator/emit/test_metrics.py compares the two."""
    fams = list(families)
    out: list[str] = []
    for metric in fams:
        mtype = _TYPES.get(metric.type)
        if mtype is None:
            return _generate(fams)
        mname = metric.name + "_total" if mtype == "counter" else metric.name
        escaped = _metric_name(mname)
        doc = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {escaped} {doc}\n# TYPE {escaped} {mtype}\n")
        om = tuple(metric.name + suffix for suffix in _OM_SUFFIXES)
        for sample in metric.samples:
            if sample.timestamp is not None or sample.name in om:
                return _generate(fams)
            labels = sample.labels
            if labels:
                inner = ",".join(
                    [
                        '{}="{}"'.format(
                            _label_name(k), v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
                        )
                        for k, v in sorted(labels.items())
                    ]
                )
                out.append(f"{_metric_name(sample.name)}{{{inner}}} {_go_float(sample.value)}\n")
            else:
                out.append(f"{_metric_name(sample.name)} {_go_float(sample.value)}\n")
    return "".join(out).encode("utf-8")


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def _generate(families: list[Metric]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry)


class _Collect(Collector):
    def __init__(self, produce: Any, key: str) -> None:
        self._produce = produce
        self._key = key

    def collect(self) -> Iterable[Metric]:
        families: list[Metric] = self._produce(self._key)
        return families


class MetricsEmitter:
    """A `FleetSink` exposing what vLLM pods and the EPP would show on their /metrics."""

    def __init__(
        self,
        *,
        vllm_generation: VllmGeneration = c.VLLM_GENERATION_V1,
        epp_generation: str = "llm_d_epp",
        namespace: str = "llm-d",
        epp_pod: str = "llm-d-epp-0",
        max_tenants: int = 1000,
    ) -> None:
        if vllm_generation not in VLLM_GENERATIONS:
            raise ValueError(f"unknown vLLM generation {vllm_generation!r}; expected {VLLM_GENERATIONS}")
        if epp_generation not in c.EPP_GENERATIONS:
            raise ValueError(f"unknown EPP generation {epp_generation!r}; expected {list(c.EPP_GENERATIONS)}")
        self.vllm_generation: VllmGeneration = vllm_generation
        self.epp_generation = epp_generation
        self.namespace = namespace
        self.epp_pod = epp_pod
        self._max_tenants = max_tenants
        self._lock = threading.Lock()
        self._pods: dict[str, _PodState] = {}
        self._sampled: set[str] = set()
        self._epp = _EppState()
        self._epp_registry = CollectorRegistry(auto_describe=False)
        self._epp_registry.register(_Collect(self._epp_families, ""))
        self.now: float | None = None

    # -- FleetSink ----------------------------------------------------------------------------
    def request_arrived(self, arrival: ArrivedRequest) -> None:
        """The EPP counts a request when it reaches the router (per model and fairness id)."""
        with self._lock:
            epp = self._epp
            tenant = arrival.tenant
            if tenant not in epp.tenants:
                if len(epp.tenants) >= self._max_tenants:
                    tenant = c.OTHER_TENANT
                else:
                    epp.tenants.add(tenant)
            key = (arrival.model, tenant)
            epp.requests[key] = epp.requests.get(key, 0) + 1

    def request_completed(self, request: CompletedRequest) -> None:
        with self._lock:
            if request.prefill is not None:
                self._observe_engine(request.prefill, request, decode_side=False)
            self._observe_engine(request.decode, request, decode_side=True)
            epp = self._epp
            if request.error:
                epp.errors[request.model] = epp.errors.get(request.model, 0) + 1
            hist = epp.duration.get(request.model)
            if hist is None:
                hist = epp.duration[request.model] = _Hist(tuple(c.E2E_BUCKETS))
            hist.observe(request.e2e)
            decision = c.EPP_DECISION_PD if request.disaggregated else c.EPP_DECISION_DECODE_ONLY
            epp.decisions[decision] = epp.decisions.get(decision, 0) + 1

    def _observe_engine(self, t: EngineTiming, request: CompletedRequest, *, decode_side: bool) -> None:
        st = self._state(t.pod, t.role, request.model)
        h = st.hists
        h[_H_TTFT].observe(t.first_token - t.arrival)
        h[_H_E2E].observe(t.finished - t.arrival)
        h[_H_QUEUE].observe(t.scheduled - t.arrival)
        h[_H_PREFILL].observe(t.first_token - t.scheduled)
        h[_H_DECODE].observe(t.finished - t.first_token)
        if t.output_tokens > 1:
            h[_H_ITL].observe((t.finished - t.first_token) / (t.output_tokens - 1), t.output_tokens - 1)
        if decode_side and request.prefill is not None:
            h[_H_NIXL].observe(request.kv_transfer_seconds)
        reason = c.VLLM_FINISHED_ABORT if (request.error and decode_side) else c.VLLM_FINISHED_STOP
        st.finished[reason] = st.finished.get(reason, 0) + 1

    def pods_sampled(self, now: float, pods: tuple[PodSnapshot, ...]) -> None:
        with self._lock:
            self.now = now
            present = {p.pod for p in pods}
            for gone in self._sampled - present:  # scaled down: the target disappears
                self._pods.pop(gone, None)
            self._sampled = present
            for snap in pods:
                st = self._state(snap.pod, snap.role, snap.model)
                st.snapshot = snap
                st.role = snap.role

    def kv_events(self, events: tuple[KvEvent, ...]) -> None:
        return None

    def fleet_event(self, event: FleetEvent) -> None:
        return None

    # -- in-process reads ---------------------------------------------------------------------
    def latest(self) -> dict[str, PodSnapshot]:
        """The latest snapshot of every pod currently in the fleet."""
        with self._lock:
            return {name: st.snapshot for name, st in self._pods.items() if st.snapshot is not None}

    def pods(self) -> list[str]:
        with self._lock:
            return sorted(self._pods)

    def registry(self, pod: str) -> CollectorRegistry:
        """The pod's own registry (KeyError when the pod is unknown)."""
        with self._lock:
            st = self._pods[pod]
            if st.registry is None:
                st.registry = CollectorRegistry(auto_describe=False)
                st.registry.register(_Collect(self._pod_families, pod))
            return st.registry

    def epp_registry(self) -> CollectorRegistry:
        return self._epp_registry

    def render(self, pod: str) -> bytes:
        """The pod's /metrics body (Prometheus text format 0.0.4): `generate_latest` of its
        registry, formatted by `exposition`."""
        return exposition(self.registry(pod).collect())

    def render_epp(self) -> bytes:
        return exposition(self._epp_registry.collect())

    def target_groups(self, address: str) -> list[dict[str, Any]]:
        """Prometheus SD target groups (http_sd / file_sd JSON) for a server at `address`."""
        with self._lock:
            groups: list[dict[str, Any]] = []
            for name in sorted(self._pods):
                st = self._pods[name]
                pool = st.snapshot.pool if st.snapshot is not None else ""
                groups.append(
                    {
                        "targets": [address],
                        "labels": {
                            c.PROM_LABEL_METRICS_PATH: METRICS_PATH_PREFIX + name,
                            c.LABEL_POD: name,
                            c.LABEL_ROLE: st.role,
                            c.LABEL_POOL: pool,
                            c.PROM_LABEL_NAMESPACE: self.namespace,
                        },
                    }
                )
            groups.append(
                {
                    "targets": [address],
                    "labels": {
                        c.PROM_LABEL_METRICS_PATH: EPP_PATH,
                        c.LABEL_POD: self.epp_pod,
                        c.PROM_LABEL_NAMESPACE: self.namespace,
                    },
                }
            )
            return groups

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> MetricsServer:
        """Start the HTTP server in a daemon thread; `close()` it when done."""
        return MetricsServer(self, host, port)

    # -- families -------------------------------------------------------------------------------
    def _state(self, pod: str, role: str, model: str) -> _PodState:
        st = self._pods.get(pod)
        if st is None:
            st = self._pods[pod] = _PodState(pod=pod, role=role, model=model)
        return st

    def _pod_families(self, pod: str) -> list[Metric]:
        with self._lock:
            st = self._pods.get(pod)
            if st is None:
                return []
            return list(self._build_pod(st))

    def _build_pod(self, st: _PodState) -> Iterator[Metric]:
        legacy = self.vllm_generation == c.VLLM_GENERATION_LEGACY
        names = (c.VLLM_LABEL_MODEL, c.VLLM_LABEL_ENGINE)
        lv = [st.model, ENGINE_INDEX]

        def gauge(name: str, doc: str, value: float) -> Metric:
            g = GaugeMetricFamily(name, doc, labels=names)
            g.add_metric(lv, value)
            return g

        def counter(name: str, doc: str, value: float) -> Metric:
            m = CounterMetricFamily(name, doc, labels=names)
            m.add_metric(lv, value)
            return m

        def by_label(name: str, doc: str, label: str, values: Mapping[str, int]) -> Metric:
            m = CounterMetricFamily(name, doc, labels=(*names, label))
            for key in sorted(values):
                m.add_metric([*lv, key], float(values[key]))
            return m

        s = st.snapshot
        if s is not None:
            yield gauge(c.VLLM_NUM_RUNNING, "Number of requests in model execution batches.", s.running)
            yield gauge(c.VLLM_NUM_WAITING, "Number of requests waiting to be processed.", s.waiting)
            yield gauge(
                c.VLLM_KV_USAGE_LEGACY if legacy else c.VLLM_KV_USAGE,
                "KV-cache usage. 1 means 100 percent.",
                s.kv_usage,
            )
            yield counter(
                c.VLLM_PREFIX_QUERIES_LEGACY if legacy else c.VLLM_PREFIX_QUERIES,
                "Prefix cache queries, in terms of number of queried tokens.",
                s.prefix_queries,
            )
            yield counter(
                c.VLLM_PREFIX_HITS_LEGACY if legacy else c.VLLM_PREFIX_HITS,
                "Prefix cache hits, in terms of number of cached tokens.",
                s.prefix_hits,
            )
            yield counter(c.VLLM_PROMPT_TOKENS, "Number of prefill tokens processed.", s.prompt_tokens)
            yield counter(
                c.VLLM_GENERATION_TOKENS, "Number of generation tokens processed.", s.generation_tokens
            )
            yield counter(
                c.VLLM_PREEMPTIONS, "Cumulative number of preemption from the engine.", s.preemptions
            )
            yield counter(
                c.LMCACHE_CPU_EVICT,
                "LMCache local CPU (DRAM) evictions (KV blocks evicted out of the DRAM tier).",
                s.evictions_by_tier.get(c.TIER_DRAM, 0),
            )
            yield gauge(
                c.LMCACHE_LOCAL_STORAGE_USAGE, "LMCache local disk storage usage (bytes).", s.disk_usage_bytes
            )
            if not legacy:
                yield gauge(c.VLLM_CPU_OFFLOAD_USAGE, "CPU offload KV-cache usage.", s.cpu_offload_usage)
                yield by_label(
                    c.VLLM_PROMPT_TOKENS_BY_SOURCE,
                    "Prompt tokens by source.",
                    c.LABEL_SOURCE,
                    s.prompt_by_source,
                )
                yield by_label(
                    c.VLLM_PROMPT_TOKENS_CACHED_BY_SOURCE,
                    "Cached prompt tokens by source (device, host, disk, p2p).",
                    c.LABEL_SOURCE,
                    s.cached_by_source,
                )
        yield by_label(
            c.VLLM_REQUEST_SUCCESS,
            "Count of successfully processed requests.",
            c.VLLM_LABEL_FINISHED_REASON,
            st.finished,
        )
        hist_names = (
            (_H_TTFT, c.VLLM_TTFT, "Histogram of time to first token in seconds."),
            (
                _H_ITL,
                c.VLLM_ITL_LEGACY if legacy else c.VLLM_ITL,
                "Histogram of inter-token latency in seconds.",
            ),
            (_H_E2E, c.VLLM_E2E, "Histogram of e2e request latency in seconds."),
            (_H_QUEUE, c.VLLM_QUEUE_TIME, "Histogram of time spent in WAITING phase for request."),
            (_H_PREFILL, c.VLLM_PREFILL_TIME, "Histogram of time spent in PREFILL phase for request."),
            (_H_DECODE, c.VLLM_DECODE_TIME, "Histogram of time spent in DECODE phase for request."),
        )
        for key, name, doc in hist_names:
            h = st.hists[key]
            fam = HistogramMetricFamily(name, doc, labels=names)
            fam.add_metric(lv, h.buckets(), h.total)
            yield fam
        if st.role == c.ROLE_DECODE:
            nixl = st.hists[_H_NIXL]
            fam = HistogramMetricFamily(
                c.VLLM_NIXL_XFER_TIME,
                "Histogram of transfer duration for NIXL KV cache transfers.",
                labels=names,
            )
            fam.add_metric(lv, nixl.buckets(), nixl.total)
            yield fam

    def _epp_families(self, _key: str) -> list[Metric]:
        with self._lock:
            return list(self._build_epp())

    def _build_epp(self) -> Iterator[Metric]:
        gen = c.EPP_GENERATIONS[self.epp_generation]
        current = self.epp_generation == "llm_d_epp"
        epp = self._epp
        req_labels = [c.EPP_LABEL_MODEL, c.EPP_LABEL_TARGET_MODEL]
        if current:
            req_labels.append(c.EPP_LABEL_FAIRNESS)
        total = CounterMetricFamily(gen["request_total"], "Counter of requests.", labels=req_labels)
        if current:
            for (model, tenant), n in sorted(epp.requests.items()):
                total.add_metric([model, model, tenant], float(n))
        else:
            per_model: dict[str, int] = {}
            for (model, _tenant), n in epp.requests.items():
                per_model[model] = per_model.get(model, 0) + n
            for model, n in sorted(per_model.items()):
                total.add_metric([model, model], float(n))
        yield total
        errors = CounterMetricFamily(
            gen["request_error_total"],
            "Counter of request errors.",
            labels=[c.EPP_LABEL_MODEL, c.EPP_LABEL_TARGET_MODEL, c.EPP_LABEL_ERROR_CODE],
        )
        for model, n in sorted(epp.errors.items()):
            errors.add_metric([model, model, ERROR_CODE_SIMULATED], float(n))
        yield errors
        dur = HistogramMetricFamily(
            gen["request_duration"],
            "Request latency distribution in seconds.",
            labels=[c.EPP_LABEL_MODEL, c.EPP_LABEL_TARGET_MODEL],
        )
        for model, h in sorted(epp.duration.items()):
            dur.add_metric([model, model], h.buckets(), h.total)
        yield dur
        pools: dict[str, list[PodSnapshot]] = {}
        for st in self._pods.values():
            if st.snapshot is not None and st.snapshot.ready:
                pools.setdefault(st.snapshot.pool, []).append(st.snapshot)
        pl = [c.EPP_LABEL_POOL]
        kv = GaugeMetricFamily(
            gen["kv_cache_utilization"], "Average KV cache utilization of the pool.", labels=pl
        )
        queue = GaugeMetricFamily(gen["queue_size"], "Average queue size of the pool.", labels=pl)
        running = GaugeMetricFamily(
            gen["running_requests"], "Average running requests of the pool.", labels=pl
        )
        ready = GaugeMetricFamily(gen["ready_endpoints"], "Number of ready endpoints in the pool.", labels=pl)
        per_ep = GaugeMetricFamily(
            gen["per_endpoint_queue_size"], "Queue size per endpoint.", labels=[*pl, c.EPP_LABEL_ENDPOINT]
        )
        for pool, snaps in sorted(pools.items()):
            n = len(snaps)
            kv.add_metric([pool], sum(s.kv_usage for s in snaps) / n)
            queue.add_metric([pool], sum(s.waiting for s in snaps) / n)
            running.add_metric([pool], sum(s.running for s in snaps) / n)
            ready.add_metric([pool], float(n))
            for s in sorted(snaps, key=lambda s: s.pod):
                per_ep.add_metric([pool, s.pod], float(s.waiting))
        yield from (kv, queue, running, ready, per_ep)
        if current:
            dec = CounterMetricFamily(
                c.EPP_DISAGG_DECISION, "P/D disaggregation decisions.", labels=[c.EPP_LABEL_DECISION_TYPE]
            )
            for kind, n in sorted(epp.decisions.items()):
                dec.add_metric([kind], float(n))
            yield dec


class MetricsServer:
    """One loopback HTTP server for every pod's /metrics, the EPP's, and SD targets."""

    def __init__(self, emitter: MetricsEmitter, host: str, port: int) -> None:
        self.emitter = emitter
        handler = _make_handler(self)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.host = host
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="twin-metrics", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _make_handler(server: MetricsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            em = server.emitter
            if path == TARGETS_PATH:
                self._send(200, "application/json", json.dumps(em.target_groups(server.address)).encode())
            elif path == EPP_PATH:
                self._send(200, CONTENT_TYPE_LATEST, em.render_epp())
            elif path.startswith(METRICS_PATH_PREFIX):
                try:
                    body = em.render(unquote(path[len(METRICS_PATH_PREFIX) :]))
                except KeyError:
                    self._send(404, "text/plain", b"unknown pod\n")
                else:
                    self._send(200, CONTENT_TYPE_LATEST, body)
            elif path == "/healthz":
                self._send(200, "text/plain", b"ok\n")
            else:
                self._send(404, "text/plain", b"not found\n")

        def _send(self, code: int, ctype: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler
