"""A loopback HTTP server for tests: every GET is answered by a function of the request."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Seen:
    """One request as the server saw it."""

    path: str  # with the query string
    auth: str  # the Authorization header, "" when absent


@contextmanager
def serve_http(
    answer: Callable[[Seen], tuple[int, bytes]], content_type: str = "application/json"
) -> Iterator[tuple[str, list[Seen]]]:
    """Yields the base URL (`http://127.0.0.1:PORT`) and the requests seen so far; each GET is
    answered `answer(request)`: (status, body), with `content_type`."""
    seen: list[Seen] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            req = Seen(self.path, self.headers.get("Authorization", ""))
            seen.append(req)
            status, body = answer(req)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
