"""A tiny stdlib HTTP server that serves exposition text per path (scrape targets for tests)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "exposition"


def fixture(name: str) -> str:
    return (FIXTURES / f"{name}.prom").read_text()


class Pages:
    """path -> body; a path mapped to None answers 500 (a failing target)."""

    def __init__(self) -> None:
        self.bodies: dict[str, str | None] = {}
        self.lock = threading.Lock()


@contextmanager
def serve(pages: Pages) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with pages.lock:
                known = self.path in pages.bodies
                body = pages.bodies.get(self.path)
            if not known or body is None:
                self.send_response(404 if not known else 500)
                self.end_headers()
                return
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
