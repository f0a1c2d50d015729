"""A loopback HTTP server for tests: every GET is answered by a function of the request.

An answer is `(status, body)`, or a `Reply` with headers and possibly a streamed body (sent
chunked, without Content-Length: `Endless` is one that does not end, `Trickle` one that comes
slowly) and headers sent one at a time as they come (`Trickle` again).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Seen:
    """One request as the server saw it."""

    path: str  # with the query string
    auth: str  # the Authorization header, "" when absent


@dataclass(frozen=True)
class Reply:
    """An answer with extra headers; a body that is not bytes is sent chunked (HTTP/1.1, one
    chunk per item, no Content-Length) until it ends or the client goes away."""

    status: int
    body: bytes | Iterable[bytes]
    headers: Mapping[str, str] = field(default_factory=dict)
    # more headers after `headers`, each sent (flushed) as the iterable yields it
    slow_headers: Iterable[tuple[str, str]] = ()


class Endless:
    """A body without end for `Reply`: `first`, then `chunk` again and again. A safety stop at
    `limit` bytes keeps a client that reads without bound from eating the test machine's memory:
    `exhausted` tells that the client read that far (it should have stopped long before)."""

    def __init__(self, chunk: bytes, first: bytes = b"", limit: int = 256 * 2**20) -> None:
        self.first, self.chunk, self.limit = first, chunk, limit
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        self.sent = len(self.first)
        yield self.first
        while self.sent < self.limit:
            self.sent += len(self.chunk)
            yield self.chunk

    @property
    def exhausted(self) -> bool:
        return self.sent >= self.limit


class Trickle(Generic[T]):
    """`first`, then `item` every `interval` seconds for `lasting` seconds (a body's chunks, or
    `Reply.slow_headers`): an answer that keeps coming, each piece well within any per-read
    timeout longer than `interval`. `lasting` bounds it: a client that waits for the end takes
    about that long (`sent` counts the items)."""

    def __init__(self, item: T, *, first: tuple[T, ...] = (), interval: float = 0.2, lasting: float = 30.0):
        self.item, self.first, self.interval, self.lasting = item, first, interval, lasting
        self.sent = 0

    def __iter__(self) -> Iterator[T]:
        end = time.monotonic() + self.lasting
        for x in self.first:
            self.sent += 1
            yield x
        while time.monotonic() < end:
            time.sleep(self.interval)
            self.sent += 1
            yield self.item


Answer = tuple[int, bytes] | Reply


@contextmanager
def serve_http(
    answer: Callable[[Seen], Answer], content_type: str = "application/json"
) -> Iterator[tuple[str, list[Seen]]]:
    """Yields the base URL (`http://127.0.0.1:PORT`) and the requests seen so far; each GET is
    answered `answer(request)`: (status, body) or a `Reply`, with `content_type`."""
    seen: list[Seen] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            req = Seen(self.path, self.headers.get("Authorization", ""))
            seen.append(req)
            got = answer(req)
            reply = got if isinstance(got, Reply) else Reply(*got)
            if not isinstance(reply.body, bytes):
                self.protocol_version = "HTTP/1.1"  # chunked needs it; the connection still closes
            self.send_response(reply.status)
            self.send_header("Content-Type", content_type)
            for k, v in reply.headers.items():
                self.send_header(k, v)
            try:
                for k, v in reply.slow_headers:
                    self.send_header(k, v)
                    self.flush_headers()
            except OSError:  # the client gave up and closed the connection
                return
            if isinstance(reply.body, bytes):
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)
                return
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                for chunk in reply.body:
                    if chunk:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.write(b"0\r\n\r\n")
            except OSError:  # the client stopped reading and closed the connection
                return

        def log_message(self, format: str, *args: object) -> None:
            return

    with running(Handler) as url:
        yield url, seen


@contextmanager
def running(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A loopback `ThreadingHTTPServer` of `handler` in a thread; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
