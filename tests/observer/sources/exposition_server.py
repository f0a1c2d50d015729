"""A tiny stdlib HTTP server that serves exposition text per path (scrape targets for tests)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.httpstub import Seen, serve_http

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
    """Yields `127.0.0.1:PORT`: a known path answers its page, an unknown one 404, None 500."""

    def answer(req: Seen) -> tuple[int, bytes]:
        with pages.lock:
            known = req.path in pages.bodies
            body = pages.bodies.get(req.path)
        if not known or body is None:
            return (404 if not known else 500), b""
        return 200, body.encode()

    with serve_http(answer, content_type="text/plain; version=0.0.4") as (url, _):
        yield url.removeprefix("http://")
