"""The HTTP surface against values a careless or hostile client sends, over the real app and a real
store (SQLite, and PostgreSQL where the dialect matters): numbers past what the decoder or the
database can hold, lookups with NUL or `/`, SLO sets that cannot be judged or would multiply the
exported series, and validation errors that stay one line."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from autoscaler.api import decisions_router
from autoscaler.audit import SqlAuditLog
from observer import conventions as c
from observer.api.app import create_app
from observer.cli import extra_routers
from observer.config import load_settings
from observer.store import Store
from tests.support.otel import Req, VllmSpans, encode

PB = {"Content-Type": c.CT_PROTOBUF}
JSON = {"Content-Type": c.CT_JSON}
AUTH = {"Authorization": "Bearer tok"}


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    """The app as `serve` mounts it (generated routes, decisions), with a token, on `db_url`."""
    settings = load_settings(
        None, overrides={"server": {"auth_token": "tok"}, "store": {"url": db_url}}, env={}
    )
    store = Store.open(db_url)
    log = SqlAuditLog(store.engine)
    routers = [*extra_routers(settings), decisions_router(log)]
    app = create_app(settings, store, extra_routers=routers)
    with TestClient(app, headers=AUTH) as tc:
        yield tc


def _json_span(i: int, attrs: list[dict[str, Any]], start: Any = None, end: Any = None) -> dict[str, Any]:
    now = time.time_ns()
    base = [
        {"key": c.ATTR_PROMPT_TOKENS, "value": {"intValue": "10"}},
        {"key": c.ATTR_TENANT_ID, "value": {"stringValue": "json-t"}},
        {"key": c.ATTR_REQUEST_ID, "value": {"stringValue": f"json-{i}-{now}"}},
    ]
    return {
        "traceId": f"{now + i:032x}",
        "spanId": f"{i + 1:016x}",
        "name": c.SPAN_VLLM_REQUEST,
        "startTimeUnixNano": str(now - 10**9) if start is None else start,
        "endTimeUnixNano": str(now) if end is None else end,
        "attributes": base + attrs,
    }


def _json_body(spans: list[dict[str, Any]]) -> bytes:
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}).encode()


def _rejected(r: Any) -> int:
    """`partial_success.rejected_spans` of a 200 answer, in either encoding."""
    assert r.status_code == 200, r.content[:300]
    if r.headers["content-type"] == c.CT_JSON:
        return int(r.json().get("partialSuccess", {}).get("rejectedSpans", 0))
    resp = ExportTraceServiceResponse()
    resp.ParseFromString(r.content)
    return int(resp.partial_success.rejected_spans)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_json_numbers_past_a_double_or_uint64_reject_the_span_not_the_request(client: TestClient) -> None:
    huge = 10**400  # a JSON integer literal: Python's json gives an int that no float holds
    cases = [
        _json_span(1, [], start=huge, end=huge + 1),  # times past fixed64
        _json_span(2, [], start=str(huge), end=str(huge + 1)),
        _json_span(3, [], start=str(-(10**18))),  # negative: no protobuf body can say it
        _json_span(4, [{"key": "some.ratio", "value": {"doubleValue": huge}}]),
        _json_span(5, [{"key": c.ATTR_LAT_E2E, "value": {"intValue": str(huge)}}]),
        _json_span(6, [{"key": c.ATTR_COMPLETION_TOKENS, "value": {"doubleValue": 1e300}}]),
    ]
    for i, span in enumerate(cases):
        r = client.post(c.OTLP_TRACES_PATH, content=_json_body([span]), headers=JSON)
        assert _rejected(r) == 1, (i, r.text)
        assert len(r.content) < 2000
    # a resource attribute of that kind is the whole batch's: one clear 400
    doc = json.loads(_json_body([_json_span(7, [])]))
    doc["resourceSpans"][0]["resource"] = {"attributes": [{"key": "x", "value": {"doubleValue": 0}}]}
    body = json.dumps(doc).replace('"doubleValue": 0', f'"doubleValue": {huge}').encode()
    r = client.post(c.OTLP_TRACES_PATH, content=body, headers=JSON)
    assert r.status_code == 400
    assert "resource attributes" in r.json()["message"]
    good = client.post(c.OTLP_TRACES_PATH, content=_json_body([_json_span(8, [])]), headers=JSON)
    assert _rejected(good) == 0
    assert client.get("/api/v1/tenants/json-t").json()["requests"] == 1


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_token_counts_past_the_bound_are_rejected_not_a_store_outage(client: TestClient, db_url: str) -> None:
    start = time.time() - 5
    sp = VllmSpans()
    sp.aggregated(Req("big", prompt=2**63 - 1, output=1, start=start, request_id="int64-max"))
    sp.aggregated(Req("big", prompt=c.MAX_TOKENS + 1, output=1, start=start, request_id="past-bound"))
    sp.aggregated(Req("big", prompt=c.MAX_TOKENS, output=1, start=start, request_id="at-bound"))
    r = client.post(c.OTLP_TRACES_PATH, content=encode(sp.take()), headers=PB)
    assert _rejected(r) == 2  # was a 503 "store unavailable" the exporter retried forever
    assert client.get("/readyz").status_code == 200
    json_big = _json_span(1, [{"key": c.ATTR_COMPLETION_TOKENS, "value": {"intValue": str(10**30)}}])
    assert _rejected(client.post(c.OTLP_TRACES_PATH, content=_json_body([json_big]), headers=JSON)) == 1
    assert client.get("/api/v1/tenants/big").json()["prompt_tokens"] == c.MAX_TOKENS

    # a minute of accepted counts must not overflow the rollups' BIGINT sums: 1,100 requests of
    # 2**53 tokens were accepted, then every maintenance run failed ("integer overflow")
    sp = VllmSpans()
    for i in range(1100):
        sp.aggregated(Req("minute", prompt=2**53, output=1, start=start, request_id=f"m-{i}"))
    assert _rejected(client.post(c.OTLP_TRACES_PATH, content=encode(sp.take()), headers=PB)) == 1100
    store = Store.open(db_url)
    try:
        assert store.rollup(time.time() + 120) >= 1
    finally:
        store.close()


def _ingest(client: TestClient, reqs: list[Req]) -> None:
    sp = VllmSpans()
    for r in reqs:
        sp.aggregated(r)
    assert _rejected(client.post(c.OTLP_TRACES_PATH, content=encode(sp.take()), headers=PB)) == 0


def test_lookups_take_any_value_as_sent(client: TestClient) -> None:
    long_tenant = "t" * 300
    start = time.time() - 5
    _ingest(
        client,
        [
            Req("org/team", prompt=10, output=1, start=start, request_id="req/1"),
            Req(long_tenant, prompt=20, output=1, start=start, request_id="r" * 300, model="m" * 300),
        ],
    )
    # ids with a slash: listed, and now found
    listed = {t["tenant"] for t in client.get("/api/v1/tenants").json()["tenants"]}
    assert "org/team" in listed
    assert client.get("/api/v1/tenants/org%2Fteam").json()["requests"] == 1
    assert client.get("/api/v1/tenants/org/team").json()["requests"] == 1
    assert client.get("/api/v1/requests/req/1").json()["tenant"] == "org/team"
    # long values: as sent and as stored (cut with a hash) find the same entry
    stored = next(t for t in listed if t.startswith("ttt"))
    assert len(stored) == c.MAX_VALUE_CHARS
    for name in (long_tenant, stored):
        r = client.get(f"/api/v1/tenants/{name}", params={"model": "m" * 300})
        assert r.status_code == 200
        assert r.json()["tenant"] == stored
    assert client.get(f"/api/v1/requests/{'r' * 300}").json()["prompt_tokens"] == 20
    # NUL: PostgreSQL refuses it in a query parameter: a 500 before, now a 404 / empty list
    for path in ("/api/v1/requests/a%00b", "/api/v1/tenants/a%00b"):
        r = client.get(path)
        assert r.status_code == 404
        assert len(r.content) < 600
    assert client.get("/api/v1/decisions", params={"pool": "a\x00b"}).json() == {"decisions": []}


def test_slo_sets_that_cannot_be_judged_or_stored_are_422_and_change_nothing(client: TestClient) -> None:
    before = client.get("/api/v1/slos").json()
    ttft = '{"name":"x","sli":"ttft","objective":0.99,"threshold_seconds":%s}'
    bad: dict[str, bytes] = {
        "threshold_seconds": (b'{"slos":[' + (ttft % "1e999").encode() + b"]}"),  # inf: was a 500
        "threshold_seconds ": (b'{"slos":[' + (ttft % "Infinity").encode() + b"]}"),
        "description": json.dumps(
            {"slos": [{"name": "a", "sli": "error", "objective": 0.99, "description": "x\x00y"}]}
        ).encode(),
        "tenants": json.dumps(
            {"slos": [{"name": "a", "sli": "error", "objective": 0.99, "tenants": ["a\x00"]}]}
        ).encode(),
        f"at most {c.MAX_SLOS}": json.dumps(
            {"slos": [{"name": f"s{i}", "sli": "error", "objective": 0.99} for i in range(c.MAX_SLOS + 1)]}
        ).encode(),
    }
    for what, body in bad.items():
        r = client.put("/api/v1/slos", content=body, headers=JSON)
        assert r.status_code == 422, (what, r.text)
        detail = r.json()["detail"]
        assert isinstance(detail, str)
        assert "\n" not in detail
        assert what.strip() in detail
    assert client.get("/api/v1/slos").json() == before
    assert client.get("/api/v1/alerts/rules").status_code == 200
    # the most there may be is accepted
    most = [{"name": f"s{i}", "sli": "error", "objective": 0.99} for i in range(c.MAX_SLOS)]
    assert client.put("/api/v1/slos", json={"slos": most}).status_code == 200


def test_a_tenant_with_a_trailing_newline_is_no_valid_label_value(client: TestClient) -> None:
    # `re.match("^...$")` let "acme\n" through, and the served rules did not parse (promtool:
    # "unterminated quoted string"); now it is the documented 409 like any invalid tenant
    slos = [{"name": "a", "sli": "error", "objective": 0.99, "tenants": ["acme\n"]}]
    assert client.put("/api/v1/slos", json={"slos": slos}).status_code == 200
    r = client.get("/api/v1/alerts/rules")
    assert r.status_code == 409
    assert "acme" in r.json()["detail"]


def test_validation_errors_are_one_line_naming_the_parameter(client: TestClient) -> None:
    cases = [
        ("/api/v1/tenants", {"window": 0}, "window"),
        ("/api/v1/tenants", {"window": "abc"}, "window"),
        ("/api/v1/decisions", {"limit": 0}, "limit"),
        ("/api/v1/decisions", {"since": "nan"}, "since"),  # was 200 with nothing
        ("/api/v1/decisions", {"since": "inf"}, "since"),
    ]
    for path, params, name in cases:
        r = client.get(path, params=params)
        assert r.status_code == 422, (path, params, r.text)
        detail = r.json()["detail"]
        assert isinstance(detail, str), detail
        assert detail.startswith(f"invalid query parameter {name}: "), detail
    r = client.get("/api/v1/tenants", params={"window": "x" * 5000})
    assert r.status_code == 422
    assert len(r.content) < 600  # the value is not echoed whole
    assert client.get("/api/v1/decisions", params={"since": "-1e300"}).status_code == 200


def test_the_token_is_asked_for_on_every_route_but_the_probes(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        overrides={"server": {"auth_token": "tok"}, "store": {"url": f"sqlite:///{tmp_path / 'a.db'}"}},
        env={},
    )
    store = Store.open(settings.store.url)
    app = create_app(
        settings, store, extra_routers=[*extra_routers(settings), decisions_router(SqlAuditLog(store.engine))]
    )
    with TestClient(app) as tc:
        schema = app.openapi()  # every route, the included routers' too
        routes = {(m.upper(), path) for path, ops in schema["paths"].items() for m in ops}
        routes.add(("GET", "/openapi.json"))
        assert {("GET", "/api/v1/decisions"), ("GET", "/api/v1/alerts/rules"), ("GET", "/healthz")} <= routes
        for method, path in sorted(routes):
            url = re.sub(r"\{[^}]+\}", "x", path)
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "tok"}):
                r = tc.request(method, url, headers=headers)
                if path in ("/healthz", "/readyz"):
                    assert r.status_code in (200, 503), path
                    continue
                assert r.status_code == 401, (method, path, headers)
                assert r.headers["WWW-Authenticate"] == "Bearer"
                if path == c.OTLP_TRACES_PATH:  # an OTLP error: a Status in the request's encoding
                    assert (
                        status_pb2.Status.FromString(r.content).message == "missing or invalid bearer token"
                    )
                else:
                    assert r.json() == {"detail": "missing or invalid bearer token"}


def test_the_open_readiness_probe_gives_the_store_error_only_with_the_token(tmp_path: Path) -> None:
    """`/readyz` is open (kubelet probes send no token); the store's error text names hosts and
    databases: with a token configured it is given only to a request that sends it."""
    settings = load_settings(
        None,
        overrides={"server": {"auth_token": "tok"}, "store": {"url": f"sqlite:///{tmp_path / 'a.db'}"}},
        env={},
    )
    app = create_app(settings, Store.open(settings.store.url))
    with TestClient(app) as tc:
        app.state.pipeline.store_error = 'OperationalError: connection to server at "db.internal" failed'
        anonymous = tc.get("/readyz")
        assert anonymous.status_code == 503
        assert anonymous.json() == {"status": "store_unavailable"}
        known = tc.get("/readyz", headers={"Authorization": "Bearer tok"})
        assert known.status_code == 503
        assert "db.internal" in known.json()["detail"]
