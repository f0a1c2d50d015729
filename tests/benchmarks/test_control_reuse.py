"""`benchmarks.control.reuse`: LRU stack distances of prefix blocks against pool cache sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.control.reuse import Reuse, beyond, main, stack_distances


def test_stack_distance_counts_distinct_blocks_since_the_previous_use() -> None:
    reuses = stack_distances(
        [
            (0.0, [0, 1, 2]),
            (10.0, [3, 4, 3]),  # 3 again after {4}: distance 1
            (70.0, [0, 1]),  # 0 after {1, 2, 3, 4}: 4; then 1 after {2, 3, 4, 0}: 4
            (80.0, [0, 0]),  # 0 after {1}: 1; then 0 after nothing: 0
        ]
    )
    assert reuses == [Reuse(10.0, 1), Reuse(70.0, 4), Reuse(70.0, 4), Reuse(80.0, 1), Reuse(80.0, 0)]
    assert beyond(reuses, 3, 2) == (70.0, [0, 2])
    assert beyond(reuses, 4, 2) == (None, [0, 0])


def test_the_command_reports_per_pool_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        {"timestamp": 0, "input_length": 2048, "output_length": 1, "hash_ids": [0, 1, 2, 3]},
        {"timestamp": 30_000, "input_length": 2048, "output_length": 1, "hash_ids": [4, 5, 6, 7]},
        {"timestamp": 65_000, "input_length": 2048, "output_length": 1, "hash_ids": [0, 1, 2, 3]},
    ]
    trace = tmp_path / "t.jsonl"
    trace.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main([str(trace), "--pods", "1,2", "--blocks", "4", "--minutes", "2"]) == 0
    out = capsys.readouterr()
    assert "3 requests, 4 block reuses" in out.err
    lines = out.out.splitlines()
    one, two = lines[1].split(), lines[2].split()
    # each reuse of 0..3 comes after 7 other distinct blocks: beyond one pod's 4, within two's 8
    assert one[:4] == ["1", "4", "65", "s"]
    assert one[-2:] == ["0", "4"]
    assert two[:3] == ["2", "8", "never"]
