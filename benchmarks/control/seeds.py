"""The control benchmark's verdicts across the twin's random seeds: how many seeds each cell
(pd-observer against one baseline on one row) is met in, and the range of pd-observer's
attainment and GPU-hours. The table in docs/performance.md is seed 0; this says which of its
verdicts hold on other seeds (the twin's arrivals, prompt sizes and routing ties move with it).

    python -m benchmarks.control.seeds                      # seeds 0-4, every scenario
    python -m benchmarks.control.seeds --seeds 0,1 --quick --scenarios steady,prefill-burst

Each seed is one `benchmarks.control.run` (the same rules and baselines); `--jobs` runs seeds
side by side. Takes the same variant options as `run` (`--warm-hold`, `--tune`).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from benchmarks.control import variant
from benchmarks.control.harness import RunResult
from benchmarks.control.run import bench_scenario, parser, scenario_names, verdict

BASELINES = ("static", "saturation", "dynamo")


@dataclass(frozen=True, slots=True)
class SeedRun:
    """One seed's rows: per scenario, pd-observer's result and its verdict per baseline kind."""

    seed: int
    ours: dict[str, RunResult]
    verdicts: dict[str, dict[str, str]]  # scenario -> baseline kind -> "≥" | "<"
    static: dict[str, str]  # scenario -> the matched split, e.g. "static 6:5"

    @property
    def met(self) -> int:
        return sum(v == "≥" for row in self.verdicts.values() for v in row.values())


def kind(policy: str) -> str:
    """`static 6:5` -> `static`; the other baselines are named as they are."""
    return policy.split(maxsplit=1)[0]


def run_seed(seed: int, names: Sequence[str], quick: bool, var: variant.Variant) -> SeedRun:
    ours: dict[str, RunResult] = {}
    verdicts: dict[str, dict[str, str]] = {}
    static: dict[str, str] = {}
    for name in names:
        rows = bench_scenario(name, quick=quick, seed=seed, var=var)
        ours[name] = rows[-1]
        verdicts[name] = {kind(r.policy): verdict(rows[-1], r) for r in rows[:-1]}
        static[name] = rows[0].policy
    return SeedRun(seed, ours, verdicts, static)


def table(runs: Sequence[SeedRun], names: Sequence[str]) -> str:
    """One line per scenario: pd-observer's range over the seeds, and in how many seeds each
    baseline's cell is met."""
    n = len(runs)
    lines = [
        "| scenario | pd-observer TTFT | GPU-hours | vs static | vs saturation | vs Dynamo-like |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        ttft = [r.ours[name].ttft_attainment for r in runs]
        gpu = [r.ours[name].gpu_hours for r in runs]
        cells = [f"{sum(r.verdicts[name][b] == '≥' for r in runs)} of {n}" for b in BASELINES]
        lines.append(f"| {name} | {_span(ttft, 3)} | {_span(gpu, 2)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_seed(runs: Sequence[SeedRun]) -> str:
    """`seed 0: 11, seed 1: 10, ...`: the cells met on each seed."""
    return ", ".join(f"seed {r.seed}: {r.met}" for r in runs)


def from_json(doc: dict[str, Any]) -> list[SeedRun]:
    """The runs of a kept `--out` JSON, in seed order."""
    return [
        SeedRun(
            int(seed),
            {k: RunResult(**v) for k, v in e["pd_observer"].items()},
            e["verdicts"],
            e["static"],
        )
        for seed, e in sorted(doc["seeds"].items(), key=lambda kv: int(kv[0]))
    ]


def _span(values: Sequence[float], digits: int) -> str:
    lo, hi = min(values), max(values)
    return (
        f"{lo:.{digits}f}" if round(lo, digits) == round(hi, digits) else f"{lo:.{digits}f}–{hi:.{digits}f}"
    )


def _seeds(text: str) -> list[int]:
    """`0-4` or `0,2,5`."""
    try:
        if "-" in text:
            lo, hi = (int(x) for x in text.split("-", 1))
            seeds = list(range(lo, hi + 1))
        else:
            seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--seeds takes a range (0-4) or a list (0,2,5), got {text!r}") from None
    if not seeds:
        raise ValueError(f"--seeds names no seed: {text!r}")
    return seeds


def main(argv: list[str] | None = None) -> int:
    ap = parser(
        "benchmarks.control.seeds",
        __doc__,
        "control-seeds.json",
        "where every seed's pd-observer results and verdicts go",
    )
    ap.add_argument("--seeds", default="0-4", help="a range or a comma list (default %(default)s)")
    ap.add_argument("--jobs", type=int, default=2, help="seeds run side by side (default %(default)s)")
    args = ap.parse_args(argv)
    try:
        seeds = _seeds(args.seeds)
        names = scenario_names(args)
        if args.jobs < 1:
            raise ValueError(f"--jobs must be ≥ 1, got {args.jobs}")
        var = variant.from_args(args)
    except ValueError as exc:
        ap.error(str(exc))
    wall0 = time.monotonic()
    runs: list[SeedRun] = []
    with ProcessPoolExecutor(max_workers=min(args.jobs, len(seeds))) as pool:
        futures = [pool.submit(run_seed, s, names, args.quick, var) for s in seeds]
        for i, fut in enumerate(futures, 1):
            runs.append(fut.result())
            print(
                f"seed {runs[-1].seed} done ({i} of {len(seeds)}, {time.monotonic() - wall0:.0f} s)",
                file=sys.stderr,
            )
    print(table(runs, names))
    print(f"\ncells met of {3 * len(names)}: {per_seed(runs)}")
    doc: dict[str, Any] = {
        "quick": args.quick,
        "scenarios": names,
        "variant": var.label(),
        "wall_seconds": time.monotonic() - wall0,
        "seeds": {
            str(r.seed): {
                "cells_met": r.met,
                "verdicts": r.verdicts,
                "static": r.static,
                "pd_observer": {k: v.as_json() for k, v in r.ours.items()},
            }
            for r in runs
        },
    }
    args.out.write_text(json.dumps(doc, indent=1, sort_keys=True), encoding="utf-8")
    print(f"json: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
