"""DESIGN §6: two ingest replicas (traces split by trace id) + one Prometheus give the same
per-tenant answer as one replica — exported counters are additive."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export import SpanExportResult

from observer import conventions as c
from tests.support.otel import Req, VllmSpans, export
from tests.support.procs import run_prometheus
from tests.support.server import serve_in_thread

pytestmark = [pytest.mark.slow, pytest.mark.prometheus]


def _spans() -> list[object]:
    sp = VllmSpans()
    t0 = time.time() - 5
    for i in range(60):
        tenant = f"t{i % 3}"
        if i % 2:
            sp.pd_pair(Req(tenant, prompt=1000 + i, output=20, cached={"hbm": 10 * i, "dram": i}, start=t0))
        else:
            sp.aggregated(Req(tenant, prompt=500 + i, output=10, cached={"disk": i}, start=t0))
    return sp.take()  # type: ignore[return-value]


def test_two_replicas_sum_to_one(tmp_path: Path) -> None:
    spans = _spans()
    # the Collector's loadbalancing exporter keys by trace id: split the same way
    shard: dict[int, list[object]] = {0: [], 1: []}
    for s in spans:
        shard[s.context.trace_id % 2].append(s)  # type: ignore[attr-defined]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "one").mkdir()
    with (
        serve_in_thread(tmp_path / "a") as a,
        serve_in_thread(tmp_path / "b") as b,
        serve_in_thread(tmp_path / "one") as one,
    ):
        assert export(a.url + c.OTLP_TRACES_PATH, shard[0]) == SpanExportResult.SUCCESS  # type: ignore[arg-type]
        assert export(b.url + c.OTLP_TRACES_PATH, shard[1]) == SpanExportResult.SUCCESS  # type: ignore[arg-type]
        assert export(one.url + c.OTLP_TRACES_PATH, spans) == SpanExportResult.SUCCESS  # type: ignore[arg-type]
        targets = lambda *urls: ", ".join(f"'{u.removeprefix('http://')}'" for u in urls)  # noqa: E731
        cfg = f"""
global: {{scrape_interval: 1s}}
scrape_configs:
  - job_name: replicas
    static_configs: [{{targets: [{targets(a.url, b.url)}]}}]
  - job_name: single
    static_configs: [{{targets: [{targets(one.url)}]}}]
"""
        with run_prometheus(cfg) as prom:
            for metric in (c.M_REQUESTS, c.M_PROMPT_TOKENS, c.M_CACHED_TOKENS):
                name = metric + "_total"
                prom.wait_for(f'count(count by (instance) ({name}{{job="replicas"}})) == 2')
                prom.wait_for(f'{name}{{job="single"}}')
                by = "tenant, tier" if metric == c.M_CACHED_TOKENS else "tenant"
                two = prom.query(f'sum by ({by}) ({name}{{job="replicas"}})')
                single = prom.query(f'sum by ({by}) ({name}{{job="single"}})')
                as_map = lambda res: {tuple(sorted(r["metric"].items())): float(r["value"][1]) for r in res}  # noqa: E731
                assert as_map(two) == as_map(single), metric
                assert as_map(single)
