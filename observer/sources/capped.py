"""Size caps and deadlines on the HTTP answers the metric sources read (docs/sources.md, "Answer
size caps", "Answer deadlines").

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

Time is bounded too: one answer (headers and body) must be complete within `max_seconds` (the
reader's `timeout_seconds`), else `AnswerTooSlow`, a ValueError as well. A per-read socket
timeout alone lets an answer that trickles in (a byte every few seconds, under the cap) take any
time. `capped_client` gives every socket operation of its connections at most the time left to
the answer `get_text` reads (`_DeadlineBackend`, a thread's deadline); `capped_session` shuts the
answer's connection down when its time is up (`_Watch`), which ends a read in progress at once.

Pure core: `read_body` over any chunks. Edges: `get_text` (an httpx GET: direct scrape,
Kubernetes discovery, the autoscaler's EPP counters; its client from `capped_client`) and
`capped_session` (a requests Session, for PrometheusConnect).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import httpcore
import httpx
import requests
import urllib3
from requests.adapters import BaseAdapter, HTTPAdapter

__all__ = [
    "ACCEPT_ENCODING",
    "DEFAULT_MAX_API_BYTES",
    "DEFAULT_MAX_PAGE_BYTES",
    "AnswerTooSlow",
    "ResponseTooLarge",
    "UndecodableBody",
    "capped_client",
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


class AnswerTooSlow(ValueError):
    """An answer (headers and body) not complete within its time budget; names the setting."""

    def __init__(self, url: str, max_seconds: float, setting: str) -> None:
        self.url = url.split("?", 1)[0]
        self.max_seconds = max_seconds
        self.setting = setting
        super().__init__(
            f"answer not complete within {max_seconds:g} s, the budget {setting} (raise it if such "
            f"answers are expected): {self.url}"
        )


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


# the deadline (time.monotonic()) of the answer this thread reads with `get_text`, if any
_answer = threading.local()


def _left(timeout: float | None, expired: type[httpcore.TimeoutException]) -> float | None:
    """A socket operation's timeout: `timeout`, at most the time left to this thread's answer;
    `expired` (mapped by httpx to its own timeout error) when none is left."""
    deadline: float | None = getattr(_answer, "deadline", None)
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise expired("the answer's deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read, write and TLS handshake ends by the answer's deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        left = _left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, left))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's network backend (`inner`), its connections bounded by the answer's deadline."""

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        left = _left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_tcp(host, port, left, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        left = _left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_unix_socket(path, left, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def capped_client(
    timeout_seconds: float, *, verify: bool | str = True, headers: Mapping[str, str] | None = None
) -> httpx.Client:
    """An httpx Client for `get_text`: `timeout_seconds` for each connect, read and write, and
    each of them ends by the deadline of the answer `get_text` reads. httpx takes no network
    backend: the one of its transport's connection pool (`_pool._network_backend`, private to
    httpx and httpcore at the versions of constraints.txt; the deadline tests fail if it moves)
    is wrapped in `_DeadlineBackend`. A proxy from the environment (`HTTP_PROXY`) has a transport
    of its own: through it, each operation is bounded, not the answer."""
    transport = httpx.HTTPTransport(verify=verify)
    pool = transport._pool
    pool._network_backend = _DeadlineBackend(pool._network_backend)
    return httpx.Client(timeout=timeout_seconds, headers=headers, transport=transport)


def get_text(
    client: httpx.Client,
    url: str,
    *,
    max_bytes: int,
    setting: str,
    max_seconds: float,
    seconds_setting: str,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> str:
    """GET `url` and return its body (`read_body`) as text, as httpx's `Response.text` would (the
    answer's charset, else UTF-8, undecodable bytes replaced). Raises httpx.HTTPError
    (connection, timeout, non-2xx status), ResponseTooLarge, UndecodableBody, or AnswerTooSlow
    when the answer is not complete `max_seconds` after the call (a client from `capped_client`:
    another one bounds each socket operation only); leaving early closes the connection."""
    sent = {**(headers or {}), "Accept-Encoding": ACCEPT_ENCODING}
    deadline = time.monotonic() + max_seconds
    outer = getattr(_answer, "deadline", None)
    _answer.deadline = deadline
    try:
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
    except httpx.TimeoutException as exc:
        if time.monotonic() >= deadline:
            raise AnswerTooSlow(url, max_seconds, seconds_setting) from exc
        raise
    finally:
        _answer.deadline = outer


class _Watch:
    """The deadline of the answer a capped session reads in this thread: armed as each attempt is
    sent (urllib3 may retry), on the connection it is sent on, and disarmed once its body is read.
    When the time is up the connection's socket is shut down, which ends a read in progress (by
    the session's thread) at once; `expired` tells that this is why it failed."""

    def __init__(self, max_seconds: float) -> None:
        self.max_seconds = max_seconds
        self.expired = False
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._conn: Any = None
        self._sock: Any = None

    def arm(self, conn: Any) -> None:
        with self._lock:
            self._cancel()
            self.expired = False
            self._conn, self._sock = conn, None
            timer = threading.Timer(self.max_seconds, self._expire)
            timer.daemon = True
            self._timer = timer
            timer.start()

    def sent(self, conn: Any) -> None:
        """The request is sent on `conn`: keep its socket, which http.client drops from `conn` when
        the answer ends the connection (`Connection: close`) while its body is still to read."""
        with self._lock:
            if conn is self._conn:
                self._sock = conn.sock

    def disarm(self) -> None:
        with self._lock:
            self._cancel()

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        with self._lock:
            if threading.current_thread() is not self._timer:
                return  # disarmed or re-armed meanwhile
            self.expired = True
            sock = self._sock if self._sock is not None else getattr(self._conn, "sock", None)
        if sock is not None:
            # the plain socket's shutdown: an SSLSocket's own would drop its TLS state from this thread
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


_watch = threading.local()  # the `_Watch` of the answer this thread's capped session reads


class _Watched:
    """Mixed into urllib3's connections: each request arms this thread's `_Watch` on the
    connection it is sent on."""

    def request(self, *args: Any, **kwargs: Any) -> None:
        w: _Watch | None = getattr(_watch, "current", None)
        if w is not None:
            w.arm(self)
        super().request(*args, **kwargs)  # type: ignore[misc]
        if w is not None:
            w.sent(self)


class _WatchedHTTPConnection(_Watched, urllib3.connection.HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, urllib3.connection.HTTPSConnection):
    pass


class _WatchedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS: dict[str, type[urllib3.HTTPConnectionPool]] = {
    "http": _WatchedHTTPPool,
    "https": _WatchedHTTPSPool,
}


class _CappedSession(requests.Session):
    """A Session whose answers have a deadline each (`_Watch`): every HTTPAdapter mounted on it
    (PrometheusConnect mounts its own, with its retries) sends on watched connections. A proxy
    (`HTTP_PROXY`) has a pool manager of its own: through it, each socket operation is bounded,
    not the answer."""

    def __init__(self, max_seconds: float, seconds_setting: str) -> None:
        self.max_seconds = max_seconds
        self.seconds_setting = seconds_setting
        super().__init__()

    def mount(self, prefix: str, adapter: BaseAdapter) -> None:
        if isinstance(adapter, HTTPAdapter):
            adapter.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS
        super().mount(prefix, adapter)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        outer = getattr(_watch, "current", None)  # a redirect is sent from within `send`
        w = _watch.current = _Watch(self.max_seconds)
        try:
            r = super().send(request, **kwargs)
        except Exception as exc:
            if w.expired:
                raise AnswerTooSlow(request.url or "", self.max_seconds, self.seconds_setting) from exc
            raise
        finally:
            w.disarm()
            _watch.current = outer
        if w.expired:  # cut while its headers came: what was read is not the answer
            r.close()
            raise AnswerTooSlow(request.url or "", self.max_seconds, self.seconds_setting)
        return r


def capped_session(
    max_bytes: int, setting: str, max_seconds: float, seconds_setting: str
) -> requests.Session:
    """A requests Session whose every answer (a redirect's too) is read with `read_body` as it
    arrives: a response hook, which runs before requests would read the body itself. Each answer
    (each attempt of urllib3's retries) must be complete within `max_seconds` of being sent, else
    the request raises AnswerTooSlow (`_CappedSession`)."""
    session = _CappedSession(max_seconds, seconds_setting)
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
        except urllib3.exceptions.HTTPError as exc:
            # a body cut short, reset or timed out: requests' own error, as its `iter_content`
            # raises it (a raw urllib3 error escaped the callers, who catch requests' family)
            r.close()
            raise _as_requests_error(exc, r) from exc
        except Exception:
            r.close()  # the rest of the stream stays unread: drop the connection
            raise
        finally:
            if (w := getattr(_watch, "current", None)) is not None:
                w.disarm()  # this answer is read: its connection may serve the next one
        _keep_body(r, body)

    session.hooks["response"].append(cap)
    return session


def _as_requests_error(exc: urllib3.exceptions.HTTPError, r: requests.Response) -> requests.RequestException:
    """The requests exception `Response.iter_content` raises for this urllib3 error."""
    if isinstance(exc, urllib3.exceptions.ProtocolError):
        return requests.exceptions.ChunkedEncodingError(exc, response=r)
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
        return requests.exceptions.ConnectionError(exc, response=r)
    if isinstance(exc, urllib3.exceptions.SSLError):
        return requests.exceptions.SSLError(exc, response=r)
    return requests.exceptions.RequestException(exc, response=r)


def _keep_body(r: requests.Response, body: bytes) -> None:
    """Give `r` the body read from its raw stream. requests has no public setter: `_content` is
    where `Response.content` (and `.text`, `.json()`) keeps the body it read, and
    `_content_consumed` tells `iter_content` to serve it, as both have since requests 1.0."""
    r._content = body
    r._content_consumed = True
