"""Ingest benchmark (issue 2): end-to-end spans/s over HTTP vs. the parse ceiling, and peak RSS.

    python -m benchmarks.ingest.run                       # full run (from the repo root)
    python -m benchmarks.ingest.run --batches 20 --rss-tenants 500   # quick look

Throughput mode: the real server (`python -m observer.cli serve`, SQLite file, decode_workers=1)
runs as a subprocess pinned to ONE core (`taskset -c 0`); this process, pinned to the other core,
sends `--batches` distinct 512-span vLLM-shaped OTLP/protobuf bodies over `--connections`
keep-alive HTTP connections and times them from first send to last 200 (each 200 means the batch
is committed). The ceiling is measured in the same run, on the same core and the same bodies:
`observer.ingest.otlp.parse_and_walk` (protobuf parse + touch every attribute) in a tight loop.

RSS mode: a fresh server receives requests from `--rss-tenants` distinct tenants; the result is
the server's peak resident set (`VmHWM` from /proc/<pid>/status) after all of them are committed.

Prints a markdown table and writes JSON to `--out` (default benchmarks/results/ingest.json).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import os
import pickle
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.ingest.stages import PIPELINE, stage_costs
from benchmarks.ingest.workload import WorkloadSpec, batches
from observer import conventions as c

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "ingest.json"
TARGET_RATIO = 0.5
TARGET_RSS_MB = 200.0


# ------------------------------------------------------------------------------------ ceiling
def ceiling(bodies: Sequence[bytes], min_seconds: float) -> dict[str, float]:
    """parse_and_walk over `bodies` repeatedly for at least `min_seconds`; spans/s."""
    from observer.ingest.otlp import parse_and_walk

    spans = 0
    rounds = 0
    t0 = time.perf_counter()
    while True:
        for body in bodies:
            spans += parse_and_walk(body)
        rounds += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            break
    return {"spans": spans, "seconds": elapsed, "spans_per_second": spans / elapsed, "rounds": rounds}


def _child(args: argparse.Namespace) -> int:
    bodies: list[bytes] = pickle.loads(Path(args.bodies).read_bytes())  # our own temp file
    if args.what == "ceiling":
        print(json.dumps(ceiling(bodies, args.seconds)))
    else:
        print(json.dumps(stage_costs(bodies, args.spans, args.now)))
    return 0


def _in_child(what: str, bodies_file: Path, core: int | None, *extra: str) -> dict[str, float]:
    """Run `what` (ceiling | stages) in a fresh interpreter pinned like the server."""
    cmd = [*_pin(core), sys.executable, "-m", "benchmarks.ingest.run", what, "--bodies", str(bodies_file)]
    out = subprocess.run(
        [*cmd, *extra], cwd=ROOT, env=_env(), capture_output=True, text=True, check=True, timeout=600
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# ------------------------------------------------------------------------------------ server
def _pin(core: int | None) -> list[str]:
    return [] if core is None else ["taskset", "-c", str(core)]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(c.ENV_PREFIX)}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @classmethod
    def start(
        cls,
        workdir: Path,
        core: int | None,
        name: str,
        timeout: float = 60.0,
        extra_env: Sequence[str] = (),
    ) -> Server:
        port = _free_port()
        log = workdir / f"{name}.log"
        db = workdir / f"{name}.db"
        cmd = [*_pin(core), sys.executable, "-m", "observer.cli", "serve"]
        cmd += ["--host", "127.0.0.1", "--port", str(port), "--db", f"sqlite:///{db}"]
        env = _env(
            **{
                f"{c.ENV_PREFIX}SERVER__DECODE_WORKERS": "1",
                f"{c.ENV_PREFIX}SERVER__LOG_LEVEL": "warning",
                **dict(kv.split("=", 1) for kv in extra_env),
            }
        )
        with log.open("wb") as fh:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
        server = cls(proc, port, log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{server.url}/readyz", timeout=2) as resp:
                    if resp.status == 200:
                        return server
            except OSError:
                pass
            time.sleep(0.1)
        server.stop()
        raise RuntimeError(f"server not ready within {timeout}s: {log.read_text()[-2000:]}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def memory_kb(self) -> dict[str, int]:
        """VmHWM (peak) and VmRSS (now) of the server process, in kB."""
        out: dict[str, int] = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0])
        return out

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (/proc/<pid>/stat)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=30) as resp:
            return json.loads(resp.read())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ------------------------------------------------------------------------------------ client
@dataclass
class SendResult:
    seconds: float
    batches: int
    latencies: list[float] = field(default_factory=list)
    throttled: int = 0
    rejected_spans: int = 0


def send_all(port: int, bodies: Sequence[bytes], connections: int) -> SendResult:
    """POST every body once over `connections` keep-alive connections; 429/503 are retried."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    counter = itertools.count()
    lock = threading.Lock()
    result = SendResult(0.0, len(bodies))
    errors: list[BaseException] = []
    headers = {"Content-Type": c.CT_PROTOBUF}

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        lat: list[float] = []
        throttled = rejected = 0
        try:
            while (i := next(counter)) < len(bodies):
                while True:
                    t = time.perf_counter()
                    conn.request("POST", c.OTLP_TRACES_PATH, body=bodies[i], headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    if resp.status in (429, 503):
                        throttled += 1
                        time.sleep(0.01)
                        continue
                    if resp.status != 200:
                        raise RuntimeError(f"HTTP {resp.status}: {data[:300]!r}")
                    lat.append(time.perf_counter() - t)
                    answer = ExportTraceServiceResponse()
                    answer.ParseFromString(data)
                    rejected += answer.partial_success.rejected_spans
                    break
        except BaseException as exc:
            errors.append(exc)
        finally:
            conn.close()
            with lock:
                result.latencies.extend(lat)
                result.throttled += throttled
                result.rejected_spans += rejected

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    result.seconds = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return result


def _build(spec: WorkloadSpec, now: float) -> tuple[list[bytes], int]:
    bodies: list[bytes] = []
    requests = 0
    for body, n in batches(spec, now):
        bodies.append(body)
        requests += n
    return bodies, requests


def _total_requests(server: Server) -> int:
    data = server.get_json("/api/v1/tenants?window=3600")
    return sum(int(t["requests"]) for t in data["tenants"])


def _pct(xs: Sequence[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


# ------------------------------------------------------------------------------------ modes
def throughput(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    now = time.time()
    warm_spec = WorkloadSpec(args.warmup, args.spans, args.tenants, seed=1)
    spec = WorkloadSpec(args.batches, args.spans, args.tenants, seed=2)
    warm, warm_requests = _build(warm_spec, now)
    bodies, requests = _build(spec, now)
    bodies_file = workdir / "bodies.pickle"
    bodies_file.write_bytes(pickle.dumps(bodies))
    ceil = _in_child("ceiling", bodies_file, args.server_core, "--seconds", str(args.ceiling_seconds))
    stages = _in_child("stages", bodies_file, args.server_core, "--spans", str(args.spans), "--now", str(now))

    server = Server.start(workdir, args.server_core, "throughput", extra_env=args.server_env)
    try:
        if warm:
            send_all(server.port, warm, args.connections)
        cpu0 = server.cpu_seconds()
        sent = send_all(server.port, bodies, args.connections)
        cpu = server.cpu_seconds() - cpu0
        mem = server.memory_kb()
        counted = _total_requests(server)
    finally:
        server.stop()
    spans = len(bodies) * args.spans
    e2e = spans / sent.seconds
    return {
        "batches": len(bodies),
        "spans_per_batch": args.spans,
        "spans": spans,
        "requests": requests,
        "requests_counted_by_server": counted,
        "requests_expected_by_server": requests + warm_requests,
        "rejected_spans": sent.rejected_spans,
        "throttled_retries": sent.throttled,
        "connections": args.connections,
        "seconds": sent.seconds,
        "spans_per_second": e2e,
        "server_cpu_seconds": cpu,
        "server_cpu_utilization": cpu / sent.seconds,
        "server_cpu_us_per_span": 1e6 * cpu / spans,
        "batch_latency_p50_ms": 1000 * statistics.median(sent.latencies),
        "batch_latency_p99_ms": 1000 * _pct(sent.latencies, 0.99),
        "ceiling_spans_per_second": ceil["spans_per_second"],
        "ceiling_seconds": ceil["seconds"],
        "ratio_to_ceiling": e2e / ceil["spans_per_second"],
        "target_ratio": TARGET_RATIO,
        "server_peak_rss_mb": mem.get("VmHWM", 0) / 1024,
        "stage_cpu_us_per_span": stages,
        "pipeline_cpu_us_per_span": sum(stages[k] for k in PIPELINE),
    }


def rss(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    now = time.time()
    requests_per_batch_floor = args.spans // 3
    n_batches = max(1, -(-args.rss_tenants // requests_per_batch_floor))
    spec = WorkloadSpec(n_batches, args.spans, args.rss_tenants, seed=3)
    bodies, requests = _build(spec, now)
    tenants = min(args.rss_tenants, requests)
    server = Server.start(workdir, args.server_core, "rss", extra_env=args.server_env)
    try:
        idle = server.memory_kb()
        sent = send_all(server.port, bodies, args.connections)
        counted = _total_requests(server)
        mem = server.memory_kb()
    finally:
        server.stop()
    return {
        "tenants": tenants,
        "batches": len(bodies),
        "spans": len(bodies) * args.spans,
        "requests": requests,
        "requests_counted_by_server": counted,
        "rejected_spans": sent.rejected_spans,
        "idle_rss_mb": idle.get("VmRSS", 0) / 1024,
        "peak_rss_mb": mem.get("VmHWM", 0) / 1024,
        "rss_after_mb": mem.get("VmRSS", 0) / 1024,
        "target_mb": TARGET_RSS_MB,
    }


def _machine() -> dict[str, Any]:
    from google.protobuf import __version__ as pb_version  # type: ignore[import-untyped]
    from google.protobuf.internal import api_implementation  # type: ignore[import-untyped]

    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "python": platform.python_version(),
        "protobuf": f"{pb_version} ({api_implementation.Type()})",
        "cpu": cpu,
        "cores": os.cpu_count(),
    }


def table(result: dict[str, Any]) -> str:
    rows = ["| measure | value | target |", "| --- | ---: | ---: |"]
    t = result.get("throughput")
    if t:
        rows += [
            f"| end to end over HTTP (spans/s) | {t['spans_per_second']:,.0f} | |",
            f"| ceiling: parse_and_walk (spans/s) | {t['ceiling_spans_per_second']:,.0f} | |",
            f"| ratio to ceiling | {t['ratio_to_ceiling']:.2f} | ≥ {TARGET_RATIO} |",
            f"| server CPU per span (µs) / core busy | {t['server_cpu_us_per_span']:.1f} / "
            f"{t['server_cpu_utilization']:.0%} | |",
            f"| batch latency p50 / p99 (ms) | {t['batch_latency_p50_ms']:.1f} / "
            f"{t['batch_latency_p99_ms']:.1f} | |",
        ]
    r = result.get("rss")
    if r:
        rows.append(
            f"| peak RSS at {r['tenants']:,} tenants (MB) | {r['peak_rss_mb']:.0f} | ≤ {TARGET_RSS_MB:.0f} |"
        )
    if t:
        e2e = t["server_cpu_us_per_span"] or float("nan")  # 0 when the run is under one clock tick
        rows += ["", "| where the time goes (CPU µs per span, one thread) | µs | share of server |"]
        rows.append("| --- | ---: | ---: |")
        for name, us in t["stage_cpu_us_per_span"].items():
            share = f"{us / e2e:.0%}" if name in PIPELINE else ""
            rows.append(f"| {name} | {us:.1f} | {share} |")
        rest = e2e - t["pipeline_cpu_us_per_span"]
        rows.append(
            f"| HTTP, ASGI, asyncio, threads (server total − stages) | {rest:.1f} | {rest / e2e:.0%} |"
        )
        rows.append(f"| server total (end to end) | {e2e:.1f} | 100% |")
    return "\n".join(rows)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.client_core is not None:
        os.sched_setaffinity(0, {args.client_core})
    result: dict[str, Any] = {
        "command": "python -m benchmarks.ingest.run " + " ".join(args.argv),
        "machine": _machine(),
        "server_core": args.server_core,
        "client_core": args.client_core,
    }
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        workdir = Path(tmp)
        if not args.skip_throughput:
            result["throughput"] = throughput(args, workdir)
        if args.rss_tenants > 0:
            result["rss"] = rss(args, workdir)
    return result


def _env_pair(text: str) -> str:
    name, sep, _value = text.partition("=")
    if not sep or not name.startswith(c.ENV_PREFIX):
        raise argparse.ArgumentTypeError(f"expected {c.ENV_PREFIX}NAME=VALUE, got {text!r}")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["ceiling"], ["stages"]):
        cp = argparse.ArgumentParser(prog=f"ingest-bench {argv[0]}")
        cp.add_argument("--bodies", required=True)
        cp.add_argument("--seconds", type=float, default=2.0)
        cp.add_argument("--spans", type=int, default=512)
        cp.add_argument("--now", type=float, default=0.0)
        return _child(cp.parse_args(argv[1:], argparse.Namespace(what=argv[0])))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, default=200, help="timed batches (distinct bodies)")
    p.add_argument("--warmup", type=int, default=10, help="batches sent before timing")
    p.add_argument("--spans", type=int, default=512, help="spans per batch")
    p.add_argument("--tenants", type=int, default=50, help="tenants in the throughput workload")
    p.add_argument(
        "--connections",
        type=int,
        default=10,
        help="concurrent keep-alive connections (collector default: 10)",
    )
    p.add_argument("--ceiling-seconds", type=float, default=3.0)
    p.add_argument("--rss-tenants", type=int, default=10_000, help="0 skips the RSS mode")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--server-core", type=int, default=0, help="-1: do not pin")
    p.add_argument("--client-core", type=int, default=1, help="-1: do not pin")
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        type=_env_pair,
        help="extra setting for the server, e.g. PD_OBSERVER_STORE__GROUP_COMMIT_MAX_WAIT_MS=0 (repeatable)",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    args.argv = argv
    args.server_core = None if args.server_core < 0 else args.server_core
    args.client_core = None if args.client_core < 0 else args.client_core
    result = run(args)
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nresults written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
