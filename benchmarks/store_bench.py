"""Store write/read throughput: `python -m benchmarks.store_bench [--url URL] [--batches N]`.

Default mode: a temporary SQLite file. Measures write_batch of 512 new records per call (one
transaction each), the same batches again (all duplicates, the retry path), streaming them back
with records_since, and one rollup over everything.

`--sweep`: CPU µs per record of `write_batch` (time.process_time, so time descheduled by other
load is not charged) for transactions of several sizes (`--groups`, records per transaction),
after `--prefill` existing rows, with time-ordered end times and random request ids (as a
collector sends them, like the ingest benchmark). Each size gets a fresh database; sizes are
run `--repeat` times interleaved and the best run is reported. `--pragma k=v` adds a PRAGMA.

`--keys`: the same in raw sqlite3, unique `request_id` vs unique `(end_minute, request_id)`
(the time-bucketed dedupe key considered in docs/storage.md).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from observer.model import RequestRecord, TierTokens
from observer.store import Store
from observer.store.repository import SQLITE_PRAGMAS


def make_record(rng: random.Random, rid: str, end: float) -> RequestRecord:
    return RequestRecord(
        request_id=rid,
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


def make_batch(rng: random.Random, k: int, size: int, t0: float) -> list[RequestRecord]:
    return [make_record(rng, f"bench-{k}-{i}", t0 + k + i / size) for i in range(size)]


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


def collector_records(rng: random.Random, n: int, t0: float, rate: float) -> list[RequestRecord]:
    """`n` records ending in time order at `rate` per second, with random 128-bit request ids."""
    return [make_record(rng, f"chatcmpl-{rng.getrandbits(128):032x}", t0 + i / rate) for i in range(n)]


def sweep_one(url: str, prefill: int, measured: int, group: int) -> float:
    """CPU µs per record of write_batch in transactions of `group` records."""
    rng = random.Random(group)
    rate = 500.0  # records per second of end time (the benchmark workload's order of magnitude)
    t0 = 1_700_000_000.0
    store = Store.open(url)
    store.upgrade()
    try:
        old = collector_records(rng, prefill, t0, rate)
        for i in range(0, len(old), 5000):
            store.write_batch(old[i : i + 5000])
        data = collector_records(rng, measured, t0 + prefill / rate, rate)
        start = time.process_time()
        for i in range(0, len(data), group):
            store.write_batch(data[i : i + group])
        cpu = time.process_time() - start
    finally:
        store.close()
    return 1e6 * cpu / measured


def sweep(groups: Sequence[int], prefill: int, measured: int, repeat: int) -> dict[int, float]:
    best: dict[int, float] = {}
    for _ in range(repeat):
        for g in groups:
            with tempfile.TemporaryDirectory() as d:
                us = sweep_one(f"sqlite:///{Path(d) / 'sweep.sqlite'}", prefill, measured, g)
            best[g] = min(best.get(g, us), us)
    return best


def raw_key_variant(unique: str, group: int, prefill: int, measured: int) -> float:
    """Raw sqlite3 (no SQLAlchemy, no Store), the requests table's 25 columns plus `end_minute`,
    indexes end_time and (tenant, end_time), and the dedupe key `unique` ("request_id" or
    "end_minute, request_id"); WAL, synchronous=NORMAL, the Store's cache and checkpoint pragmas.
    CPU µs per record of `group`-record transactions after `prefill` rows."""
    import sqlite3

    from observer.store.codec import RECORD_COLUMNS, record_to_tuple

    cols = [*RECORD_COLUMNS, "end_minute"]
    rng = random.Random(group)
    with tempfile.TemporaryDirectory() as d:
        db = sqlite3.connect(str(Path(d) / "raw.sqlite"), isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", *SQLITE_PRAGMAS[4:]):
            db.execute(f"PRAGMA {pragma}")
        db.execute(f"CREATE TABLE requests (seq INTEGER PRIMARY KEY AUTOINCREMENT, {', '.join(cols)})")
        db.execute(f"CREATE UNIQUE INDEX u ON requests ({unique})")
        db.execute("CREATE INDEX e ON requests (end_time)")
        db.execute("CREATE INDEX te ON requests (tenant, end_time)")
        marks = ", ".join("?" * len(cols))
        sql = f"INSERT INTO requests ({', '.join(cols)}) VALUES ({marks}) ON CONFLICT ({unique}) DO NOTHING"

        def rows(n: int, t0: float) -> list[tuple[object, ...]]:
            return [
                (*record_to_tuple(r), r.end_time // 60 * 60) for r in collector_records(rng, n, t0, 500.0)
            ]

        def write(data: list[tuple[object, ...]], size: int) -> None:
            for i in range(0, len(data), size):
                db.execute("BEGIN IMMEDIATE")
                db.executemany(sql, data[i : i + size])
                db.execute("COMMIT")

        write(rows(prefill, 1_700_000_000.0), 5000)
        data = rows(measured, 1_700_000_000.0 + prefill / 500.0)
        start = time.process_time()
        write(data, group)
        cpu = time.process_time() - start
        db.close()
    return 1e6 * cpu / measured


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="SQLAlchemy URL of an EMPTY database (default: temp SQLite file)")
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--sweep", action="store_true", help="CPU µs/record by transaction size (SQLite)")
    ap.add_argument("--groups", default="256,1024,2560,5120", help="records per transaction")
    ap.add_argument("--prefill", type=int, default=100_000, help="rows stored before measuring")
    ap.add_argument("--measured", type=int, default=20_480, help="records written while measured")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved runs; best is reported")
    ap.add_argument("--pragma", action="append", default=[], help="extra SQLite PRAGMA (k=v), first")
    ap.add_argument("--keys", action="store_true", help="raw sqlite3: request_id vs (minute, id) key")
    args = ap.parse_args()
    SQLITE_PRAGMAS[:0] = args.pragma
    if args.keys:
        groups = [int(x) for x in args.groups.split(",")]
        print(f"raw sqlite3 CPU µs/record by dedupe key, {args.prefill:,} rows before, best of {args.repeat}")
        best: dict[tuple[str, int], float] = {}
        for _ in range(args.repeat):
            for key in ("request_id", "end_minute, request_id"):
                for g in groups:
                    us = raw_key_variant(key, g, args.prefill, args.measured)
                    best[key, g] = min(best.get((key, g), us), us)
        for (key, g), us in best.items():
            print(f"  unique ({key:22s}) {g:6d} records/txn  {us:6.2f}")
        return
    if args.sweep:
        groups = [int(x) for x in args.groups.split(",")]
        result = sweep(groups, args.prefill, args.measured, args.repeat)
        print(
            f"write_batch CPU µs/record, SQLite, {args.prefill:,} rows before, "
            f"{args.measured:,} measured, best of {args.repeat}"
        )
        for g, us in result.items():
            print(f"  {g:6d} records/txn  {us:6.2f}")
        return
    with tempfile.TemporaryDirectory() as d:
        url = args.url or f"sqlite:///{Path(d) / 'bench.sqlite'}"
        result2 = run(url, args.batches, args.batch_size)
    print(f"store benchmark on {url.split(':', 1)[0]}: {args.batches} x write_batch({args.batch_size})")
    for key, value in result2.items():
        print(f"  {key:26s} {value:12,.1f}")


if __name__ == "__main__":
    main()
