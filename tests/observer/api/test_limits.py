"""The server's limits against hostile or careless clients, over real HTTP: request bodies held
at once, the query API's body cap, OTLP/JSON that would cost far more memory than its size,
nesting past the parser's depth, the token's own validity and the OpenAPI pages behind it."""

from __future__ import annotations

import gzip
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from observer import conventions as c
from observer.config import ConfigError, load_settings
from tests.support.otel import Req, VllmSpans, encode
from tests.support.server import Running, serve_in_thread

PB = {"Content-Type": c.CT_PROTOBUF}
JSON = {"Content-Type": c.CT_JSON}
MIB = 1024 * 1024


def _partial_upload(url: str, declared: int, sent: int) -> socket.socket:
    """A client that declares `declared` bytes of body and sends only `sent` of them, then waits."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    head = (
        f"POST {c.OTLP_TRACES_PATH} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {c.CT_PROTOBUF}\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    )
    sock.sendall(head.encode() + b"\x00" * sent)
    return sock


def _good_body(tenant: str) -> bytes:
    sp = VllmSpans()
    sp.aggregated(Req(tenant, prompt=10, output=2, start=time.time() - 5, request_id=f"req-{tenant}"))
    return encode(sp.take())


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Running]:
    limits = {
        "max_body_bytes": 1 * MIB,
        "max_decompressed_bytes": 1 * MIB,
        "max_inflight_body_bytes": 2 * MIB,
    }
    with serve_in_thread(tmp_path, {"server": limits}) as running:
        yield running


def test_bodies_held_at_once_are_bounded_and_given_back(small: Running) -> None:
    # two slow uploads hold 1.8 MiB of the 2 MiB budget; a third body does not fit: 429 with
    # Retry-After (a collector retries it), not a server that grows with every upload
    slow = [_partial_upload(small.url, declared=MIB, sent=900 * 1024) for _ in range(2)]
    try:
        time.sleep(0.5)  # the server has read what they sent
        third = small.post(c.OTLP_TRACES_PATH, content=b"\x00" * (900 * 1024), headers=PB)
        assert third.status_code == 429
        assert third.headers["Retry-After"] == "2"
        small_ok = small.post(c.OTLP_TRACES_PATH, content=_good_body("fits"), headers=PB)
        assert small_ok.status_code == 200  # a small batch still fits next to them
    finally:
        for sock in slow:
            sock.close()
    time.sleep(0.5)  # the disconnects give their bytes back
    again = small.post(c.OTLP_TRACES_PATH, content=b"\x00" * (900 * 1024), headers=PB)
    assert again.status_code == 400  # read whole now (and refused as protobuf garbage)
    assert small.post(c.OTLP_TRACES_PATH, content=_good_body("after"), headers=PB).status_code == 200
    assert {"fits", "after"} <= set(small.tenants())


def test_query_api_body_is_capped(small: Running) -> None:
    huge = b'{"slos": [' + b" " * (2 * MIB) + b"]}"
    assert small.put("/api/v1/slos", content=huge, headers=JSON).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused as it arrives
        yield b'{"slos": ['
        for _ in range(64):
            yield b" " * 65536
        yield b"]}"

    r = small.put("/api/v1/slos", content=chunks(), headers=JSON)
    assert r.status_code == 413
    assert "larger than" in r.json()["detail"]
    assert small.get("/api/v1/slos").status_code == 200


def test_otlp_json_that_would_cost_gigabytes_is_refused(tmp_path: Path) -> None:
    # 61 KB of gzip: a million empty objects (json.loads would build ~1.5 GB of them)
    bomb = b'{"resourceSpans":[{"x":[' + b"{}," * (c.MAX_JSON_CONTAINERS + 10) + b"{}]}]}"
    with serve_in_thread(tmp_path) as svc:
        r = svc.post(
            c.OTLP_TRACES_PATH, content=gzip.compress(bomb, 9), headers={**JSON, "Content-Encoding": "gzip"}
        )
        assert r.status_code == 413
        assert "objects and arrays" in r.json()["message"]
        # nesting deeper than the parser's recursion: 400 with an OTLP status, not a 500
        deep = b"[" * 100_000 + b"]" * 100_000
        r = svc.post(c.OTLP_TRACES_PATH, content=deep, headers=JSON)
        assert r.status_code == 400
        assert "nested too deeply" in r.json()["message"]
        # an attribute of 300 nested key-value lists (the span's own JSON is 1,200 levels deep)
        value = '{"kvlistValue":{"values":[{"key":"k","value":' * 300 + '{"stringValue":"x"}' + "}]}}" * 300
        ids = f'"traceId":"{"1" * 32}","spanId":"{"2" * 16}"'
        span = f'{{{ids},"attributes":[{{"key":"a","value":{value}}}]}}'
        body = f'{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{span}]}}]}}]}}'
        r = svc.post(c.OTLP_TRACES_PATH, content=body.encode(), headers=JSON)
        assert r.status_code == 400
        assert svc.get("/healthz").status_code == 200


def test_token_must_be_a_real_token() -> None:
    for bad in ("", "   ", "two words"):
        with pytest.raises(ConfigError, match="auth_token"):
            load_settings(None, overrides={"server": {"auth_token": bad}}, env={})
    # a secret mounted from a file often ends in a newline, which no client can send
    s = load_settings(None, overrides={}, env={"PD_OBSERVER_SERVER__AUTH_TOKEN": "s3cret\n"})
    assert s.server.auth_token == "s3cret"


def test_empty_bearer_is_refused_and_the_openapi_pages_need_the_token(tmp_path: Path) -> None:
    with serve_in_thread(tmp_path, {"server": {"auth_token": "s3cret"}}) as svc:
        assert svc.get("/api/v1/slos", headers={"Authorization": "Bearer"}).status_code == 401
        assert svc.get("/openapi.json").status_code == 401
        spec = svc.get("/openapi.json", headers={"Authorization": "Bearer s3cret"})
        assert spec.status_code == 200
        assert c.OTLP_TRACES_PATH in spec.json()["paths"]
        for page in ("/docs", "/redoc", "/docs/oauth2-redirect"):
            assert svc.get(page).status_code == 404
