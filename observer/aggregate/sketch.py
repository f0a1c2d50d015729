"""A mergeable relative-error quantile sketch (DDSketch family), written for pd-observer.

Design (docs/signals.md, "Windows, quantiles and SLOs"):

* Relative accuracy ``a`` (settings ``aggregation.sketch_relative_accuracy``, default 0.005) and
  ``gamma = (1 + a) / (1 - a)``. A positive value ``v`` goes to bin ``k = ceil(log(v) / log(gamma))``,
  which covers ``(gamma**(k-1), gamma**k]``. The bin's representative value is
  ``2 * gamma**k / (gamma + 1)``; every value of the bin is within relative error ``a`` of it.
* Values ``<= MIN_INDEXABLE`` (1e-9 s) and negative values (clock skew between pods can make a
  computed gap slightly negative) are counted in a zero bin whose representative is 0.0; negative
  values are clamped to 0 for ``sum``/``min``/``max`` as well. NaN and infinities are rejected.
* Bounded bins: when more than ``max_bins`` bins are in use the lowest bins are collapsed into
  the lowest surviving bin (its index becomes a floor; later values below it land there too). High
  quantiles stay accurate; quantiles that fall into the collapsed bin lose their guarantee. With the
  defaults (a = 0.005, 2048 bins) that only happens when one sketch spans more than ~9 decades.
* Rank convention: the q-quantile of n values is the value of rank ``r = ceil(q * n)`` (1-based,
  clamped to [1, n]) in sorted order; ``q * n`` is rounded up with a 1e-9 tolerance so that float
  error in the product (0.07 * 100 = 7.000000000000001) does not skip a rank. See
  :func:`quantile_rank`. The estimate is the representative of the bin holding rank r, clamped to
  [min, max]; ranks 1 and n return the exact min and max. The estimate is therefore within
  relative error ``a`` of the exact value (within 1 % with the default), for values above
  ``MIN_INDEXABLE`` and outside a collapsed bin.

Pure: no I/O, no clock. Not thread-safe (one aggregator owns its sketches).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable
from typing import Any

MIN_INDEXABLE = 1e-9
_FORMAT_VERSION = 1
_HEADER = struct.Struct("<BdiqdddqiI")  # version, alpha, max_bins, count, sum, min, max, zero, floor, nbins
_BIN = struct.Struct("<iq")
_NO_FLOOR = -(2**31)


def quantile_rank(q: float, n: int) -> int:
    """1-based rank of the q-quantile among n sorted values: ``ceil(q*n)`` clamped to [1, n]."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within [0, 1], got {q}")
    if n <= 0:
        raise ValueError("rank of an empty set")
    r = math.ceil(q * n - 1e-9)
    return 1 if r < 1 else min(r, n)


class QuantileSketch:
    """Relative-error quantile sketch: ``add``, ``merge``, ``quantile``, serialisation."""

    __slots__ = (
        "_alpha",
        "_bins",
        "_count",
        "_floor",
        "_gamma",
        "_inv_log_gamma",
        "_max",
        "_max_bins",
        "_min",
        "_sum",
        "_zero",
    )

    def __init__(self, relative_accuracy: float = 0.005, max_bins: int = 2048) -> None:
        if not 0.0 < relative_accuracy < 1.0:
            raise ValueError("relative_accuracy must be within (0, 1)")
        if max_bins < 2:
            raise ValueError("max_bins must be >= 2")
        self._alpha = relative_accuracy
        self._gamma = (1.0 + relative_accuracy) / (1.0 - relative_accuracy)
        self._inv_log_gamma = 1.0 / math.log(self._gamma)
        self._max_bins = max_bins
        self._bins: dict[int, int] = {}
        self._zero = 0
        self._count = 0
        self._sum = 0.0
        self._min = math.inf
        self._max = -math.inf
        self._floor = _NO_FLOOR  # bins below are folded into this index after a collapse

    # -- ingest ---------------------------------------------------------------------------------
    def add(self, value: float) -> None:
        """Count one value (seconds). Hot path: keep lean."""
        if value > MIN_INDEXABLE:
            if value == math.inf:
                raise ValueError("cannot add infinity to a sketch")
            k = math.ceil(math.log(value) * self._inv_log_gamma)
            if k < self._floor:  # noqa: PLR1730 - hot path: a compare beats a max() call
                k = self._floor
            bins = self._bins
            n = bins.get(k)
            if n is None:
                bins[k] = 1
                if len(bins) > self._max_bins:
                    self._collapse()
            else:
                bins[k] = n + 1
        elif not math.isnan(value):
            if value < 0.0:
                if value == -math.inf:
                    raise ValueError("cannot add -infinity to a sketch")
                value = 0.0
            self._zero += 1
        else:
            raise ValueError("cannot add NaN to a sketch")
        self._count += 1
        self._sum += value
        if value < self._min:  # noqa: PLR1730 - hot path
            self._min = value
        if value > self._max:  # noqa: PLR1730 - hot path
            self._max = value

    def add_values(self, values: Iterable[float | None]) -> None:
        """`add` for each value in order, with the sketch's state in locals: the aggregator's batch
        path (one call per sketch and batch). Same result as ``add`` one by one, except that None
        (unknown latency), NaN and infinities are skipped instead of raising."""
        bins = self._bins
        get = bins.get
        inv_log_gamma = self._inv_log_gamma
        floor = self._floor
        max_bins = self._max_bins
        count = self._count
        total = self._sum
        lo = self._min
        hi = self._max
        zero = self._zero
        log = math.log
        ceil = math.ceil
        inf = math.inf
        for value in values:
            if value is None:
                continue
            v = value
            if MIN_INDEXABLE < v < inf:
                k = ceil(log(v) * inv_log_gamma)
                if k < floor:  # noqa: PLR1730 - hot path
                    k = floor
                n = get(k, 0)
                bins[k] = n + 1
                if not n and len(bins) > max_bins:
                    self._collapse()
                    floor = self._floor
            elif v <= MIN_INDEXABLE:  # not NaN, not +infinity
                if v < 0.0:
                    if v == -inf:
                        continue
                    v = 0.0
                zero += 1
            else:
                continue
            count += 1
            total += v
            if v < lo:  # noqa: PLR1730 - hot path
                lo = v
            if v > hi:  # noqa: PLR1730 - hot path
                hi = v
        self._count = count
        self._sum = total
        self._min = lo
        self._max = hi
        self._zero = zero

    def _collapse(self) -> None:
        bins = self._bins
        excess = len(bins) - self._max_bins
        keys = sorted(bins)
        target = keys[excess]
        moved = 0
        for k in keys[:excess]:
            moved += bins.pop(k)
        bins[target] += moved
        self._floor = target

    def merge(self, other: QuantileSketch) -> None:
        """Add every value counted by `other` (same relative accuracy required)."""
        if other._gamma != self._gamma:
            raise ValueError("cannot merge sketches of different relative accuracy")
        if other._count == 0:
            return
        if other._floor > self._floor:
            self._floor = other._floor
            self._apply_floor()
        bins = self._bins
        floor = self._floor
        theirs = other._bins
        if not bins and floor == _NO_FLOOR:
            bins.update(theirs)
        elif floor == _NO_FLOOR or (theirs and min(theirs) >= floor):
            get = bins.get
            for k, n in theirs.items():
                bins[k] = get(k, 0) + n
        else:
            for k, n in theirs.items():
                at = max(k, floor)
                bins[at] = bins.get(at, 0) + n
        if len(bins) > self._max_bins:
            self._collapse()
        self._zero += other._zero
        self._count += other._count
        self._sum += other._sum
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)

    def _apply_floor(self) -> None:
        floor = self._floor
        low = [k for k in self._bins if k < floor]
        if low:
            moved = sum(self._bins.pop(k) for k in low)
            self._bins[floor] = self._bins.get(floor, 0) + moved

    def copy(self) -> QuantileSketch:
        out = QuantileSketch.__new__(QuantileSketch)
        out._alpha = self._alpha
        out._gamma = self._gamma
        out._inv_log_gamma = self._inv_log_gamma
        out._max_bins = self._max_bins
        out._bins = dict(self._bins)
        out._zero = self._zero
        out._count = self._count
        out._sum = self._sum
        out._min = self._min
        out._max = self._max
        out._floor = self._floor
        return out

    # -- queries --------------------------------------------------------------------------------
    @property
    def relative_accuracy(self) -> float:
        return self._alpha

    @property
    def count(self) -> int:
        return self._count

    @property
    def sum(self) -> float:
        return self._sum

    @property
    def min(self) -> float | None:
        return self._min if self._count else None

    @property
    def max(self) -> float | None:
        return self._max if self._count else None

    @property
    def bin_count(self) -> int:
        """Bins in use (excluding the zero bin)."""
        return len(self._bins)

    def quantile(self, q: float) -> float | None:
        """Estimate of the value of rank ceil(q*n); None when empty. See the module docstring."""
        n = self._count
        if n == 0:
            if not 0.0 <= q <= 1.0:
                raise ValueError(f"quantile must be within [0, 1], got {q}")
            return None
        r = quantile_rank(q, n)
        if r == 1:
            return self._min
        if r == n:
            return self._max
        seen = self._zero
        if seen >= r:
            return max(0.0, self._min)
        for k in sorted(self._bins):
            seen += self._bins[k]
            if seen >= r:
                est = 2.0 * self._gamma**k / (self._gamma + 1.0)
                return min(max(est, self._min), self._max)
        return self._max  # unreachable when counts are consistent

    def quantiles(self, qs: tuple[float, ...]) -> tuple[float | None, ...]:
        """Several quantiles with one sort of the bins."""
        n = self._count
        if n == 0:
            return tuple(None for _ in qs)
        keys = sorted(self._bins)
        out: list[float | None] = []
        for q in qs:
            r = quantile_rank(q, n)
            if r == 1:
                out.append(self._min)
                continue
            if r == n:
                out.append(self._max)
                continue
            seen = self._zero
            if seen >= r:
                out.append(max(0.0, self._min))
                continue
            val = self._max
            for k in keys:
                seen += self._bins[k]
                if seen >= r:
                    val = min(max(2.0 * self._gamma**k / (self._gamma + 1.0), self._min), self._max)
                    break
            out.append(val)
        return tuple(out)

    # -- serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Compact JSON-able form (for the store's per-minute rollups)."""
        keys = sorted(self._bins)
        return {
            "v": _FORMAT_VERSION,
            "a": self._alpha,
            "mb": self._max_bins,
            "n": self._count,
            "s": self._sum,
            "min": self._min if self._count else None,
            "max": self._max if self._count else None,
            "z": self._zero,
            "f": None if self._floor == _NO_FLOOR else self._floor,
            "k": keys,
            "c": [self._bins[k] for k in keys],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantileSketch:
        if data.get("v") != _FORMAT_VERSION:
            raise ValueError(f"unsupported sketch format version {data.get('v')!r}")
        out = cls(float(data["a"]), int(data["mb"]))
        keys, counts = data["k"], data["c"]
        if len(keys) != len(counts):
            raise ValueError("sketch keys and counts differ in length")
        out._bins = {int(k): int(n) for k, n in zip(keys, counts, strict=True)}
        out._zero = int(data["z"])
        out._count = int(data["n"])
        out._sum = float(data["s"])
        out._min = math.inf if data["min"] is None else float(data["min"])
        out._max = -math.inf if data["max"] is None else float(data["max"])
        out._floor = _NO_FLOOR if data["f"] is None else int(data["f"])
        if out._zero + sum(out._bins.values()) != out._count:
            raise ValueError("sketch counts do not add up")
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> QuantileSketch:
        return cls.from_dict(json.loads(text))

    def to_bytes(self) -> bytes:
        """Binary form: fixed header + (int32 index, int64 count) per bin, little-endian."""
        keys = sorted(self._bins)
        head = _HEADER.pack(
            _FORMAT_VERSION,
            self._alpha,
            self._max_bins,
            self._count,
            self._sum,
            self._min,
            self._max,
            self._zero,
            self._floor,
            len(keys),
        )
        return head + b"".join(_BIN.pack(k, self._bins[k]) for k in keys)

    @classmethod
    def from_bytes(cls, data: bytes) -> QuantileSketch:
        if len(data) < _HEADER.size:
            raise ValueError("truncated sketch")
        version, alpha, max_bins, count, total, lo, hi, zero, floor, nbins = _HEADER.unpack_from(data)
        if version != _FORMAT_VERSION:
            raise ValueError(f"unsupported sketch format version {version}")
        if len(data) != _HEADER.size + nbins * _BIN.size:
            raise ValueError("sketch length does not match its bin count")
        out = cls(alpha, max_bins)
        out._bins = dict(_BIN.iter_unpack(data[_HEADER.size :]))
        out._count, out._sum, out._min, out._max, out._zero, out._floor = count, total, lo, hi, zero, floor
        if out._zero + sum(out._bins.values()) != out._count:
            raise ValueError("sketch counts do not add up")
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QuantileSketch):
            return NotImplemented
        return (
            self._gamma == other._gamma
            and self._bins == other._bins
            and self._zero == other._zero
            and self._count == other._count
            and self._floor == other._floor
            and (self._count == 0 or (self._min == other._min and self._max == other._max))
            and math.isclose(self._sum, other._sum, rel_tol=1e-9, abs_tol=1e-12)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"QuantileSketch(a={self._alpha}, n={self._count}, bins={len(self._bins)})"
