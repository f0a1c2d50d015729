"""Prefix reuse of a Mooncake trace against the prefill pool's cache: from when would a pool of n
prefill pods need more HBM + DRAM than it has?

Each time a prefix block is used again, its LRU stack distance is the number of distinct blocks
used since its previous use. A pool of n prefill pods, with prefix-aware routing spreading the
blocks over them perfectly, keeps that reuse in HBM or DRAM only while the distance is within
n × (HBM + DRAM blocks per pod); beyond it the hit comes from disk or is a miss. Real routing
partitions worse than that, so the times printed are the *earliest* at which any predictor that
learns from past reuse (every request's prefix hashes) could see that n pods are too few.

    python -m benchmarks.control.reuse synthetic
    python -m benchmarks.control.reuse conversation --pods 4,6,8,10
    python -m benchmarks.control.reuse my_trace.jsonl --blocks 4800 --minutes 20

Columns: pods n; their HBM + DRAM blocks; the first reuse beyond them (s from the start); then
the number of such reuses per minute. The per-pod capacity defaults to the twin's profile
(`simulator/profiles/default.yaml`: hbm_blocks + dram_blocks).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from simulator import mooncake
from simulator.profile import load_profile


@dataclass(frozen=True, slots=True)
class Reuse:
    at: float  # arrival of the request that uses the block again, s from the trace's start
    distance: int  # distinct blocks used since the block's previous use


class _Fenwick:
    """Prefix sums over use positions: 1 where a block's latest use sits."""

    def __init__(self, size: int) -> None:
        self.tree = [0] * (size + 1)

    def add(self, i: int, v: int) -> None:
        i += 1
        while i < len(self.tree):
            self.tree[i] += v
            i += i & -i

    def upto(self, i: int) -> int:
        """Sum over positions 0..i."""
        i += 1
        s = 0
        while i > 0:
            s += self.tree[i]
            i -= i & -i
        return s


def stack_distances(requests: Iterable[tuple[float, Sequence[int]]]) -> list[Reuse]:
    """One `Reuse` per block used again, in order; `requests` is (arrival, block hashes) in
    arrival order. O(uses · log uses)."""
    reqs = list(requests)
    tree = _Fenwick(sum(len(blocks) for _, blocks in reqs))
    last: dict[int, int] = {}
    out: list[Reuse] = []
    pos = 0
    for at, blocks in reqs:
        for h in blocks:
            prev = last.get(h)
            if prev is not None:
                out.append(Reuse(at, tree.upto(pos - 1) - tree.upto(prev)))
                tree.add(prev, -1)
            tree.add(pos, 1)
            last[h] = pos
            pos += 1
    return out


def beyond(reuses: Sequence[Reuse], capacity: int, minutes: int) -> tuple[float | None, list[int]]:
    """The first reuse with a distance above `capacity` blocks (None: none), and how many there
    are in each of the first `minutes` minutes."""
    per = [0] * minutes
    first: float | None = None
    for r in reuses:
        if r.distance > capacity:
            if first is None:
                first = r.at
            m = int(r.at // 60)
            if m < minutes:
                per[m] += 1
    return first, per


def report(reuses: Sequence[Reuse], pods: Sequence[int], per_pod: int, minutes: int) -> list[str]:
    head = " ".join(f"{m:>5d}" for m in range(minutes))
    lines = [f"{'pods':>4} {'blocks':>7} {'first':>7} | reuses beyond, per minute: {head}"]
    for n in pods:
        first, per = beyond(reuses, n * per_pod, minutes)
        when = "never" if first is None else f"{first:.0f} s"
        lines.append(f"{n:>4} {n * per_pod:>7} {when:>7} | {' ' * 27}{' '.join(f'{x:>5d}' for x in per)}")
    return lines


def _ints(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
    if not out or any(x < 1 for x in out):
        raise argparse.ArgumentTypeError(f"expected numbers ≥ 1, got {text!r}")
    return out


def _positive(text: str) -> int:
    (n,) = _ints(text)
    return n


def main(argv: list[str] | None = None) -> int:
    doc = __doc__ or ""
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.control.reuse",
        description=doc.split("\n\n")[0],
        epilog="\n\n".join(doc.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("trace", help="synthetic | conversation (../shared/data/mooncake) or a .jsonl path")
    ap.add_argument("--pods", type=_ints, default=list(range(1, 11)), help="pool sizes, default 1..10")
    prof = load_profile("default").cache
    ap.add_argument(
        "--blocks",
        type=_positive,
        default=prof.hbm_blocks + prof.dram_blocks,
        help="HBM + DRAM prefix blocks per prefill pod (default: the twin's, %(default)s)",
    )
    ap.add_argument("--minutes", type=_positive, default=18, help="minutes to count (default %(default)s)")
    args = ap.parse_args(argv)
    try:
        specs = [(r.arrival, r.block_hashes) for r in mooncake.replay(args.trace)]
    except (ValueError, FileNotFoundError) as exc:
        ap.error(str(exc))
    reuses = stack_distances(specs)
    print(f"{args.trace}: {len(specs)} requests, {len(reuses)} block reuses", file=sys.stderr)
    for line in report(reuses, args.pods, args.blocks, args.minutes):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
