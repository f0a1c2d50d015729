"""Two `serve` replicas on one store (DESIGN §6): a PUT /api/v1/slos on one is judged and exported
by the other within one housekeeping tick, the way the local PUT applies it (docs/storage.md,
"SLOs: who wins")."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from observer import conventions as c
from observer.api.app import create_app
from observer.cli import extra_routers
from observer.config import load_settings
from observer.pipeline import Pipeline
from observer.store import Store
from tests.support.otel import Req, VllmSpans, encode

PB = {"Content-Type": c.CT_PROTOBUF}
_ids = itertools.count()
TENANT = "acme"
TTFT_500MS = {"name": "ttft-500ms", "sli": "ttft", "objective": 0.9, "threshold_seconds": 0.5}


def _client(url: str) -> TestClient:
    # pending_timeout 0.2 s -> a housekeeping tick of 0.1 s (min(5 s, pending_timeout / 2))
    settings = load_settings(
        None, overrides={"store": {"url": url}, "ingest": {"pending_timeout_seconds": 0.2}}, env={}
    )
    app = create_app(
        settings, Store.open(url), registry=CollectorRegistry(), extra_routers=extra_routers(settings)
    )
    return TestClient(app)


def _ingest(client: TestClient, ttfts: list[float]) -> None:
    sp = VllmSpans()
    t0 = time.time() - 5
    for ttft in ttfts:
        rid = f"req-{next(_ids)}"  # unique over batches: records are deduplicated by request id
        sp.aggregated(Req(TENANT, prompt=100, output=10, ttft=ttft, start=t0, request_id=rid))
    r = client.post(c.OTLP_TRACES_PATH, content=encode(sp.take()), headers=PB)
    assert r.status_code == 200, r.text


def _slo_samples(client: TestClient) -> dict[tuple[str, str], float]:
    """(sample name, slo) -> value of the tenant's SLO counters and of the objective gauges."""
    out = {}
    for fam in text_string_to_metric_families(client.get("/metrics").text):
        for s in fam.samples:
            if s.name.startswith(f"{c.M_SLO_OBJECTIVE}") or (
                s.name.startswith((c.M_SLO_REQUESTS, c.M_SLO_ERRORS)) and s.labels.get("tenant") == TENANT
            ):
                out[(s.name, s.labels[c.LABEL_SLO])] = s.value
    return out


def _new_set(client: TestClient) -> list[dict[str, Any]]:
    """ttft-500ms replaces the default latency SLOs; the default availability SLO stays as it is
    (its counters go on)."""
    current = client.get("/api/v1/slos").json()["slos"]
    return [TTFT_500MS, *(s for s in current if s["name"] == "availability")]


def _tenant_slos(client: TestClient) -> dict[str, Any]:
    r = client.get(f"/api/v1/tenants/{TENANT}", params={"window": 3600})
    assert r.status_code == 200, r.text
    slo: dict[str, Any] = r.json()["slo"]
    return slo


def test_a_put_on_one_replica_is_judged_and_exported_by_the_other(db_url: str) -> None:
    with _client(db_url) as a, _client(db_url) as b:
        pipe_b: Pipeline = b.app.state.pipeline  # type: ignore[attr-defined]
        assert pipe_b.housekeeping_tick_seconds == pytest.approx(0.1)
        _ingest(b, [1.0, 1.0, 1.0])  # good for ttft-2s, bad for ttft-500ms
        before = _slo_samples(b)
        assert before[(c.M_SLO_REQUESTS + "_total", "ttft-2s")] == 3
        assert before[(c.M_SLO_ERRORS + "_total", "ttft-2s")] == 0

        put = a.put("/api/v1/slos", json={"slos": _new_set(a)})
        assert put.status_code == 200, put.text
        assert [s["name"] for s in b.get("/api/v1/slos").json()["slos"]] == ["ttft-500ms", "availability"]

        # B's housekeeping reads the stored set and applies it (bounded wait: many ticks)
        deadline = time.monotonic() + 10
        while set(_tenant_slos(b)) != {"ttft-500ms", "availability"}:
            assert time.monotonic() < deadline, f"B still judges {sorted(_tenant_slos(b))}"
            time.sleep(0.05)
        assert [s.name for s in pipe_b.aggregator.slos] == ["ttft-500ms", "availability"]
        # windows rebuilt exactly from the stored records, judged by the new definition
        assert _tenant_slos(b)["ttft-500ms"]["attainment"] == 0.0

        _ingest(b, [0.3, 0.3, 0.7, 0.5])  # three good (0.5 is good: exact threshold), one bad
        slo = _tenant_slos(b)["ttft-500ms"]
        assert slo["attainment"] == pytest.approx(3 / 7)
        after = _slo_samples(b)
        # as a local PUT does: the new SLO's counters start at the change, the unchanged SLO's go
        # on, the removed SLOs' series are gone
        assert after[(c.M_SLO_REQUESTS + "_total", "ttft-500ms")] == 4
        assert after[(c.M_SLO_ERRORS + "_total", "ttft-500ms")] == 1
        assert after[(c.M_SLO_REQUESTS + "_total", "availability")] == 7
        assert after[(c.M_SLO_OBJECTIVE, "ttft-500ms")] == 0.9
        assert {slo for _, slo in after} == {"ttft-500ms", "availability"}

        # B serves alert rules for the stored set too (straight from the store)
        rules = b.get("/api/v1/alerts/rules").json()
        burn = {
            r["labels"][c.LABEL_SLO]
            for g in rules["groups"]
            for r in g["rules"]
            if r.get("alert") == c.ALERT_SLO_BURN
        }
        assert burn == {"ttft-500ms", "availability"}


def test_sync_is_a_no_op_while_the_stored_set_is_unchanged(tmp_path: Path) -> None:
    with _client(f"sqlite:///{tmp_path / 'one.db'}") as a:
        pipe: Pipeline = a.app.state.pipeline  # type: ignore[attr-defined]
        _ingest(a, [1.0])
        aggregator_slos = pipe.aggregator.slos
        assert pipe.sync_slos() is False  # same set as seeded: nothing rebuilt
        assert pipe.aggregator.slos is aggregator_slos
        assert a.put("/api/v1/slos", json={"slos": _new_set(a)}).status_code == 200
        assert pipe.sync_slos() is False  # the local PUT already applied what it stored
        before = _slo_samples(a)
        assert before[(c.M_SLO_REQUESTS + "_total", "availability")] == 1
