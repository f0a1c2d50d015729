"""An OTLP batch answered 200 is never lost: kill -9 right after acks, restart, counts intact."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace.export import SpanExportResult

from observer import conventions as c
from tests.support.otel import Req, VllmSpans, export
from tests.support.server import serve_subprocess

pytestmark = pytest.mark.slow


def _tenants(url: str) -> dict[str, dict[str, object]]:
    r = httpx.get(url + "/api/v1/tenants", params={"window": 3600}, timeout=10)
    r.raise_for_status()
    return {t["tenant"]: t for t in r.json()["tenants"]}


def test_kill9_after_acknowledged_batches_loses_nothing(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'durable.db'}"
    sp = VllmSpans()
    t0 = time.time() - 10
    sent_requests = 0
    sent_prompt = 0
    with serve_subprocess(db, tmp_path) as svc:
        for batch in range(20):
            for i in range(25):
                sp.aggregated(Req("durable", prompt=100 + i, output=3, cached={"hbm": i}, start=t0))
                sent_prompt += 100 + i
                sent_requests += 1
            # a P/D pair whose halves arrive in different batches: the prefill half is pending
            # when the process dies and must be stitched after the restart.
            assert export(svc.url + c.OTLP_TRACES_PATH, sp.take()) == SpanExportResult.SUCCESS
            if batch == 19:
                sp.pd_pair(Req("durable", prompt=1000, output=10, start=t0, request_id="split"))
                spans = sp.take()
                prefill = [s for s in spans if s.resource.attributes.get(c.RES_LLMD_ROLE) == c.ROLE_PREFILL]
                rest = [s for s in spans if s not in prefill]
                assert export(svc.url + c.OTLP_TRACES_PATH, prefill) == SpanExportResult.SUCCESS
                pending_decode = rest
        svc.kill9()

    with serve_subprocess(db, tmp_path) as svc:
        t = _tenants(svc.url)["durable"]
        assert t["requests"] == sent_requests
        assert t["prompt_tokens"] == sent_prompt
        assert export(svc.url + c.OTLP_TRACES_PATH, pending_decode) == SpanExportResult.SUCCESS
        t = _tenants(svc.url)["durable"]
        assert t["requests"] == sent_requests + 1, "the P/D pair split across the crash counts once"
        assert t["prompt_tokens"] == sent_prompt + 1000
