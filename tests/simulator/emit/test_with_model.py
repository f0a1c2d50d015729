"""The emitters fed by the real fleet model: spans and metrics agree with the twin's ground truth."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from observer import conventions as c
from simulator.clock import run_fast
from simulator.emit.fanout import Fanout, Recorder
from simulator.emit.metrics import MetricsEmitter
from simulator.emit.otlp import OtlpSpanEmitter, collecting_sink
from simulator.scenarios import build_scenario

from .test_otlp import decode_bodies


def test_steady_scenario_spans_and_metrics_match_ground_truth() -> None:
    bodies, sink = collecting_sink()
    otlp = OtlpSpanEmitter.to_bytes(sink)
    metrics = MetricsEmitter()
    rec = Recorder(bucket_seconds=30.0)
    twin = build_scenario("steady", sink=Fanout([otlp, metrics, rec]), seed=3, duration=120.0, start=1.8e9)
    run_fast(twin, twin.end)
    otlp.flush()
    assert rec.total_requests > 50
    spans = decode_bodies(bodies)
    assert len({s["trace_id"] for s in spans}) == rec.total_requests
    engines = [s for s in spans if s["name"] == c.SPAN_VLLM_REQUEST]
    truth = rec.tenant_totals()
    cached_by_tenant: dict[str, int] = {}
    for s in engines:
        tenant = s["attrs"][c.ATTR_TENANT_ID]
        cached_by_tenant[tenant] = cached_by_tenant.get(tenant, 0) + s["attrs"].get(c.ATTR_CACHED_TOKENS, 0)
    assert cached_by_tenant == {t: p.cached_tokens for t, p in truth.items()}
    gateways = [s for s in spans if s["name"] == c.SPAN_EPP_GATEWAY]
    assert len(gateways) == rec.total_requests
    for pod in metrics.pods():
        names = {f.name for f in text_string_to_metric_families(metrics.render(pod).decode())}
        assert c.VLLM_KV_USAGE in names
        assert c.VLLM_TTFT in names
    fams = {f.name: f for f in text_string_to_metric_families(metrics.render_epp().decode())}
    total = sum(
        s.value for s in fams[c.EPP_GENERATIONS["llm_d_epp"]["request_total"].removesuffix("_total")].samples
    )
    # the EPP counts at arrival, like the real one: completed requests plus those still in flight
    assert total == rec.total_arrivals == twin.fleet.arrived
    assert rec.total_arrivals - rec.total_requests == twin.fleet.in_flight
