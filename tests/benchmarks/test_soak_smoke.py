"""Smoke run of `python -m benchmarks.soak`: a few simulated minutes, every churn and every probe."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_soak_runs_with_every_kind_of_churn(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    # six simulated minutes (~9 s): pods replaced every minute, SLOs and API reads every two
    cmd = [sys.executable, "-m", "benchmarks.soak", "--hours", "0.1", "--sample-minutes", "2"]
    cmd += ["--warmup-hours", "0", "--pod-replace-minutes", "1", "--slo-minutes", "2", "--query-minutes", "2"]
    cmd += ["--tracemalloc-hours", "0.03", "--no-kv-events", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| sim h | wall s | RSS MiB |" in proc.stdout

    result = json.loads(out.read_text())
    assert result["requests"] > 500
    assert result["rejected_spans"] == 0
    assert [s["sim_hours"] for s in result["samples"]] == pytest.approx([0, 2 / 60, 4 / 60, 0.1], abs=0.01)
    assert result["samples"][-1]["metrics_series"] > 100  # the API (and /metrics) were read
    assert result["tracemalloc_top_growth"]  # traced over the last few minutes
    sizes = result["largest_containers_at_end"]
    assert any(path.startswith("pipeline.") for path in sizes)
    assert len(out.read_bytes()) < 20_000  # small enough to keep under benchmarks/results
