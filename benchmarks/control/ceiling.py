"""The reactive ceiling of a burst row: the best TTFT / ITL attainment a one-shot reaction to
the burst reaches on the twin, with perfect knowledge of its onset, against the hindsight
static split of the control table.

The oracle knows the burst phase's start (the scenario's `Twin.phases`) to the second, so it
needs no detection at all. At `onset + delay` it sets the prefill role to P (the decode role to
what the GPU budget leaves, at most its start size) and, optionally, raises the P/D decider's
`nonCachedTokens` to T, then holds. It starts from the same fleet as every policy, and its pods
pay the same 90 s cold start and its threshold change the same 30 s EPP restart
(`benchmarks.control.harness`). The grid covers P and T; the best cell per delay is printed
(ranked like the static split: the lower of TTFT and ITL attainment first). A negative delay
acts before the burst: it shows what the cold start costs, which no reactive policy can avoid.

    python -m benchmarks.control.ceiling prefill-burst
    python -m benchmarks.control.ceiling story --delays -90,0,15,20
    python -m benchmarks.control.ceiling prefill-burst --prefill 8 --thresholds none,65536
    python -m benchmarks.control.ceiling mooncake-synthetic --phase mooncake-synthetic \
        --delays 15,60,120,240,300 --prefill 7 --decode 1 --thresholds none

The verdict says whether any oracle acting at or after the onset reaches the static split's
attainment (to the table's 0.005). When none does, no reaction of this family (one move, at
the burst's first arrival or later) meets that row of the control table under these cold
starts, whatever its GPU-hours: a measured ceiling for the family, not a proof for every policy.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from autoscaler.ports import AuditEntry
from autoscaler.types import DeciderConfig
from benchmarks.control.harness import GPU_BUDGET, MAX_PER_ROLE, POOL, Meter, RunResult, run
from benchmarks.control.run import EPS_ATT, matched_static, score, span_of
from observer import conventions as c
from simulator.scenarios import SCENARIOS, Twin

DEFAULT_DELAYS = (-90.0, 0.0, 15.0)
DEFAULT_PREFILL = (4, 6, 8, 10)
DEFAULT_THRESHOLDS: tuple[int | None, ...] = (None, 8192, 16384, 32768, 65536, DeciderConfig().max_tokens)
TICK_SECONDS = 1.0  # the oracle acts to the second


@dataclass(frozen=True, slots=True)
class Cell:
    delay: float
    prefill: int
    decode: int
    threshold: int | None  # None: the decider lever is not used
    result: RunResult


@dataclass
class Oracle:
    """The probe that acts once, at `delay` seconds after the start of `phase`."""

    phase: str
    delay: float
    prefill: int
    threshold: int | None
    acted_at: float | None = None
    decode: int | None = None  # what it set the decode role to
    fixed_decode: int | None = None  # set decode to this instead of `decode_for`

    def __call__(self, twin: Twin, now: float, meter: Meter, entry: AuditEntry | None) -> None:
        if self.acted_at is not None:
            return
        onset = next(at for name, at in twin.phases if name == self.phase)
        if now < onset + self.delay:
            return
        start = twin.actuator.get_state().pools[POOL].replicas[c.ROLE_DECODE].desired
        self.decode = self.fixed_decode if self.fixed_decode is not None else decode_for(self.prefill, start)
        twin.actuator.set_replicas(POOL, c.ROLE_PREFILL, self.prefill)
        twin.actuator.set_replicas(POOL, c.ROLE_DECODE, self.decode)
        if self.threshold is not None:
            twin.actuator.set_decider_threshold(POOL, self.threshold)
        self.acted_at = now


def decode_for(prefill: int, start: int, budget: int = GPU_BUDGET) -> int:
    """The decode count beside `prefill`: its start size, cut to what the GPU budget leaves."""
    return max(1, min(start, budget - prefill))


def _rank(r: RunResult) -> tuple[float, float, float]:
    return (*score(r), -r.gpu_hours)  # on a tie, the fewer GPU-hours


def onset_of(scenario: str, phase: str, duration: float | None) -> float:
    """Seconds from the start to `phase` (ValueError when the scenario has no such phase)."""
    phases = SCENARIOS[scenario].phases
    for p in phases:
        if p.name == phase:
            return p.at * span_of(scenario, duration)
    names = ", ".join(p.name for p in phases)
    raise ValueError(f"scenario {scenario!r} has no phase {phase!r} (its phases: {names})")


def ceiling(
    scenario: str,
    *,
    phase: str = "prefill-burst",
    delays: Sequence[float] = DEFAULT_DELAYS,
    prefill: Sequence[int] = DEFAULT_PREFILL,
    thresholds: Sequence[int | None] = DEFAULT_THRESHOLDS,
    duration: float | None = None,
    seed: int = 0,
    decode: int | None = None,
) -> list[Cell]:
    """The best cell of the grid per delay, in the order of `delays`. ValueError, before any run,
    for a phase the scenario does not have or a delay that acts after its end."""
    onset = onset_of(scenario, phase, duration)
    end = span_of(scenario, duration)
    late = [d for d in delays if onset + d >= end]
    if late:
        raise ValueError(f"delays {late} act after the end ({end:g} s; the onset is at {onset:g} s)")
    best: list[Cell] = []
    for delay in delays:
        top: Cell | None = None
        for p in prefill:
            for t in thresholds:
                oracle = Oracle(phase, delay, p, t, fixed_decode=decode)
                r = run(scenario, "static", duration=duration, seed=seed, interval=TICK_SECONDS, probe=oracle)
                assert oracle.decode is not None  # it acts before the end (checked above)
                cell = Cell(delay, p, oracle.decode, t, r)
                if top is None or _rank(r) > _rank(top.result):
                    top = cell
        assert top is not None
        best.append(top)
        print(f"  delay {delay:+.0f} s: done", file=sys.stderr)
    return best


def report(scenario: str, phase: str, cells: Sequence[Cell], ours: RunResult, static: RunResult) -> list[str]:
    """The table (markdown) and the verdict line."""
    lines = [
        "| oracle acts at | P:D | nonCachedTokens | TTFT attainment | ITL attainment | GPU-hours |",
        "|---|---|---|---|---|---|",
    ]
    for cell in cells:
        r = cell.result
        when = (
            "onset" if cell.delay == 0 else f"onset {'+' if cell.delay > 0 else '−'} {abs(cell.delay):.0f} s"
        )
        thr = "—" if cell.threshold is None else str(cell.threshold)
        lines.append(
            f"| {when} | {cell.prefill}:{cell.decode} | {thr} | {r.ttft_attainment:.3f} "
            f"| {r.itl_attainment:.3f} | {r.gpu_hours:.2f} |"
        )
    for label, r in (("pd-observer", ours), (f"{static.policy} (hindsight)", static)):
        lines.append(
            f"| {label} | | | {r.ttft_attainment:.3f} | {r.itl_attainment:.3f} | {r.gpu_hours:.2f} |"
        )
    reactive = [cell for cell in cells if cell.delay >= 0]
    reach = [
        cell
        for cell in reactive
        if cell.result.ttft_attainment >= static.ttft_attainment - EPS_ATT
        and cell.result.itl_attainment >= static.itl_attainment - EPS_ATT
    ]
    if not reactive:
        lines.append("verdict: no delay ≥ 0 in the grid, so no reactive ceiling was measured")
    elif reach:
        lines.append(
            f"verdict: an oracle acting {reach[0].delay:.0f} s after the {phase!r} onset reaches "
            f"{static.policy}: a reactive policy could meet this row"
        )
    else:
        top = max(reactive, key=lambda cell: _rank(cell.result))
        lines.append(
            f"verdict: no oracle acting at or after the {phase!r} onset reaches {static.policy} "
            f"(best {top.result.ttft_attainment:.3f} / {top.result.itl_attainment:.3f} against "
            f"{static.ttft_attainment:.3f} / {static.itl_attainment:.3f}): no reaction in this grid "
            f"meets this row of {scenario} under these cold starts"
        )
    return lines


def _threshold(text: str) -> int | None:
    return None if text.strip().lower() == "none" else int(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.control.ceiling",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    ap.add_argument("scenario", choices=sorted(SCENARIOS))
    ap.add_argument(
        "--phase", default="prefill-burst", help="the scenario phase the oracle answers (default %(default)s)"
    )
    ap.add_argument(
        "--delays",
        default=",".join(f"{d:g}" for d in DEFAULT_DELAYS),
        help="seconds after the onset the oracle acts, comma-separated; negative = before "
        "(default %(default)s)",
    )
    ap.add_argument(
        "--prefill",
        default=",".join(map(str, DEFAULT_PREFILL)),
        help=f"prefill counts to try (1..{MAX_PER_ROLE}; decode gets what the budget of {GPU_BUDGET} leaves, "
        "at most its start size; default %(default)s)",
    )
    ap.add_argument(
        "--thresholds",
        default=",".join("none" if t is None else str(t) for t in DEFAULT_THRESHOLDS),
        help="decider nonCachedTokens to try ('none' = lever not used; default %(default)s)",
    )
    ap.add_argument(
        "--decode",
        type=int,
        help=f"decode count the oracle sets (1..{MAX_PER_ROLE}; default: its start size, cut to the budget)",
    )
    ap.add_argument("--duration", type=float, help="scenario duration in s (default: the scenario's)")
    ap.add_argument(
        "--seed", type=int, default=0, help="the twin's seed, as run and trace take it (default 0)"
    )
    args = ap.parse_args(argv)
    try:
        delays = [float(x) for x in args.delays.split(",")]
        prefill = [int(x) for x in args.prefill.split(",")]
        thresholds = [_threshold(x) for x in args.thresholds.split(",")]
        bad = [p for p in prefill if not 1 <= p <= MAX_PER_ROLE or p >= GPU_BUDGET]
        if bad:
            raise ValueError(f"--prefill out of 1..{MAX_PER_ROLE}: {bad}")
        if args.decode is not None and not 1 <= args.decode <= MAX_PER_ROLE:
            raise ValueError(f"--decode out of 1..{MAX_PER_ROLE}: {args.decode}")
        if args.decode is not None and any(p + args.decode > GPU_BUDGET for p in prefill):
            raise ValueError(f"--prefill + --decode exceed the GPU budget of {GPU_BUDGET}")
        if any(t is not None and t <= 0 for t in thresholds):
            raise ValueError("--thresholds: a threshold is a positive token count or 'none'")
        onset = onset_of(args.scenario, args.phase, args.duration)
        runs = len(prefill) * len(thresholds)
        print(f"{args.scenario}: {args.phase!r} from {onset:.0f} s; {runs} runs per delay", file=sys.stderr)
        cells = ceiling(
            args.scenario,
            phase=args.phase,
            delays=delays,
            prefill=prefill,
            thresholds=thresholds,
            duration=args.duration,
            seed=args.seed,
            decode=args.decode,
        )
    except ValueError as exc:
        ap.error(str(exc))
    ours = run(args.scenario, "pd-observer", duration=args.duration, seed=args.seed)
    static = matched_static(args.scenario, ours, args.duration, args.seed)
    for line in report(args.scenario, args.phase, cells, ours, static):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
