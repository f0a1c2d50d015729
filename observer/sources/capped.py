"""Size caps on the HTTP answers the metric sources read (docs/sources.md, "Answer size caps").

A pod's or an EPP's /metrics page, the Kubernetes PodList and every Prometheus answer come from
an endpoint that may be hostile or broken. Each is read as a stream under a cap: an answer that
declares a larger Content-Length is refused before its body is read, and one that streams past
the cap (chunked without end, or a small gzip body that inflates to gigabytes) is cut off as soon
as it passes it, counted both as received and as decoded. Passing the cap raises
`ResponseTooLarge`, a ValueError: every reader reports it the way it reports any failed read.

The cap bounds memory, not only the result, because the body is decoded here (`read_body`, for
both clients) at most `_CHUNK` bytes per step: httpx inflates each network read whole and stacks
encodings, so a 1.8 KB body sent as `Content-Encoding: gzip, gzip` would be 1 GiB in one step
before any count (tests/observer/sources/test_capped.py measures the bound). The readers ask for
gzip only; another encoding is an `UndecodableBody` (a ValueError too).

Pure core: `read_body` over any chunks. Edges: `get_text` (an httpx GET: direct scrape,
Kubernetes discovery, the autoscaler's EPP counters) and `capped_session` (a requests Session,
for PrometheusConnect).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import httpx
import requests

__all__ = [
    "ACCEPT_ENCODING",
    "DEFAULT_MAX_API_BYTES",
    "DEFAULT_MAX_PAGE_BYTES",
    "ResponseTooLarge",
    "UndecodableBody",
    "capped_session",
    "get_text",
    "read_body",
]

# A vLLM /metrics page is tens to hundreds of KB (an EPP's less): 16 MiB is ~100x the largest.
DEFAULT_MAX_PAGE_BYTES = 16 * 2**20
# A PodList (~10-20 KB per pod) or a Prometheus answer over a fleet: 64 MiB is thousands of pods.
DEFAULT_MAX_API_BYTES = 64 * 2**20
ACCEPT_ENCODING = "gzip"  # what the readers ask for; `read_body` decodes gzip and deflate
_CODINGS = frozenset({"gzip", "x-gzip", "deflate"})
_CHUNK = 64 * 1024  # read size, and the most one decoding step may produce


class ResponseTooLarge(ValueError):
    """An answer passed its size cap (declared, received or decoded); names the setting."""

    def __init__(self, url: str, max_bytes: int, setting: str) -> None:
        self.url = url.split("?", 1)[0]  # a PromQL query string would bury the message
        self.max_bytes = max_bytes
        self.setting = setting
        super().__init__(
            f"answer larger than {max_bytes} bytes, the cap {setting} (raise it if such answers "
            f"are expected): {self.url}"
        )


class UndecodableBody(ValueError):
    """An answer in a Content-Encoding other than gzip or deflate, or a corrupt compressed one."""


def _bounded(chunks: Iterable[bytes], max_bytes: int, url: str, setting: str) -> Iterator[bytes]:
    """`chunks` as they come, raising ResponseTooLarge at the first one past `max_bytes`."""
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise ResponseTooLarge(url, max_bytes, setting)
        yield chunk


def _inflate(data: Iterable[bytes]) -> Iterator[bytes]:
    """One gzip (or zlib) layer, at most `_CHUNK` bytes out per step. Stops at the end of the
    compressed stream: what follows it is not read."""
    d = zlib.decompressobj(zlib.MAX_WBITS | 32)  # a gzip or a zlib header
    for chunk in data:
        pending = chunk
        while pending:
            out = d.decompress(pending, _CHUNK)
            pending = d.unconsumed_tail
            if out:
                yield out
            if d.eof:
                return
    if tail := d.flush():
        yield tail


def read_body(
    raw: Iterable[bytes],
    content_encoding: str | None,
    content_length: str | None,
    *,
    max_bytes: int,
    url: str,
    setting: str,
) -> bytes:
    """Pure: an answer's decoded body from its `raw` (still encoded) chunks and its
    Content-Encoding and Content-Length headers. Refused up front when the declared length is
    above `max_bytes`; stopped at the first chunk that takes the received or the decoded size
    past it (ResponseTooLarge). UndecodableBody for an encoding other than gzip/deflate (several,
    as `gzip, gzip`, are undone last first) or corrupt data."""
    try:
        declared = int(content_length) if content_length is not None else None
    except ValueError:  # malformed or repeated: the counts still apply
        declared = None
    if declared is not None and declared > max_bytes:
        raise ResponseTooLarge(url, max_bytes, setting)
    codings = [v.strip().lower() for v in (content_encoding or "").split(",")]
    codings = [v for v in codings if v not in ("", "identity")]
    if unknown := [v for v in codings if v not in _CODINGS]:
        raise UndecodableBody(f"unsupported Content-Encoding {', '.join(unknown)}: {url}")
    body = _bounded(raw, max_bytes, url, setting)  # as received
    for _ in codings:
        body = _inflate(body)
    try:
        return b"".join(_bounded(body, max_bytes, url, setting))  # as decoded
    except zlib.error as exc:
        raise UndecodableBody(f"corrupt {content_encoding} body ({exc}): {url}") from exc


def get_text(
    client: httpx.Client,
    url: str,
    *,
    max_bytes: int,
    setting: str,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> str:
    """GET `url` and return its body (`read_body`) as text, as httpx's `Response.text` would (the
    answer's charset, else UTF-8, undecodable bytes replaced). Raises httpx.HTTPError
    (connection, timeout, non-2xx status), ResponseTooLarge or UndecodableBody; leaving early
    closes the connection."""
    sent = {**(headers or {}), "Accept-Encoding": ACCEPT_ENCODING}
    with client.stream("GET", url, params=params, headers=sent) as r:
        r.raise_for_status()
        body = read_body(
            r.iter_raw(),
            r.headers.get("content-encoding"),
            r.headers.get("content-length"),
            max_bytes=max_bytes,
            url=str(r.url),
            setting=setting,
        )
        return body.decode(r.encoding or "utf-8", errors="replace")


def capped_session(max_bytes: int, setting: str) -> requests.Session:
    """A requests Session whose every answer (a redirect's too) is read with `read_body` as it
    arrives: a response hook, which runs before requests would read the body itself."""
    session = requests.Session()
    session.headers["Accept-Encoding"] = ACCEPT_ENCODING

    def cap(r: requests.Response, *args: Any, **kwargs: Any) -> None:
        try:
            body = read_body(
                r.raw.stream(_CHUNK, decode_content=False),
                r.headers.get("Content-Encoding"),
                r.headers.get("Content-Length"),
                max_bytes=max_bytes,
                url=r.url,
                setting=setting,
            )
        except Exception:
            r.close()  # the rest of the stream stays unread: drop the connection
            raise
        _keep_body(r, body)

    session.hooks["response"].append(cap)
    return session


def _keep_body(r: requests.Response, body: bytes) -> None:
    """Give `r` the body read from its raw stream. requests has no public setter: `_content` is
    where `Response.content` (and `.text`, `.json()`) keeps the body it read, and
    `_content_consumed` tells `iter_content` to serve it, as both have since requests 1.0."""
    r._content = body
    r._content_consumed = True
