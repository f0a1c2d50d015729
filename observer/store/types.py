"""Value types and pure helpers shared by the SQL store and the in-memory store."""

from __future__ import annotations

import math
from dataclasses import dataclass

from observer.model import RequestRecord, TierTokens

MINUTE = 60.0
DEFAULT_CHUNK = 5000  # rows per chunk for streamed reads and retention deletes


class StoreRejected(ValueError):
    """The database refused a batch's data (a value it cannot hold: a string with NUL, a lone
    surrogate, a value too long for its column...). Permanent: the same batch would be refused
    again, unlike an unavailable database."""


def minute_floor(t: float) -> float:
    """Start of the minute holding epoch time `t`."""
    return math.floor(t / MINUTE) * MINUTE


@dataclass(frozen=True, slots=True)
class RollupRow:
    """Counts and sums of the records of one (minute, tenant, model) (table rollups_minute)."""

    minute_start: float
    tenant: str
    model: str
    requests: int
    prompt_tokens: int
    output_tokens: int
    cached: TierTokens
    errors: int
    sketches: bytes | None = None

    def __add__(self, other: RollupRow) -> RollupRow:
        return RollupRow(
            self.minute_start,
            self.tenant,
            self.model,
            self.requests + other.requests,
            self.prompt_tokens + other.prompt_tokens,
            self.output_tokens + other.output_tokens,
            self.cached + other.cached,
            self.errors + other.errors,
            self.sketches,
        )

    @classmethod
    def of(cls, record: RequestRecord) -> RollupRow:
        """The rollup contribution of one record."""
        return cls(
            minute_floor(record.end_time),
            record.tenant,
            record.model,
            1,
            record.prompt_tokens,
            record.output_tokens,
            record.cached,
            1 if record.error else 0,
        )


@dataclass(frozen=True, slots=True)
class RollupWatermark:
    """How far rollups went: every record that ended before `time` and has an insertion sequence
    number <= `seq` is in rollups_minute; records that arrive later with an older end time (a
    retried batch, a late P/D flush) have seq > `seq` and are merged into their minute next time."""

    time: float = 0.0
    seq: int = 0
