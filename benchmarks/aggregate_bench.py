"""Micro-benchmark of observer.aggregate: Aggregator.add throughput, query latency, peak RSS.

Run: .venv/bin/python benchmarks/aggregate_bench.py [--records N] [--tenants T]

Workload: T tenants (default 10,000; max_tenants stays at the default 1000 so ~9,000 fold into
`other`), 2 models, records spread over the last hour (the longest window), every latency metric
set, cached tokens on 3 tiers, default SLOs. Prints records/s of `add`, the time of the
per-window `tenants()` queries, and peak RSS (ru_maxrss) before and after.
"""

from __future__ import annotations

import argparse
import random
import resource
import time

from observer.aggregate import Aggregator
from observer.config import AggregationSettings, Settings
from observer.model import RequestRecord, TierTokens


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_records(
    n: int, tenants: int, now: float, span: float, seed: int = 7, first: int = 0, total: int | None = None
) -> list[RequestRecord]:
    """Records `first .. first+n` of a stream of `total` spread evenly over `span` seconds."""
    total = total if total is not None else n
    rng = random.Random(seed * 1_000_003 + first)
    out = []
    for i in range(first, first + n):
        end = now - span + span * i / total
        prompt = rng.randint(100, 8000)
        hit = rng.randint(0, prompt)
        ttft = rng.lognormvariate(-1.5, 0.8)
        out.append(
            RequestRecord(
                request_id=f"r{i}",
                trace_id=f"{i:032x}",
                tenant=f"tenant-{rng.randrange(tenants)}",
                model=("llama-70b", "qwen-32b")[i % 2],
                start_time=end - 2.0,
                end_time=end,
                prompt_tokens=prompt,
                output_tokens=rng.randint(1, 800),
                cached=TierTokens(hbm=hit // 2, dram=hit // 4, disk=hit - hit // 2 - hit // 4),
                ttft=ttft,
                itl=rng.lognormvariate(-3.5, 0.4),
                e2e=ttft + rng.uniform(1, 20),
                queue=rng.expovariate(50),
                prefill=ttft * 0.6,
                kv_transfer=rng.uniform(0.001, 0.02),
                decode=rng.uniform(1, 20),
                error=rng.random() < 0.002,
            )
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=300_000)
    ap.add_argument("--tenants", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=500)
    args = ap.parse_args()

    now = 1_700_000_000.0
    span = 3600.0
    base = rss_mb()
    settings = AggregationSettings()
    agg = Aggregator(settings, Settings().slo_specs())

    # Generate in batches (so RSS reflects the aggregator, not a list of all records) and feed them
    # in end-time order with `now` advancing like a live server. Only `add` is timed.
    add_s = 0.0
    for first in range(0, args.records, args.batch):
        n = min(args.batch, args.records - first)
        batch = make_records(n, args.tenants, now, span, first=first, total=args.records)
        t0 = time.perf_counter()
        agg.add(batch, batch[-1].end_time)
        add_s += time.perf_counter() - t0
    agg.expire(now)
    peak = rss_mb()

    print(f"records                 {args.records:>10,}  over the last {span:.0f} s")
    print(f"tenants (distinct)      {args.tenants:>10,}  tracked {agg.tracked_tenants:,} + other")
    print(f"folded records          {agg.folded:>10,}")
    print(f"Aggregator.add          {args.records / add_s:>10,.0f} records/s  ({add_s:.2f} s)")
    for w in settings.windows_seconds:
        t1 = time.perf_counter()
        stats = agg.tenants(w, now)
        print(f"tenants({w:>4}) query     {time.perf_counter() - t1:>10.3f} s  ({len(stats)} entries)")
    t1 = time.perf_counter()
    agg.totals()
    print(f"totals()                {time.perf_counter() - t1:>10.3f} s")
    print(f"peak RSS (process)      {peak:>10.1f} MB  (interpreter + imports before: {base:.1f} MB)")


if __name__ == "__main__":
    main()
