"""Hostile answers for each HTTP reader's test, too large or too slow: one test per reader,
parametrized over `CASES`, serves `Hostile.reply(case)` with the reader configured by
`Hostile.limits`, reads as usual the case `Hostile.fine`, and checks any other case's failure
report with `Hostile.refused`.

- size: past the reader's `max_body_bytes` (`oversize.Oversize`: declared, endless, gzip,
  stacked gzip; `at-cap` is read);
- time: past its `timeout_seconds`, the whole answer's deadline (`slow.Slow`: slow headers, slow
  body; `on-time` is read).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pytest

from tests.support import oversize, slow
from tests.support.httpstub import Reply

SIZE, TIME = "size", "time"
CASES = [pytest.param(SIZE, case, id=f"size-{case}") for case in oversize.CASES] + [
    pytest.param(TIME, case, id=f"time-{case}") for case in slow.CASES
]


@dataclass(frozen=True)
class Hostile:
    kind: str
    answer: oversize.Oversize | slow.Slow
    limits: Mapping[str, float]  # the reader's settings for the test
    fine: str  # the case the reader reads as usual

    def reply(self, case: str) -> Reply:
        return self.answer.reply(case)

    def refused(
        self, case: str, error: str | None, elapsed: float, *, max_body_setting: str, timeout_setting: str
    ) -> None:
        """The reader's failure names the limit that was hit (`max_body_setting` or
        `timeout_setting`), in time (see `Oversize.refused`, `Slow.refused`)."""
        setting = max_body_setting if self.kind == SIZE else timeout_setting
        self.answer.refused(case, error, setting, elapsed)


def hostile(kind: str, valid: bytes, pad: Callable[[int], bytes], cap: int = 64 * 1024) -> Hostile:
    """The hostile answer of `kind` around `valid` (an answer the reader accepts), padded with
    bytes it ignores (`pad(n)`: `oversize.json_pad`, `oversize.exposition_pad`)."""
    if kind == SIZE:
        big = oversize.Oversize(cap, valid, pad)
        return Hostile(kind, big, {"max_body_bytes": big.cap}, oversize.AT_CAP)
    return Hostile(kind, slow.Slow(valid, pad(2)), {"timeout_seconds": slow.BUDGET}, slow.ON_TIME)
