"""CPU per span of the assemble and aggregate stages on the issue-2 ingest workload.

    .venv/bin/python -m benchmarks.pipeline_stages_bench                 # 200 batches, best of 5
    .venv/bin/python -m benchmarks.pipeline_stages_bench --reference     # A/B vs. the code before
    .venv/bin/python -m benchmarks.pipeline_stages_bench --batches 40 --profile

Same bodies as `benchmarks.ingest.run` (512-span vLLM-shaped OTLP batches, half aggregated
requests, half P/D traces, 50 tenants, 2 models; `WorkloadSpec(seed=2)`), decoded once with
`decode_and_resolve`. Each repetition runs a fresh `TraceAssembler` and `Aggregator` over every
batch in order, like `observer.pipeline` (assemble → [store] → aggregate, the store skipped: it
returns the same records on a fresh database) and charges each stage its CPU time
(`time.process_time`). Prints the best of `--repeat` per stage in µs per span.

`--reference` also runs the implementations before the hot-path rewrite (kept as test oracles:
tests/observer/ingest/test_assemble_reference.py, tests/observer/aggregate/reference.py),
interleaved with the current ones (A, B, A, B, ...) so that load on a shared machine hits both.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from benchmarks.ingest.workload import WorkloadSpec, batches
from observer import conventions as c
from observer.aggregate import Aggregator
from observer.config import Settings
from observer.ingest.assemble import TraceAssembler
from observer.ingest.resolve import ResolveConfig, ResolvedBatch, decode_and_resolve
from observer.model import RequestRecord
from tests.observer.aggregate.reference import ReferenceAggregator
from tests.observer.ingest.test_assemble_reference import ReferenceAssembler

BIG = 1 << 30


def decoded(n_batches: int, spans: int, tenants: int, now: float) -> list[ResolvedBatch]:
    settings = Settings()
    cfg = ResolveConfig.from_settings(settings.ingest)
    out = []
    for body, _ in batches(WorkloadSpec(n_batches, spans, tenants, seed=2), now):
        out.append(
            decode_and_resolve(
                body, c.CT_PROTOBUF, None, max_decompressed_bytes=BIG, max_spans=1 << 20, cfg=cfg
            )
        )
    return out


def run_once(
    work: list[ResolvedBatch], now: float, reference: bool = False, group: int = 1
) -> tuple[float, float, int]:
    """(assemble CPU s, aggregate CPU s, records) of one pass over `work`.

    `group`: batches whose records reach `Aggregator.add` in one call (the pipeline commits up to
    `store.write_batch_max` batches per transaction when they queue up)."""
    settings = Settings()
    ing = settings.ingest
    assembler: TraceAssembler | ReferenceAssembler
    if reference:
        assembler = ReferenceAssembler(ing.max_pending_traces, ing.pending_timeout_seconds)
        aggregator: Aggregator = ReferenceAggregator(settings.aggregation, settings.slo_specs())
    else:
        assembler = TraceAssembler(ing.max_pending_traces, ing.pending_timeout_seconds)
        aggregator = Aggregator(settings.aggregation, settings.slo_specs())
    clock = time.process_time
    t_asm = t_agg = 0.0
    records = 0
    for first in range(0, len(work), group):
        new: list[RequestRecord] = []
        for b in work[first : first + group]:
            t0 = clock()
            res = assembler.add(b.engine, b.hints, now)
            t_asm += clock() - t0
            new.extend(res.records)
        t1 = clock()
        aggregator.add(new, now)
        t_agg += clock() - t1
        records += len(new)
    return t_asm, t_agg, records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--spans", type=int, default=512)
    ap.add_argument("--tenants", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--group", type=int, default=1, help="batches per Aggregator.add call")
    ap.add_argument("--profile", action="store_true", help="cProfile one pass instead of timing")
    ap.add_argument("--reference", action="store_true", help="also time the code before (A/B)")
    args = ap.parse_args()
    now = 1_700_000_000.0
    work = decoded(args.batches, args.spans, args.tenants, now)
    spans = sum(len(b.engine) for b in work)
    total_spans = args.batches * args.spans
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        run_once(work, now)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        return
    sides = (False, True) if args.reference else (False,)
    best = {side: [float("inf"), float("inf")] for side in sides}
    records = 0
    for _ in range(args.repeat):
        for side in sides:
            a, g, records = run_once(work, now, reference=side, group=args.group)
            best[side][0] = min(best[side][0], a)
            best[side][1] = min(best[side][1], g)
    print(f"batches {args.batches} x {args.spans} spans ({spans} engine spans), {records} records,")
    print(f"{args.group} batch(es) per Aggregator.add call")
    print(f"CPU µs per span, best of {args.repeat}" + (" (interleaved A/B)" if args.reference else ""))
    for i, stage in enumerate(("assemble", "aggregate")):
        line = f"{stage:<10} {1e6 * best[False][i] / total_spans:6.2f}"
        if args.reference:
            ref = 1e6 * best[True][i] / total_spans
            line += f"   before {ref:6.2f}   ({ref / (1e6 * best[False][i] / total_spans):.2f}x)"
        print(line)


if __name__ == "__main__":
    main()
