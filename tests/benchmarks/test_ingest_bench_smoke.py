"""Smoke run of `python -m benchmarks.ingest.run`: tiny sizes, real server, no timing assertion."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_ingest_benchmark_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "ingest.json"
    cmd = [sys.executable, "-m", "benchmarks.ingest.run", "--batches", "8", "--warmup", "1"]
    cmd += ["--spans", "256", "--tenants", "5", "--connections", "2", "--ceiling-seconds", "0.2"]
    cmd += ["--rss-tenants", "40", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| ratio to ceiling |" in proc.stdout
    assert "| peak RSS at 40 tenants (MB) |" in proc.stdout

    result = json.loads(out.read_text())
    t = result["throughput"]
    assert t["spans"] == 8 * 256
    assert t["rejected_spans"] == 0
    # every request (warm-up included) reached the windows exactly once: P/D pairs counted once
    assert t["requests_counted_by_server"] == t["requests_expected_by_server"]
    assert t["requests_expected_by_server"] < (8 + 1) * 256  # some P/D traces: fewer requests than spans
    assert t["spans_per_second"] > 0
    assert t["ceiling_spans_per_second"] > 0
    assert t["ratio_to_ceiling"] == pytest.approx(t["spans_per_second"] / t["ceiling_spans_per_second"])
    assert t["server_peak_rss_mb"] > 10
    assert t["server_cpu_us_per_span"] > 0
    stages = t["stage_cpu_us_per_span"]
    assert all(us > 0 for us in stages.values()), stages
    assert t["pipeline_cpu_us_per_span"] < sum(stages.values())
    assert "| server total (end to end) |" in proc.stdout

    r = result["rss"]
    assert r["tenants"] == 40
    assert r["requests_counted_by_server"] == r["requests"]
    assert r["peak_rss_mb"] >= r["idle_rss_mb"] > 10
