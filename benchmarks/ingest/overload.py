"""Ingest under overload: the server's peak memory and goodput when more is sent than it writes.

    .venv/bin/python -m benchmarks.ingest.overload                          # the documented cases
    .venv/bin/python -m benchmarks.ingest.overload --case 32x90000 --seconds 20
    PD_OBSERVER_SERVER__MAX_QUEUED_SPANS=100000000 .venv/bin/python -m benchmarks.ingest.overload  # no bound

The server inherits the environment, so `PD_OBSERVER_*` variables set its settings.
Each case starts a fresh `serve` (SQLite file, default settings), then N clients each send
gzip'd OTLP/protobuf batches of S vLLM-shaped spans (benchmarks/ingest/workload.py, 1,000
tenants) for `--seconds`, as an OTLP exporter does: one request at a time per client, and after
a 429 or 503 the Retry-After pause. Reported per case: answers by status, spans accepted per
second (goodput), and the server's peak resident set (`VmHWM`). What bounds the memory is
`server.max_inflight_body_bytes` (bodies), `server.max_queued_spans` (decoded spans waiting for
the writer) and `server.decode_workers` (docs/ingest.md, "The receiver's limits"); the cases are
the measurements behind deploy/observer.yaml's memory limit (docs/deploy.md, "Sizing").

Prints a markdown table; `--out FILE` also writes the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from benchmarks.ingest.workload import WorkloadSpec, batches
from observer import conventions as c

CASES = ("2x8192", "64x8192", "24x20000", "32x90000")
BODIES_PER_CASE = 4


def _peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")  # pragma: no cover - Linux only


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited with {proc.returncode}")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError("serve not ready")


async def _client(url: str, bodies: Sequence[bytes], spans: int, end: float, out: dict[str, Any]) -> None:
    headers = {"Content-Type": c.CT_PROTOBUF, "Content-Encoding": "gzip"}
    async with httpx.AsyncClient(timeout=120) as http:
        i = 0
        while time.monotonic() < end:
            r = await http.post(url + c.OTLP_TRACES_PATH, content=bodies[i % len(bodies)], headers=headers)
            i += 1
            out["status"][r.status_code] = out["status"].get(r.status_code, 0) + 1
            if r.status_code == 200:
                out["spans"] += spans
            elif r.status_code in (429, 503):
                await asyncio.sleep(float(r.headers.get("retry-after", "1")))


def run_case(case: str, seconds: float) -> dict[str, Any]:
    clients, spans = (int(x) for x in case.split("x"))
    now = time.time()
    spec = WorkloadSpec(batches=BODIES_PER_CASE, spans_per_batch=spans, tenants=1000, seed=3)
    bodies = [gzip.compress(b) for b, _ in batches(spec, now)]
    with tempfile.TemporaryDirectory(prefix="pdo-overload-") as tmp:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "observer.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--db", f"sqlite:///{tmp}/overload.db"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            _wait_ready(url, proc)
            idle = _peak_mib(proc.pid)
            out: dict[str, Any] = {"status": {}, "spans": 0}
            end = time.monotonic() + seconds

            async def all_clients() -> None:
                await asyncio.gather(*(_client(url, bodies, spans, end, out) for _ in range(clients)))

            t0 = time.monotonic()
            asyncio.run(all_clients())
            wall = time.monotonic() - t0
            peak = _peak_mib(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    return {
        "case": case,
        "clients": clients,
        "spans_per_batch": spans,
        "body_mib": round(sum(len(b) for b in bodies) / len(bodies) / 2**20, 2),
        "status": {str(k): v for k, v in sorted(out["status"].items())},
        "accepted_spans_per_s": round(out["spans"] / wall),
        "idle_rss_mib": round(idle),
        "peak_rss_mib": round(peak),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--case",
        action="append",
        metavar="CLIENTSxSPANS",
        help=f"clients x spans per batch, repeatable (default: {', '.join(CASES)})",
    )
    p.add_argument("--seconds", type=float, default=40.0, help="sending time per case (default 40)")
    p.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = p.parse_args(argv)
    results = [run_case(case, args.seconds) for case in (args.case or CASES)]
    print("| clients × spans/batch | gzip body MiB | answers | accepted spans/s | peak RSS MiB (idle) |")
    print("|---|---|---|---|---|")
    for r in results:
        answers = ", ".join(f"{k}: {v}" for k, v in r["status"].items())
        print(
            f"| {r['clients']} × {r['spans_per_batch']} | {r['body_mib']} | {answers} | "
            f"{r['accepted_spans_per_s']:,} | {r['peak_rss_mib']} ({r['idle_rss_mib']}) |"
        )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
