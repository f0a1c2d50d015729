"""Answers past a reader's size cap (observer/sources/capped.py), the same for every HTTP reader:
its test serves `Oversize.reply(case)` and checks the reader's failure report with `refused`.

Each answer is otherwise one the reader accepts (its well-formed `valid` answer, padded with
bytes it ignores), so a reader without the cap would read it fine and its test would fail.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.support.httpstub import Endless, Reply

# past the cap: a declared Content-Length, a chunked body without end, a small gzip body that
# inflates past it, and one gzipped twice (`Content-Encoding: gzip, gzip`)
TOO_LARGE = ("declared", "endless", "gzip", "gzip-stacked")
AT_CAP = "at-cap"  # exactly `cap` bytes: read as usual
CASES = (*TOO_LARGE, AT_CAP)
# Endless' safety stop: far past what a reader that stops reads plus the socket buffers hold
# (here up to 32 MiB received, 4 MiB sent), small enough for a reader without the cap
_ENDLESS_LIMIT = 128 * 2**20


def exposition_pad(n: int) -> bytes:
    """`n` bytes of exposition text a parser ignores (one comment line)."""
    return b"#" + b" " * (n - 2) + b"\n"


def json_pad(n: int) -> bytes:
    """`n` bytes of JSON whitespace (allowed after the value)."""
    return b" " * n


@dataclass
class Oversize:
    cap: int
    valid: bytes  # a well-formed answer the reader accepts, well under `cap`
    pad: Callable[[int], bytes]  # n bytes the reader ignores after `valid`
    endless: Endless = field(init=False)

    def __post_init__(self) -> None:
        assert len(self.valid) < self.cap // 2
        self.endless = Endless(self.pad(16 * 1024), first=self.valid, limit=_ENDLESS_LIMIT)

    def _padded(self, size: int) -> bytes:
        return self.valid + self.pad(size - len(self.valid))

    def reply(self, case: str) -> Reply:
        if case == AT_CAP:
            return Reply(200, self._padded(self.cap))
        if case == "declared":
            return Reply(200, self._padded(self.cap + 1))
        if case == "endless":
            return Reply(200, self.endless)
        if case == "gzip":
            body = gzip.compress(self._padded(64 * self.cap))
            assert len(body) < self.cap  # small on the wire: only the decoded count catches it
            return Reply(200, body, {"Content-Encoding": "gzip"})
        if case == "gzip-stacked":
            body = gzip.compress(gzip.compress(self._padded(256 * self.cap)))
            assert len(body) < self.cap
            return Reply(200, body, {"Content-Encoding": "gzip, gzip"})
        raise ValueError(case)

    def refused(self, case: str, error: str | None, setting: str, elapsed: float) -> None:
        """The reader's failure report names the cap's setting (the failure is the cap, not a
        parse error); an endless body was left after a few buffers, promptly."""
        assert case in TOO_LARGE
        assert error is not None
        assert setting in error, error
        assert elapsed < 10.0, elapsed
        if case == "endless":
            assert 0 < self.endless.sent < _ENDLESS_LIMIT // 2, self.endless.sent  # stopped early
