"""Control-loop benchmark: every named scenario (and the Mooncake replays) on the twin under
each policy — best static P:D at pd-observer's GPU-hours (its average GPU count rounded up to
whole GPUs), a WVA-like saturation policy, a Dynamo-like throughput planner, and pd-observer —
with TTFT / ITL SLO attainment, GPU-hours and scaling actions. See `benchmarks.control.harness`
for the policies and the measurement.

    python -m benchmarks.control.run [--quick] [--scenarios a,b] [--out control.json]
    python -m benchmarks.control.run --warm-hold 240 --tune cache_spill_target=0.03   # an A/B

`--quick` shortens every scenario (phases keep their proportions) and the Mooncake replays.
The verdict column compares pd-observer with each baseline: `≥` when its TTFT and ITL
attainment are both at least the baseline's (to 0.005) at no more GPU-hours (to 1 %), else `<`.
`--warm-hold` and `--tune` run pd-observer as a variant (the same options as
`benchmarks.control.trace`); the static column follows the variant's GPU-hours.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.control import variant
from benchmarks.control.harness import RunResult, run
from simulator.scenarios import SCENARIOS

QUICK_FRACTION = 1 / 3
EPS_ATT = 0.005
EPS_GPU = 0.01


def score(r: RunResult) -> tuple[float, float]:
    """How splits are ranked: the lower of TTFT and ITL attainment first, then their sum."""
    return (min(r.ttft_attainment, r.itl_attainment), r.ttft_attainment + r.itl_attainment)


def best_static(scenario: str, gpus: int, duration: float | None, seed: int) -> RunResult:
    """The best fixed prefill:decode split using `gpus` replicas (one GPU each)."""
    best: RunResult | None = None
    for p in range(1, max(2, gpus)):
        r = run(scenario, "static", duration=duration, seed=seed, static=(p, max(1, gpus - p)))
        if best is None or score(r) > score(best):
            best = r
    assert best is not None
    return best


def verdict(ours: RunResult, base: RunResult) -> str:
    ok = (
        ours.ttft_attainment >= base.ttft_attainment - EPS_ATT
        and ours.itl_attainment >= base.itl_attainment - EPS_ATT
        and ours.gpu_hours <= base.gpu_hours * (1 + EPS_GPU)
    )
    return "≥" if ok else "<"


def span_of(scenario: str, duration: float | None) -> float:
    """The run's length in s: `duration`, else the scenario's default."""
    return duration if duration is not None else SCENARIOS[scenario].default_duration


def matched_gpus(scenario: str, ours: RunResult, duration: float | None) -> int:
    """The static column's GPU count: the fewest whole GPUs whose GPU-hours are not below
    pd-observer's (its average GPU count rounded up, at least 2). A split has a whole number of
    GPUs; rounding down would give it fewer GPU-hours than pd-observer, and the `≤ its
    GPU-hours` half of the verdict would fail by construction."""
    average = ours.gpu_hours * 3600.0 / span_of(scenario, duration)
    return max(2, math.ceil(average - 1e-9))


def matched_static(scenario: str, ours: RunResult, duration: float | None, seed: int) -> RunResult:
    """The best static split at `matched_gpus` (the table's column)."""
    return best_static(scenario, matched_gpus(scenario, ours, duration), duration, seed)


def bench_scenario(
    scenario: str, *, quick: bool, seed: int, var: variant.Variant = variant.DEFAULT
) -> list[RunResult]:
    """The table's rows of one scenario: matched static, saturation, Dynamo-like, pd-observer
    (as `var` configures it)."""
    default = SCENARIOS[scenario].default_duration
    duration = default * QUICK_FRACTION if quick else default
    ours = run(
        scenario, "pd-observer", duration=duration, seed=seed, warm_hold=var.warm_hold, tune=var.tune_map
    )
    return [
        matched_static(scenario, ours, duration, seed),
        run(scenario, "saturation", duration=duration, seed=seed),
        run(scenario, "dynamo", duration=duration, seed=seed),
        ours,
    ]


def table(results: dict[str, list[RunResult]]) -> str:
    head = (
        "| scenario | policy | requests | TTFT attainment | ITL attainment | GPU-hours | scaling actions "
        "| weight changes | decider changes | pd-observer vs this |"
    )
    lines = [head, "|" + "---|" * 10]
    for scenario, rows in results.items():
        ours = rows[-1]
        for r in rows:
            v = "—" if r is ours else verdict(ours, r)
            lines.append(
                f"| {scenario} | {r.policy} | {r.requests} | {r.ttft_attainment:.3f} "
                f"| {r.itl_attainment:.3f} | {r.gpu_hours:.2f} | {r.scaling_actions} "
                f"| {r.weight_changes} | {r.decider_changes} | {v} |"
            )
    return "\n".join(lines)


def parser(prog: str, doc: str | None, out: str, out_help: str) -> argparse.ArgumentParser:
    """The options every table command takes: `--quick`, `--scenarios`, `--out` and the
    variant's (`run` and `seeds`)."""
    ap = argparse.ArgumentParser(
        prog=f"python -m {prog}", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="a third of every scenario's duration")
    ap.add_argument("--scenarios", help=f"comma-separated subset (default: all of {', '.join(SCENARIOS)})")
    ap.add_argument("--out", type=Path, default=Path(out), help=f"{out_help} (default %(default)s)")
    variant.add_arguments(ap)
    return ap


def scenario_names(args: argparse.Namespace) -> list[str]:
    """`--scenarios` (default: all); ValueError (one line) naming an unknown one."""
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()] if args.scenarios else list(SCENARIOS)
    if not names:
        raise ValueError("--scenarios names no scenario")
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario(s): {', '.join(unknown)}")
    return names


def main(argv: list[str] | None = None) -> int:
    ap = parser(
        "benchmarks.control.run",
        __doc__,
        "control-bench.json",
        "where the JSON of every run and verdict goes",
    )
    ap.add_argument("--seed", type=int, default=0, help="the twin's random seed (default %(default)s)")
    args = ap.parse_args(argv)
    try:
        names = scenario_names(args)
        var = variant.from_args(args)
    except ValueError as exc:
        ap.error(str(exc))
    if var != variant.DEFAULT:
        print(f"pd-observer variant: {var.label()}", file=sys.stderr)
    wall0 = time.monotonic()
    results: dict[str, list[RunResult]] = {}
    for name in names:
        t0 = time.monotonic()
        results[name] = bench_scenario(name, quick=args.quick, seed=args.seed, var=var)
        print(f"{name}: {time.monotonic() - t0:.1f} s", file=sys.stderr)
    print(table(results))
    doc: dict[str, Any] = {
        "quick": args.quick,
        "seed": args.seed,
        "variant": var.label(),
        "wall_seconds": time.monotonic() - wall0,
        "results": {k: [r.as_json() for r in v] for k, v in results.items()},
        "verdicts": {k: {r.policy: verdict(v[-1], r) for r in v[:-1]} for k, v in results.items()},
    }
    args.out.write_text(json.dumps(doc, indent=1, sort_keys=True), encoding="utf-8")
    print(f"json: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
