"""Store write/read throughput: `python benchmarks/store_bench.py [--url URL] [--batches N]`.

Default: a temporary SQLite file. Measures write_batch of 512 new records per call (one
transaction each, as the ingest writer does), the same batches again (all duplicates, the retry
path), streaming them back with records_since, and one rollup over everything.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from observer.model import RequestRecord, TierTokens
from observer.store import Store


def make_batch(rng: random.Random, k: int, size: int, t0: float) -> list[RequestRecord]:
    out = []
    for i in range(size):
        end = t0 + k + i / size
        out.append(
            RequestRecord(
                request_id=f"bench-{k}-{i}",
                trace_id=f"{rng.getrandbits(128):032x}",
                tenant=f"tenant-{rng.randrange(50)}",
                model="meta-llama/Llama-3.1-8B-Instruct",
                start_time=end - 2.0,
                end_time=end,
                prompt_tokens=rng.randrange(100, 8000),
                output_tokens=rng.randrange(1, 800),
                cached=TierTokens(*(rng.randrange(0, 500) for _ in range(5))),
                ttft=rng.random(),
                itl=rng.random() / 20,
                e2e=2.0,
                queue=0.01,
                prefill=0.3,
                kv_transfer=0.02,
                decode=1.6,
                disaggregated=True,
                prefill_pod="prefill-0",
                decode_pod="decode-3",
            )
        )
    return out


def run(url: str, batches: int, size: int) -> dict[str, float]:
    rng = random.Random(1)
    t0 = 1_700_000_000.0
    data = [make_batch(rng, k, size, t0) for k in range(batches)]
    store = Store.open(url)
    store.upgrade()
    try:
        start = time.perf_counter()
        new = sum(len(store.write_batch(b)) for b in data)
        write_s = time.perf_counter() - start
        start = time.perf_counter()
        dup = sum(len(store.write_batch(b)) for b in data)
        dup_s = time.perf_counter() - start
        start = time.perf_counter()
        read = sum(1 for _ in store.records_since(0.0))
        read_s = time.perf_counter() - start
        start = time.perf_counter()
        rolled = store.rollup(t0 + batches + 120)
        rollup_s = time.perf_counter() - start
    finally:
        store.close()
    assert new == batches * size
    assert dup == 0
    assert read >= new
    assert rolled == new
    return {
        "records": float(new),
        "write_records_per_s": new / write_s,
        "write_ms_per_batch": 1000 * write_s / batches,
        "duplicate_records_per_s": new / dup_s,
        "read_records_per_s": read / read_s,
        "rollup_records_per_s": rolled / rollup_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--url", help="SQLAlchemy URL of an EMPTY database (default: temp SQLite file)")
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=512)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        url = args.url or f"sqlite:///{Path(d) / 'bench.sqlite'}"
        result = run(url, args.batches, args.batch_size)
    print(f"store benchmark on {url.split(':', 1)[0]}: {args.batches} x write_batch({args.batch_size})")
    for key, value in result.items():
        print(f"  {key:26s} {value:12,.1f}")


if __name__ == "__main__":
    main()
