"""The size cap and the deadline of the HTTP answers the sources read (observer/sources/capped.py):
the pure `read_body`, the memory one capped read holds, and an answer that trickles in, over real
HTTP on loopback for both clients. Each reader's own cap and deadline tests sit with its tests
(test_scrape, test_discovery, test_prometheus, tests/autoscaler/test_service_arrival)."""

from __future__ import annotations

import gzip
import json
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator

import pytest

from observer.sources.capped import (
    DEFAULT_MAX_API_BYTES,
    DEFAULT_MAX_PAGE_BYTES,
    AnswerTooSlow,
    ResponseTooLarge,
    UndecodableBody,
    capped_client,
    capped_session,
    get_text,
    read_body,
)
from observer.sources.settings import SourcesSettings
from tests.support.httpstub import Answer, Endless, Reply, Seen, serve_http
from tests.support.slow import BUDGET, ON_TIME, Slow
from tests.support.slow import CASES as SLOW_CASES

CAP = 2**20
SETTING = "sources.test.max_body_bytes"
SECONDS_SETTING = "sources.test.timeout_seconds"


def _read(
    raw: list[bytes] | Iterator[bytes], encoding: str | None = None, length: str | None = None
) -> bytes:
    return read_body(raw, encoding, length, max_bytes=CAP, url="http://x/m?query=long", setting=SETTING)


def test_a_declared_length_past_the_cap_is_refused_before_the_body_is_read() -> None:
    def untouched() -> Iterator[bytes]:
        raise AssertionError("the body was read")
        yield b""  # pragma: no cover

    with pytest.raises(ResponseTooLarge) as exc:
        _read(untouched(), length=str(CAP + 1))
    assert exc.value.setting == SETTING
    assert str(exc.value) == (
        f"answer larger than {CAP} bytes, the cap {SETTING} (raise it if such answers are expected): http://x/m"
    )
    assert _read([b"a" * CAP], length=str(CAP)) == b"a" * CAP  # exactly the cap is fine
    assert _read([b"ab"], length="2, 2") == b"ab"  # a malformed length: the counts decide


def test_a_compressed_stream_that_never_ends_is_stopped_by_the_received_count() -> None:
    """Empty stored deflate blocks decode to nothing: only the bytes received can stop them."""
    header = gzip.compress(b"")[:10]
    empty_blocks = b"\x00\x00\x00\xff\xff" * 10_000
    endless = Endless(empty_blocks, first=header, limit=64 * CAP)
    with pytest.raises(ResponseTooLarge):
        _read(iter(endless), "gzip")
    assert not endless.exhausted


def test_encodings_other_than_gzip_and_corrupt_bodies_are_undecodable() -> None:
    assert _read([gzip.compress(b"hello")], "gzip") == b"hello"
    assert _read([zlib.compress(b"hello")], "deflate") == b"hello"
    assert _read([gzip.compress(gzip.compress(b"hello"))], "gzip, gzip") == b"hello"
    assert _read([b"hello"], "identity") == b"hello"
    with pytest.raises(UndecodableBody, match="br"):
        _read([b"hello"], "br")
    with pytest.raises(UndecodableBody, match="corrupt"):
        _read([b"\x1f\x8b not gzip"], "gzip")


@pytest.fixture(scope="module")
def stacked_bomb() -> bytes:
    """3 KB that a client honouring `Content-Encoding: gzip, gzip` inflates to 256 MiB."""
    z = zlib.compressobj(1, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    zeros = bytes(2**20)
    once = b"".join([*(z.compress(zeros) for _ in range(256)), z.flush()])
    return gzip.compress(once)


def _peak_bytes(read: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        with pytest.raises(ResponseTooLarge):
            read()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("client", ["httpx", "requests"])
def test_a_stacked_gzip_bomb_never_holds_much_more_than_the_cap(client: str, stacked_bomb: bytes) -> None:
    """Both clients' capped reads hold a few times the cap at most (httpx's own decoding would
    inflate the 3 KB answer to 256 MiB in one step before any count could stop it)."""
    assert len(stacked_bomb) < 4096

    def answer(req: Seen) -> Reply:
        return Reply(200, stacked_bomb, {"Content-Encoding": "gzip, gzip"})

    with serve_http(answer) as (url, _):
        if client == "httpx":
            with capped_client(5.0) as c:
                peak = _peak_bytes(
                    lambda: get_text(
                        c,
                        f"{url}/m",
                        max_bytes=CAP,
                        setting=SETTING,
                        max_seconds=5.0,
                        seconds_setting=SECONDS_SETTING,
                    )
                )
        else:
            with capped_session(CAP, SETTING, 5.0, SECONDS_SETTING) as s:
                peak = _peak_bytes(lambda: s.get(f"{url}/m", timeout=5))
    assert peak < 4 * CAP, peak


def test_a_capped_session_reads_a_redirect_under_the_cap_too() -> None:
    def answer(req: Seen) -> Reply:
        if req.path == "/ok":
            return Reply(200, b'{"ok": true}')
        return Reply(302, b" " * (CAP + 1), {"Location": "/ok"})

    with serve_http(answer) as (url, _), capped_session(CAP, SETTING, 5.0, SECONDS_SETTING) as s:
        with pytest.raises(ResponseTooLarge):
            s.get(f"{url}/moved", timeout=5)
        assert s.get(f"{url}/ok", timeout=5).json() == {"ok": True}


def test_every_source_setting_has_a_cap_that_reaches_its_reader() -> None:
    default = SourcesSettings()
    assert default.scrape.config().max_body_bytes == DEFAULT_MAX_PAGE_BYTES == 16 * 2**20
    assert default.kubernetes.config().max_body_bytes == DEFAULT_MAX_API_BYTES == 64 * 2**20
    assert default.prometheus.config().max_body_bytes == DEFAULT_MAX_API_BYTES
    mine = SourcesSettings.model_validate(
        {name: {"max_body_bytes": 1000 + i} for i, name in enumerate(("scrape", "kubernetes", "prometheus"))}
    )
    assert mine.scrape.config().max_body_bytes == 1000
    assert mine.kubernetes.config().max_body_bytes == 1001
    assert mine.prometheus.config().max_body_bytes == 1002
    with pytest.raises(ValueError, match="max_body_bytes"):
        SourcesSettings.model_validate({"scrape": {"max_body_bytes": 0}})


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", SLOW_CASES)
@pytest.mark.parametrize("client", ["httpx", "requests"])
def test_an_answer_that_trickles_in_fails_at_its_deadline(client: str, case: str) -> None:
    """Headers or a body that keep coming, a piece every 0.2 s, never trip the per-read timeout
    (5 s here): the answer fails at its deadline (AnswerTooSlow naming the setting), not when it
    ends 20 s later. The same client reads the next answer as usual, and an answer that comes at
    once is read."""
    valid = b'{"ok": true}'
    slow = Slow(valid, b" ")

    def answer(req: Seen) -> Answer:
        return slow.reply(case) if req.path == "/slow" else (200, valid)

    error: str | None = None
    with serve_http(answer) as (url, _):
        if client == "httpx":
            with capped_client(5.0) as hc:

                def get(path: str) -> str:
                    return get_text(
                        hc,
                        url + path,
                        max_bytes=CAP,
                        setting=SETTING,
                        max_seconds=BUDGET,
                        seconds_setting=SECONDS_SETTING,
                    )

                start = time.monotonic()
                try:
                    text = get("/slow")
                except AnswerTooSlow as exc:
                    error = str(exc)
                elapsed = time.monotonic() - start
                after = get("/ok")
        else:
            with capped_session(CAP, SETTING, BUDGET, SECONDS_SETTING) as s:
                start = time.monotonic()
                try:
                    text = s.get(f"{url}/slow", timeout=5.0).text
                except AnswerTooSlow as exc:
                    error = str(exc)
                elapsed = time.monotonic() - start
                after = s.get(f"{url}/ok", timeout=5.0).text
    assert json.loads(after) == {"ok": True}
    if case == ON_TIME:
        assert error is None
        assert json.loads(text) == {"ok": True}
        return
    slow.refused(case, error, SECONDS_SETTING, elapsed)
