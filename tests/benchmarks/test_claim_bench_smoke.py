"""`benchmarks.claim_bench` runs (on SQLite here) and reports both modes; with a live replica
holding every row, its claims take nothing over (the bench asserts it)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from benchmarks import claim_bench


def test_claim_bench_reports_both_modes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'claim.db'}"
    monkeypatch.setattr(sys, "argv", ["claim_bench", "--url", url, "--rows", "2500", "--claims", "3"])
    claim_bench.main()
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "claim with 2500 live rows, sweep=False",
        "claim with 2500 live rows, sweep=True",
    ]
    assert all(line.endswith(" ms") for line in lines)
