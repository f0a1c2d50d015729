"""A real Prometheus scraping the twin's /metrics endpoints (http_sd): the fleet signals computed
from PrometheusSource equal those from the direct ScrapeSource, for both vLLM name generations.

The twin runs (fast) into the middle of a prefill burst and then stands still, so both sources
read the same state; counters are frozen, so both see zero rates.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from observer import conventions as c
from observer.api.pools import SignalsCollector, gauge_values
from observer.signals.engine import FleetSignals, SignalEngine
from observer.sources.prometheus import PrometheusSource, PrometheusSourceConfig
from observer.sources.scrape import ScrapeSource, ScrapeSourceConfig
from simulator.emit.metrics import MetricsEmitter, MetricsServer
from simulator.scenarios import build_scenario
from tests.scenarios.twin import T0, targets_of
from tests.support.procs import Prometheus, run_prometheus

GENERATIONS = (c.VLLM_GENERATION_V1, c.VLLM_GENERATION_LEGACY)
Fleet = tuple[MetricsEmitter, MetricsServer]


@pytest.fixture(scope="module")
def fleets() -> Iterator[dict[str, Fleet]]:
    with ExitStack() as stack:
        out: dict[str, Fleet] = {}
        for gen in GENERATIONS:
            metrics = MetricsEmitter(vllm_generation=gen, namespace=f"ns-{gen}")
            twin = build_scenario("prefill-burst", sink=metrics, seed=3, start=T0)
            twin.run_until(twin.phases[1][1] + 40)  # 40 s into the burst: queues, busy prefill
            out[gen] = (metrics, stack.enter_context(metrics.serve()))
        yield out


@pytest.fixture(scope="module")
def prometheus(fleets: dict[str, Fleet]) -> Iterator[Prometheus]:
    jobs = "".join(
        f"""
  - job_name: twin-{gen}
    http_sd_configs:
      - url: {server.url}/targets.json
        refresh_interval: 1s
"""
        for gen, (_, server) in fleets.items()
    )
    # every 250 ms: the wait below for 3 scrapes of every pod took ~3-4 s at 1 s (the twin
    # stands still, so the samples are the same whenever they are taken)
    config = f"global:\n  scrape_interval: 250ms\n  evaluation_interval: 1s\nscrape_configs:{jobs}"
    with run_prometheus(config) as prom:
        for gen, (metrics, _) in fleets.items():
            hbm = c.VLLM_KV_USAGE if gen == c.VLLM_GENERATION_V1 else c.VLLM_KV_USAGE_LEGACY
            n = len(metrics.pods())
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                # every pod scraped at least 3 times: rate() over the frozen counters is defined
                rows = prom.query(f'count(count_over_time({hbm}{{namespace="ns-{gen}"}}[15s]) >= 3)')
                if rows and int(float(rows[0]["value"][1])) == n:
                    break
                time.sleep(0.1)
            else:
                raise AssertionError(f"Prometheus did not scrape the {gen} twin's {n} pods")
        yield prom


def _signals(
    snapshot_source: object, reads: int
) -> tuple[FleetSignals, dict[tuple[str, tuple[tuple[str, str], ...]], float], str | None]:
    engine = SignalEngine()
    now = time.time()
    snap = None
    for i in range(reads):
        snap = snapshot_source.read(now + i)  # type: ignore[attr-defined]
    assert snap is not None
    assert snap.ok, snap.error
    engine.observe(snap)
    fs = engine.tick(now + reads)
    gauges = {
        k: v
        for k, v in gauge_values(SignalsCollector(engine)).items()
        if k[0] not in (c.M_SOURCE_UP, c.M_SOURCE_AGE)
    }
    return fs, gauges, snap.vllm_generation


@pytest.mark.prometheus
@pytest.mark.parametrize("gen", GENERATIONS)
def test_same_signals_via_prometheus_as_via_direct_scrape(
    gen: str, fleets: dict[str, Fleet], prometheus: Prometheus
) -> None:
    metrics, server = fleets[gen]
    targets = targets_of(metrics, server)
    scrape = ScrapeSource(targets, config=ScrapeSourceConfig(max_workers=2))
    prom = PrometheusSource(
        PrometheusSourceConfig(url=prometheus.url, namespace=f"ns-{gen}", rate_window_seconds=15),
        targets=targets,
    )
    s_fs, s_gauges, s_gen = _signals(scrape, reads=2)  # two reads: rates known (zero, frozen)
    p_fs, p_gauges, p_gen = _signals(prom, reads=1)
    assert s_gen == p_gen == gen

    # the state is not trivial: a busy prefill pool, pods with queues and HBM in use
    assert any((p.queue or 0) > 0 for p in s_fs.pods)
    assert any((p.tier_usage[c.TIER_HBM] or 0) > 0 for p in s_fs.pods)
    assert {p.role for p in s_fs.pods} == {c.ROLE_PREFILL, c.ROLE_DECODE}

    assert [(p.pod, p.pool, p.role) for p in s_fs.pods] == [(p.pod, p.pool, p.role) for p in p_fs.pods]
    for a, b in zip(s_fs.pods, p_fs.pods, strict=True):
        assert a.tier_usage.keys() == b.tier_usage.keys()
        for tier, v in a.tier_usage.items():
            w = b.tier_usage[tier]
            assert (v is None) == (w is None), (a.pod, tier)
            assert v is None or w is None or math.isclose(v, w, rel_tol=1e-9, abs_tol=1e-12), (a.pod, tier)
        assert a.queue == b.queue
        assert a.running == b.running
    for x, y in zip(s_fs.pools, p_fs.pools, strict=True):
        assert x.pool == y.pool
        assert x.pressure.firing == y.pressure.firing
        assert x.pressure.reasons == y.pressure.reasons
        assert x.pressure.kv_usage_max == y.pressure.kv_usage_max
        assert x.window.decode_busy_ratio == y.window.decode_busy_ratio == 0.0
        assert x.balance.ratio_deployed == y.balance.ratio_deployed
    # and the exported gauges are the same series with the same values
    assert s_gauges.keys() == p_gauges.keys()
    for k, v in s_gauges.items():
        assert math.isclose(v, p_gauges[k], rel_tol=1e-9, abs_tol=1e-12), k
