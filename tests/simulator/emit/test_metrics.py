"""Twin metrics: real exposition format, both generations, HTTP serving, real Prometheus scrape."""

from __future__ import annotations

import json
from dataclasses import replace

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from observer import conventions as c
from simulator.emit.metrics import MetricsEmitter, exposition
from tests.support.procs import run_prometheus

from .factories import T0, arrival_of, local_request, pd_request, snapshot

MODEL = "llama-3-70b"
EPP_TOTAL = c.EPP_GENERATIONS["llm_d_epp"]["request_total"]


def families(body: bytes) -> dict[str, tuple[str, list[tuple[str, dict[str, str], float]]]]:
    """name -> (type, samples) as prometheus_client's own parser reads them."""
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        out[fam.name] = (fam.type, [(s.name, dict(s.labels), s.value) for s in fam.samples])
    return out


def fed(generation: str = "v1", epp_generation: str = "llm_d_epp") -> MetricsEmitter:
    em = MetricsEmitter(vllm_generation=generation, epp_generation=epp_generation)
    em.pods_sampled(
        T0,
        (
            snapshot("pd-prefill-0", c.ROLE_PREFILL, kv=0.7, waiting=4),
            snapshot("pd-decode-0", c.ROLE_DECODE, kv=0.3, waiting=0),
            snapshot("pd-decode-1", c.ROLE_DECODE, kv=0.5, waiting=2),
        ),
    )
    for i in range(10):
        for req in (pd_request(i, tenant="acme", error=(i == 9)), local_request(i, tenant="beta")):
            em.request_arrived(arrival_of(req))  # as the fleet model does: arrival, then completion
            em.request_completed(req)
    return em


@pytest.mark.parametrize("generation", [c.VLLM_GENERATION_V1, c.VLLM_GENERATION_LEGACY])
@pytest.mark.parametrize("epp_generation", list(c.EPP_GENERATIONS))
def test_pages_are_generate_latest_byte_for_byte(generation: str, epp_generation: str) -> None:
    """The pages are formatted directly (`exposition`, for speed): the same bytes as
    prometheus_client's `generate_latest` of the pod's (the EPP's) registry, label values
    that need escaping included."""
    em = fed(generation, epp_generation)
    for i, tenant in enumerate(('quo"te', "back\\slash", "new\nline", "ünï", "", "a,b=c}")):
        req = local_request(100 + i, tenant=tenant)
        em.request_arrived(arrival_of(req))
        em.request_completed(req)
    for pod in em.pods():
        assert em.render(pod) == generate_latest(em.registry(pod)), pod
    assert em.render_epp() == generate_latest(em.epp_registry())
    if epp_generation == "llm_d_epp":  # the tenant is a label of this EPP's request counter
        assert f'{c.EPP_LABEL_FAIRNESS}="quo\\"te"' in em.render_epp().decode()


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def test_exposition_hands_what_it_does_not_format_to_generate_latest() -> None:
    g = GaugeMetricFamily("g", "a\\doc\nwith escapes", labels=["x"])
    g.add_metric(["1"], 1e22)
    g.add_metric(["2"], float("nan"))
    stamped = GaugeMetricFamily("s", "stamped", labels=["x"])
    stamped.add_metric(["1"], 2.0, timestamp=1_700_000_000.5)
    info = InfoMetricFamily("i", "info", value={"k": "v"})
    for fams in ([g], [g, stamped], [g, info]):
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Fixed(fams))
        assert exposition(fams) == generate_latest(registry)


def test_v1_pod_metrics_have_real_names_types_and_labels() -> None:
    fams = families(fed().render("pd-prefill-0"))
    expect_types = {
        c.VLLM_KV_USAGE: "gauge",
        c.VLLM_NUM_RUNNING: "gauge",
        c.VLLM_NUM_WAITING: "gauge",
        c.VLLM_CPU_OFFLOAD_USAGE: "gauge",
        c.LMCACHE_LOCAL_STORAGE_USAGE: "gauge",
        c.VLLM_PROMPT_TOKENS: "counter",
        c.VLLM_PREFIX_QUERIES: "counter",
        c.VLLM_PREFIX_HITS: "counter",
        c.VLLM_PREEMPTIONS: "counter",
        c.VLLM_PROMPT_TOKENS_CACHED_BY_SOURCE: "counter",
        c.VLLM_PROMPT_TOKENS_BY_SOURCE: "counter",
        c.VLLM_TTFT: "histogram",
        c.VLLM_ITL: "histogram",
        c.VLLM_E2E: "histogram",
        c.VLLM_QUEUE_TIME: "histogram",
        c.VLLM_PREFILL_TIME: "histogram",
        c.VLLM_DECODE_TIME: "histogram",
    }
    for name, typ in expect_types.items():
        assert fams[name][0] == typ, name
    assert c.VLLM_KV_USAGE_LEGACY not in fams
    (kv,) = fams[c.VLLM_KV_USAGE][1]
    assert kv[1] == {c.VLLM_LABEL_MODEL: MODEL, c.VLLM_LABEL_ENGINE: "0"}
    assert kv[2] == 0.7
    cached = {s[1][c.LABEL_SOURCE]: s[2] for s in fams[c.VLLM_PROMPT_TOKENS_CACHED_BY_SOURCE][1]}
    assert cached == {"device": 3000.0, "host": 1000.0}
    assert set(cached) <= set(c.VLLM_CACHED_SOURCE_TO_TIER)
    (prompt,) = fams[c.VLLM_PROMPT_TOKENS][1]
    assert prompt[0] == c.VLLM_PROMPT_TOKENS + "_total"
    # TTFT histogram fed from the 10 P/D requests prefilled here (engine view: 0.108 s)
    ttft = fams[c.VLLM_TTFT][1]
    count = next(s for s in ttft if s[0].endswith("_count"))[2]
    assert count == 10
    le = {s[1]["le"]: s[2] for s in ttft if s[0].endswith("_bucket")}
    assert le["0.1"] == 0
    assert le["0.25"] == 10
    assert le["+Inf"] == 10
    assert len(le) == len(c.TTFT_BUCKETS) + 1


def test_itl_histogram_counts_tokens_on_the_decode_pod() -> None:
    fams = families(fed().render("pd-decode-0"))
    itl = {s[0]: s[2] for s in fams[c.VLLM_ITL][1] if not s[0].endswith("_bucket")}
    assert itl[c.VLLM_ITL + "_count"] == 10 * 100  # 101 output tokens -> 100 gaps per request
    assert itl[c.VLLM_ITL + "_sum"] == pytest.approx(10 * 1.0)
    success = {s[1][c.VLLM_LABEL_FINISHED_REASON]: s[2] for s in fams[c.VLLM_REQUEST_SUCCESS][1]}
    assert success == {c.VLLM_FINISHED_STOP: 9.0, c.VLLM_FINISHED_ABORT: 1.0}


def test_legacy_generation_uses_old_names() -> None:
    fams = families(fed(c.VLLM_GENERATION_LEGACY).render("pd-decode-0"))
    assert fams[c.VLLM_KV_USAGE_LEGACY][0] == "gauge"
    assert fams[c.VLLM_PREFIX_HITS_LEGACY][0] == "counter"
    assert fams[c.VLLM_ITL_LEGACY][0] == "histogram"
    for new in (c.VLLM_KV_USAGE, c.VLLM_PREFIX_HITS, c.VLLM_ITL, c.VLLM_PROMPT_TOKENS_CACHED_BY_SOURCE):
        assert new not in fams


@pytest.mark.parametrize("generation", list(c.EPP_GENERATIONS))
def test_epp_pool_metrics_per_generation(generation: str) -> None:
    names = c.EPP_GENERATIONS[generation]
    fams = families(fed(epp_generation=generation).render_epp())
    total_name = names["request_total"].removesuffix("_total")
    assert fams[total_name][0] == "counter"
    reqs = fams[total_name][1]
    if generation == "llm_d_epp":
        by_tenant = {s[1][c.EPP_LABEL_FAIRNESS]: s[2] for s in reqs}
        assert by_tenant == {"acme": 10.0, "beta": 10.0}
        assert {s[1][c.EPP_LABEL_TARGET_MODEL] for s in reqs} == {MODEL}
        dec = {
            s[1][c.EPP_LABEL_DECISION_TYPE]: s[2]
            for s in fams[c.EPP_DISAGG_DECISION.removesuffix("_total")][1]
        }
        assert dec == {c.EPP_DECISION_PD: 10.0, c.EPP_DECISION_DECODE_ONLY: 10.0}
    else:
        assert [(s[1], s[2]) for s in reqs] == [
            ({c.EPP_LABEL_MODEL: MODEL, c.EPP_LABEL_TARGET_MODEL: MODEL}, 20.0)
        ]
    errs = fams[names["request_error_total"].removesuffix("_total")][1]
    assert sum(s[2] for s in errs) == 1
    ((_, labels, kv),) = fams[names["kv_cache_utilization"]][1]
    assert labels == {c.EPP_LABEL_POOL: "pool-a"}
    assert kv == pytest.approx(0.5)
    assert fams[names["ready_endpoints"]][1][0][2] == 3
    per = {s[1][c.EPP_LABEL_ENDPOINT]: s[2] for s in fams[names["per_endpoint_queue_size"]][1]}
    assert per == {"pd-prefill-0": 4.0, "pd-decode-0": 0.0, "pd-decode-1": 2.0}
    assert fams[names["request_duration"]][0] == "histogram"


def test_tenants_past_the_bound_fold_into_other() -> None:
    em = MetricsEmitter(max_tenants=2)
    for i, t in enumerate(["a", "b", "c", "d", "a"]):
        em.request_arrived(arrival_of(local_request(i, tenant=t)))
    fams = families(em.render_epp())
    by = {s[1][c.EPP_LABEL_FAIRNESS]: s[2] for s in fams[EPP_TOTAL.removesuffix("_total")][1]}
    assert by == {"a": 2.0, "b": 1.0, c.OTHER_TENANT: 2.0}


def test_scaled_down_pod_disappears_and_latest_is_readable() -> None:
    em = fed()
    assert set(em.latest()) == {"pd-prefill-0", "pd-decode-0", "pd-decode-1"}
    em.pods_sampled(T0 + 1, (snapshot("pd-prefill-0", c.ROLE_PREFILL, scale=2),))
    assert set(em.latest()) == {"pd-prefill-0"}
    assert em.latest()["pd-prefill-0"].prompt_tokens == 20_000
    with pytest.raises(KeyError):
        em.render("pd-decode-1")


def test_http_server_serves_pods_epp_and_targets() -> None:
    em = fed()
    with em.serve() as server:
        r = httpx.get(f"{server.url}/metrics/pd-decode-1")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        assert c.VLLM_KV_USAGE in r.text
        assert httpx.get(f"{server.url}/metrics/epp").text.count(EPP_TOTAL + "{") == 2
        assert httpx.get(f"{server.url}/metrics/nope").status_code == 404
        groups = json.loads(httpx.get(f"{server.url}/targets.json").text)
        by_pod = {g["labels"][c.PROM_LABEL_POD]: g for g in groups}
        assert by_pod["pd-decode-1"]["targets"] == [server.address]
        assert by_pod["pd-decode-1"]["labels"][c.PROM_LABEL_METRICS_PATH] == "/metrics/pd-decode-1"
        assert by_pod["pd-decode-1"]["labels"][c.LABEL_ROLE] == c.ROLE_DECODE
        assert by_pod["pd-decode-1"]["labels"][c.LABEL_POOL] == "pool-a"
        assert by_pod["llm-d-epp-0"]["labels"][c.PROM_LABEL_METRICS_PATH] == "/metrics/epp"


@pytest.mark.prometheus
@pytest.mark.slow
def test_real_prometheus_scrapes_the_twin_via_http_sd() -> None:
    em = fed()
    with em.serve() as server:
        # scraped every 250 ms (was 1 s): each step below waits for the scrape that sees it
        config = f"""
global:
  scrape_interval: 250ms
  evaluation_interval: 1s
scrape_configs:
  - job_name: twin
    http_sd_configs:
      - url: {server.url}/targets.json
        refresh_interval: 1s
"""
        with run_prometheus(config) as prom:
            # both decode targets scraped (one scrape may land before the other)
            kv = prom.wait_for(f'count({c.VLLM_KV_USAGE}{{role="decode"}}) == 2', timeout=30)
            kv = prom.query(f'{c.VLLM_KV_USAGE}{{role="decode"}}')
            assert {(s["metric"]["pod"], float(s["value"][1])) for s in kv} == {
                ("pd-decode-0", 0.3),
                ("pd-decode-1", 0.5),
            }
            assert all(s["metric"][c.VLLM_LABEL_MODEL] == MODEL for s in kv)
            assert all(s["metric"][c.LABEL_POOL] == "pool-a" for s in kv)
            # counters grow between scrapes -> a real rate() over vLLM names
            prompt = f'{c.VLLM_PROMPT_TOKENS}_total{{pod="pd-prefill-0"}}'
            for step in range(2, 6):
                em.pods_sampled(
                    T0 + step,
                    tuple(
                        snapshot(p, r, scale=step)
                        for p, r in (
                            ("pd-prefill-0", c.ROLE_PREFILL),
                            ("pd-decode-0", c.ROLE_DECODE),
                            ("pd-decode-1", c.ROLE_DECODE),
                        )
                    ),
                )
                # until Prometheus has scraped this step's counter (it used to sleep 1.1 s, a whole
                # scrape interval, when the next scrape is half an interval away on average)
                prom.wait_for(f"{prompt} == {10_000 * step}", timeout=10)
            rate = prom.wait_for(f'rate({c.VLLM_PROMPT_TOKENS}_total{{pod="pd-prefill-0"}}[10s]) > 0')
            assert len(rate) == 1
            cached = prom.wait_for(f"sum by (source) ({c.VLLM_PROMPT_TOKENS_CACHED_BY_SOURCE}_total)")
            assert {s["metric"]["source"] for s in cached} == {"device", "host"}
            hist = prom.wait_for(
                f'histogram_quantile(0.9, sum by (le) ({c.VLLM_TTFT}_bucket{{pod="pd-prefill-0"}}))'
            )
            assert 0.1 < float(hist[0]["value"][1]) <= 0.25  # the 0.108 s engine TTFTs
            epp = prom.wait_for(f'{EPP_TOTAL}{{{c.EPP_LABEL_FAIRNESS}="acme"}}')
            assert float(epp[0]["value"][1]) == 10.0


def test_decode_pods_show_the_kv_transfer_time_as_the_nixl_histogram() -> None:
    em = fed()
    fams = families(em.render("pd-decode-0"))
    typ, samples = fams[c.VLLM_NIXL_XFER_TIME]
    assert typ == "histogram"
    scalars = {s[0]: s[2] for s in samples if not s[0].endswith("_bucket")}
    # the 10 P/D requests decoded here, 0.009 s of transfer each; the local ones transfer nothing
    assert scalars[c.VLLM_NIXL_XFER_TIME + "_count"] == 10
    assert scalars[c.VLLM_NIXL_XFER_TIME + "_sum"] == pytest.approx(10 * 0.009)
    le = {s[1]["le"]: s[2] for s in samples if s[0].endswith("_bucket")}
    assert le["0.005"] == 0
    assert le["0.01"] == 10
    assert len(le) == len(c.NIXL_XFER_BUCKETS) + 1
    assert next(s[1] for s in samples) == {c.VLLM_LABEL_MODEL: MODEL, c.VLLM_LABEL_ENGINE: "0", "le": "0.001"}
    local = families(em.render("pd-decode-1"))[c.VLLM_NIXL_XFER_TIME][1]
    assert next(s[2] for s in local if s[0].endswith("_count")) == 0  # decode-only requests
    assert c.VLLM_NIXL_XFER_TIME not in families(em.render("pd-prefill-0"))


def test_dram_tier_evictions_are_the_lmcache_cpu_eviction_counter() -> None:
    em = MetricsEmitter()
    snap = snapshot("pd-decode-0", c.ROLE_DECODE)
    em.pods_sampled(T0, (replace(snap, evictions_by_tier={c.TIER_HBM: 50, c.TIER_DRAM: 12}),))
    typ, samples = families(em.render("pd-decode-0"))[c.LMCACHE_CPU_EVICT]
    assert typ == "counter"
    assert samples == [
        (c.LMCACHE_CPU_EVICT + "_total", {c.VLLM_LABEL_MODEL: MODEL, c.VLLM_LABEL_ENGINE: "0"}, 12.0)
    ]
    em.pods_sampled(T0 + 5, (replace(snap, evictions_by_tier={c.TIER_HBM: 80}),))  # no DRAM evictions yet
    assert families(em.render("pd-decode-0"))[c.LMCACHE_CPU_EVICT][1][0][2] == 0.0
