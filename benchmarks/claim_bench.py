"""Cost of an ingest replica's heartbeat and takeover claim (`Store.claim_pending`, run every
housekeeping tick) while another live replica holds many pending P/D halves:
`python -m benchmarks.claim_bench --url postgresql+psycopg://postgres@127.0.0.1:5432/DB
[--rows N] [--claims K]`.

The database must exist and be empty (it is migrated here, and filled with `--rows` halves of a
live replica `b`). Reports the mean wall time of `--claims` claims by replica `a`, without and
with the maintenance sweep (owners with no heartbeat row). Nothing is taken over: `b` stays live.
"""

from __future__ import annotations

import argparse
import time

from observer import conventions as c
from observer.model import EngineSpan, TierTokens
from observer.store import Store

T = 1_700_000_000.0
GONE = 60.0


def half(i: int) -> EngineSpan:
    return EngineSpan(
        trace_id=f"{i:032x}",
        span_id=f"{i:016x}",
        request_id=f"req-{i}",
        role=c.ROLE_PREFILL,
        tenant="acme",
        model="llama",
        pod="pool-prefill-0",
        start_time=T - 0.5,
        end_time=T,
        prompt_tokens=1000,
        output_tokens=1,
        cached=TierTokens(hbm=100),
        queue=0.01,
        prefill=0.4,
        decode=None,
        ttft=0.45,
        e2e=0.5,
        error=False,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True, help="an empty database (PostgreSQL or SQLite)")
    ap.add_argument("--rows", type=int, default=100_000, help="pending halves of the live replica")
    ap.add_argument("--claims", type=int, default=20, help="claims timed per mode")
    args = ap.parse_args()
    st = Store.open(args.url)
    st.upgrade()
    st.claim_pending("b", T, GONE, limit=1)  # b's heartbeat: live throughout
    for lo in range(0, args.rows, 10_000):
        st.write_batch([], [half(i) for i in range(lo, min(lo + 10_000, args.rows))], owner="b")
    for sweep in (False, True):
        t0 = time.perf_counter()
        for k in range(args.claims):
            taken = st.claim_pending("a", T + 1 + k * 0.01, GONE, limit=10_000, sweep=sweep)
            assert not taken
        ms = (time.perf_counter() - t0) / args.claims * 1000
        print(f"claim with {args.rows} live rows, sweep={sweep}: {ms:.1f} ms")
    st.close()


if __name__ == "__main__":
    main()
