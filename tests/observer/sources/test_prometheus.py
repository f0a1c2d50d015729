"""PrometheusSource against a real Prometheus scraping exposition fixtures of every generation."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from observer import conventions as c
from observer.sources import promql
from observer.sources.prometheus import (
    MAX_BODY_SETTING,
    TIMEOUT_SETTING,
    PrometheusSource,
    PrometheusSourceConfig,
)
from observer.sources.samples import PodTarget
from observer.sources.untrusted import clean_value
from tests.observer.sources.exposition_server import Pages, fixture, serve
from tests.support.hostile import CASES as HOSTILE_CASES
from tests.support.hostile import hostile
from tests.support.httpstub import Answer, Seen, serve_http
from tests.support.oversize import json_pad
from tests.support.procs import Prometheus, free_port, run_prometheus

pytestmark = pytest.mark.prometheus

# namespace -> (vLLM fixture, EPP fixture): every generation appears at least once.
FLEETS = {
    "ns-v1": ("vllm_v1", "epp_llm_d_epp"),
    "ns-legacy": ("vllm_legacy", "epp_inference_model"),
    "ns-mixed": ("vllm_legacy", "epp_inference_objective"),
    "ns-mixed2": ("vllm_v1", "epp_inference_model"),
}
WEIRD = 'a"} or vector(1) or up{pod="\\x\nnew\tline\x01'
# A pod exposing hostile labels on its HBM gauge (Prometheus keeps them: no length limit by
# default, NUL allowed): a 300 KB pod name, a 100 KB model ending with NUL, an unknown role.
HOSTILE_NS = "ns-hostile"
HOSTILE_POD = "p" * 300_000
HOSTILE_MODEL = "m" * 100_000 + "\x00"
HOSTILE_ROLE = "r" * 1000


def _exposition_escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _config(addr: str) -> str:
    jobs = []
    for ns, (vllm, epp) in FLEETS.items():
        jobs.append(
            f"""
  - job_name: {ns}-pod
    metrics_path: /{ns}/{vllm}
    static_configs:
      - targets: ['{addr}']
        labels: {{namespace: {ns}, pod: {ns}-decode-0}}
  - job_name: {ns}-epp
    metrics_path: /{ns}/{epp}
    static_configs:
      - targets: ['{addr}']
        labels: {{namespace: {ns}}}"""
        )
    jobs.append(
        f"""
  - job_name: {HOSTILE_NS}
    metrics_path: /{HOSTILE_NS}
    static_configs:
      - targets: ['{addr}']
        labels: {{namespace: {HOSTILE_NS}}}"""
    )
    jobs.append(
        f"""
  - job_name: escaping
    metrics_path: /escaping
    static_configs:
      - targets: ['{addr}']"""
    )
    return "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:" + "".join(jobs) + "\n"


@pytest.fixture(scope="module")
def prom() -> Iterator[Prometheus]:
    pages = Pages()
    for ns, (vllm, epp) in FLEETS.items():
        pages.bodies[f"/{ns}/{vllm}"] = fixture(vllm)
        pages.bodies[f"/{ns}/{epp}"] = fixture(epp)
    pages.bodies[f"/{HOSTILE_NS}"] = fixture("vllm_v1").replace(
        'vllm:kv_cache_usage_perc{engine="0",model_name="llama-3-8b"}',
        f'vllm:kv_cache_usage_perc{{engine="0",model_name="{HOSTILE_MODEL}",pod="{HOSTILE_POD}",'
        f'llm_d_role="{HOSTILE_ROLE}"}}',
    )
    pages.bodies["/escaping"] = (
        "# TYPE esc_probe gauge\n"
        f'esc_probe{{pod="{_exposition_escape(WEIRD)}"}} 1\n'
        'esc_probe{pod="a"} 2\n'
        'esc_probe{pod="\\\\x"} 3\n'
    )
    with serve(pages) as addr, run_prometheus(_config(addr)) as p:
        # rates need two scrapes inside the window
        for ns in FLEETS:
            p.wait_for(f'rate(vllm:num_preemptions_total{{namespace="{ns}"}}[10s])')
        p.wait_for("esc_probe")
        p.wait_for(f'vllm:kv_cache_usage_perc{{namespace="{HOSTILE_NS}"}}')
        yield p


def _source(p: Prometheus, ns: str, **kw: object) -> PrometheusSource:
    cfg = PrometheusSourceConfig(url=p.url, namespace=ns, rate_window_seconds=10, timeout_seconds=5, **kw)  # type: ignore[arg-type]
    target = PodTarget(pod=f"{ns}-decode-0", role=c.ROLE_DECODE, pool="pool-a", namespace=ns)
    return PrometheusSource(cfg, targets=lambda: (target,))


def test_every_generation_gives_the_same_samples(prom: Prometheus) -> None:
    now = time.time()
    snaps = {ns: _source(prom, ns).read(now) for ns in FLEETS}
    expected_vllm = {"ns-v1": "v1", "ns-legacy": "legacy", "ns-mixed": "legacy", "ns-mixed2": "v1"}
    expected_epp = {
        "ns-v1": "llm_d_epp",
        "ns-legacy": "inference_model",
        "ns-mixed": "inference_objective",
        "ns-mixed2": "inference_model",
    }
    for ns, snap in snaps.items():
        assert snap.ok, snap.error
        assert snap.vllm_generation == expected_vllm[ns]
        assert snap.epp_generation == expected_epp[ns]
        (pod,) = snap.pods
        assert pod.pod == f"{ns}-decode-0"
        assert pod.role == c.ROLE_DECODE
        assert pod.model == "llama-3-8b"
        assert pod.kv_usage == pytest.approx(0.42)
        assert pod.cpu_offload_usage == pytest.approx(0.3)
        assert pod.disk_bytes == pytest.approx(1.5e9)
        assert pod.running == 3
        assert pod.waiting == 2
        # constant counters: a known zero rate, not unknown
        assert pod.preemption_rate == 0.0
        assert pod.prefix_hits_rate == 0.0
        assert pod.cached_tokens_rate_by_tier == {c.TIER_HBM: 0.0, c.TIER_DRAM: 0.0, c.TIER_DISK: 0.0}
        (pool,) = snap.pools
        assert (pool.pool, pool.kv_cache_utilization, pool.queue_size) == ("pool-a", 0.5, 4.0)
        assert (pool.running_requests, pool.ready_endpoints) == (7.0, 3.0)
    base = snaps["ns-v1"]
    for snap in snaps.values():
        assert [p.kv_usage for p in snap.pods] == [p.kv_usage for p in base.pods]
        assert snap.pools == base.pools


def test_stale_data_is_unknown_not_zero(prom: Prometheus) -> None:
    src = _source(prom, "ns-v1", stale_after_seconds=30)
    snap = src.read(time.time() + 120)  # newest sample is 2 minutes old at that "now"
    assert snap.ok
    assert snap.stale_pods == ("ns-v1-decode-0",)
    (pod,) = snap.pods
    assert pod.kv_usage is None
    assert pod.running is None
    assert pod.preemption_rate is None


def test_failing_prometheus_marks_everything_unknown() -> None:
    cfg = PrometheusSourceConfig(url=f"http://127.0.0.1:{free_port()}", retries=0, timeout_seconds=1)
    target = PodTarget(pod="p0", role=c.ROLE_PREFILL, pool="pool-a")
    snap = PrometheusSource(cfg, targets=lambda: (target,)).read(1000.0)
    assert not snap.ok
    assert snap.error
    assert snap.pods[0].pod == "p0"
    assert snap.pods[0].kv_usage is None
    assert snap.pods[0].running is None


def test_quoted_value_matches_only_that_exact_value(prom: Prometheus) -> None:
    src = _source(prom, "ns-v1")
    rows = src.query(promql.selector("esc_probe", {"pod": WEIRD}))
    assert len(rows) == 1
    assert rows[0]["metric"]["pod"] == WEIRD
    assert rows[0]["value"][1] == "1"
    rows = src.query(promql.selector("esc_probe", {"pod": "\\x"}))
    assert [r["value"][1] for r in rows] == ["3"]
    # a value that tries to close the selector and add a series matches nothing
    assert src.query(promql.selector("esc_probe", {"pod": 'a"} or vector(1) or up{pod="'})) == []


def test_tenant_query_escapes_tenant(prom: Prometheus) -> None:
    src = _source(prom, "ns-v1")
    assert src.tenant_request_rate("llm_d_epp", "tenant-a") == 0.0
    assert src.tenant_request_rate("llm_d_epp", 'tenant-a"} or vector(7) or x{a="') is None


def test_hostile_label_values_from_prometheus_are_made_safe_and_counted(prom: Prometheus) -> None:
    """Prometheus stores and returns what a pod exposes: the pod seen only in Prometheus gets the
    bounded, hashed name and model a span would give (they were 300 KB and 100 KB), its unknown
    role is dropped, and every rewritten label value is counted."""
    src = _source(prom, HOSTILE_NS, role_label="llm_d_role")
    raw = prom.query(f'vllm:kv_cache_usage_perc{{namespace="{HOSTILE_NS}"}}')
    assert [r["metric"]["pod"] for r in raw] == [HOSTILE_POD]  # what Prometheus answers
    snap = src.read(time.time())
    assert snap.ok, snap.error
    pods = {p.pod: p for p in snap.pods}
    assert set(pods) == {f"{HOSTILE_NS}-decode-0", clean_value(HOSTILE_POD)}
    hostile = pods[clean_value(HOSTILE_POD)]
    assert len(hostile.pod) == c.MAX_VALUE_CHARS
    assert hostile.model == clean_value(HOSTILE_MODEL)
    assert "\x00" not in hostile.model
    assert hostile.role is None  # not prefill | decode | prefill-decode
    assert hostile.kv_usage == pytest.approx(0.42)
    assert src.cleaner.count > 0
    clean_fleet = _source(prom, "ns-v1")
    assert clean_fleet.read(time.time()).ok
    assert clean_fleet.cleaner.count == 0  # a clean fleet rewrites nothing


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("kind", "case"), HOSTILE_CASES)
def test_an_answer_too_large_or_too_slow_is_a_failed_read(kind: str, case: str) -> None:
    """A Prometheus-compatible API (no Prometheus needed) whose answer is over `max_body_bytes`
    (declared, endless, or gzip inflating past it), or keeps coming past `timeout_seconds` (a
    header line or a body chunk every 0.2 s, never a per-read timeout): the read fails like any
    failed query (`ok` false, every pod unknown, the setting named in `error`); an answer of
    exactly the cap, or the same answer at once, is read."""
    row = {"metric": {"__name__": "up", "pod": "p0"}, "value": [1000.0, "1"]}
    valid = json.dumps({"status": "success", "data": {"resultType": "vector", "result": [row]}})
    bad = hostile(kind, valid.encode(), json_pad)

    def answer(req: Seen) -> Answer:
        return bad.reply(case) if req.path.startswith("/api/v1/query?") else (404, b"")

    target = PodTarget(pod="p0", role=c.ROLE_PREFILL, pool="pool-a")
    with serve_http(answer) as (url, seen):
        cfg = PrometheusSourceConfig(url=url, retries=0, **{"timeout_seconds": 5, **bad.limits})
        src = PrometheusSource(cfg, targets=lambda: (target,))
        start = time.monotonic()
        snap = src.read(1000.0)
        elapsed = time.monotonic() - start
        rows = src.query("up") if case == bad.fine else None
    assert seen
    if case == bad.fine:
        assert snap.ok, snap.error
        assert rows == [row]
        return
    assert not snap.ok
    assert snap.pods[0].pod == "p0"
    assert snap.pods[0].kv_usage is None
    bad.refused(case, snap.error, elapsed, max_body_setting=MAX_BODY_SETTING, timeout_setting=TIMEOUT_SETTING)


def test_an_answer_cut_short_is_a_failed_read_not_an_escaped_error() -> None:
    """The server closes the connection 10 bytes into a 1000-byte answer: urllib3's error
    (ProtocolError) escaped the read, which catches requests' family, and broke the signals tick;
    it is now requests' ChunkedEncodingError, a failed read like any other."""
    import socket
    import threading

    srv = socket.create_server(("127.0.0.1", 0))
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"

    def cut_short() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:  # closed: the test is over
                return
            with conn:
                conn.recv(65536)
                conn.sendall(head + b'{"status":')

    threading.Thread(target=cut_short, daemon=True).start()
    target = PodTarget(pod="p0", role=c.ROLE_PREFILL, pool="pool-a")
    try:
        url = f"http://127.0.0.1:{srv.getsockname()[1]}"
        src = PrometheusSource(PrometheusSourceConfig(url=url, retries=0), targets=lambda: (target,))
        snap = src.read(1000.0)
    finally:
        srv.close()
    assert not snap.ok
    assert "ChunkedEncodingError" in (snap.error or ""), snap.error
    assert snap.pods[0].kv_usage is None
