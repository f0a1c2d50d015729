"""Answers that trickle in past a reader's deadline (observer/sources/capped.py, "Answer
deadlines"), the same for every HTTP reader: its test serves `Slow.reply(case)` with the
reader's `timeout_seconds` at `BUDGET` and checks the reader's failure report with `refused`.

Each piece comes well within the per-read timeout (`BUDGET` too) and the answer is otherwise one
the reader accepts (its well-formed `valid` answer, then bytes it ignores), so a reader bounded
by the per-read timeout only waits for the whole `LASTING` seconds and reads it fine: its test
fails.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.support.httpstub import Reply, Trickle

BUDGET = 1.0  # the reader's timeout_seconds in these tests
LASTING = 20.0  # how long a slow answer keeps coming (then it ends, well-formed)
INTERVAL = 0.2  # between two of its pieces: far under the per-read timeout
SLOW = ("headers", "body")  # a header line, or a body chunk, every INTERVAL
ON_TIME = "on-time"  # the same answer at once: read as usual
CASES = (*SLOW, ON_TIME)


@dataclass
class Slow:
    valid: bytes  # a well-formed answer the reader accepts
    pad: bytes  # a piece of body the reader ignores after `valid`

    def reply(self, case: str) -> Reply:
        if case == ON_TIME:
            return Reply(200, self.valid)
        if case == "headers":
            return Reply(
                200, self.valid, slow_headers=Trickle(("X-Slow", "1"), interval=INTERVAL, lasting=LASTING)
            )
        if case == "body":
            return Reply(200, Trickle(self.pad, first=(self.valid,), interval=INTERVAL, lasting=LASTING))
        raise ValueError(case)

    @staticmethod
    def refused(case: str, error: str | None, setting: str, elapsed: float) -> None:
        """The reader's failure report names the deadline's setting (the failure is the deadline,
        not a per-read timeout or a parse error), within the budget and some slack."""
        assert case in SLOW
        assert error is not None
        assert f"not complete within {BUDGET:g} s, the budget {setting}" in error, error
        assert BUDGET - 0.1 <= elapsed < BUDGET + 2.0, elapsed
