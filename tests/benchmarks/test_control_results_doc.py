"""The control table in docs/performance.md is the one `benchmarks.control.run` renders from the
kept JSON (benchmarks/results/control.json): a rerun that updates one must update the other."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.control.harness import RunResult
from benchmarks.control.run import matched_gpus, table, verdict
from simulator.scenarios import SCENARIOS

ROOT = Path(__file__).resolve().parents[2]


def test_docs_table_is_the_kept_results() -> None:
    doc = json.loads((ROOT / "benchmarks/results/control.json").read_text(encoding="utf-8"))
    assert doc["quick"] is False
    assert doc["variant"] == "default"
    # the JSON is written with sorted keys; the table runs in the scenarios' order
    results = {k: [RunResult(**r) for r in doc["results"][k]] for k in SCENARIOS}
    for scenario, rows in results.items():
        assert doc["verdicts"][scenario] == {r.policy: verdict(rows[-1], r) for r in rows[:-1]}
        static, ours = rows[0], rows[-1]
        p, d = (int(n) for n in static.policy.removeprefix("static ").split(":"))
        assert p + d == matched_gpus(scenario, ours, None), f"{scenario}: static at another GPU count"
        assert static.gpu_hours >= ours.gpu_hours - 1e-9
    rendered = table(results)
    page = (ROOT / "docs/performance.md").read_text(encoding="utf-8")
    assert rendered in page, "docs/performance.md's control table differs from control.json"
