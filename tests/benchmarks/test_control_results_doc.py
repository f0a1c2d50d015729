"""The control tables in docs/performance.md are the ones `benchmarks.control.run` and
`benchmarks.control.seeds` render from the kept JSON (benchmarks/results/control.json and
control-seeds.json): a rerun that updates one must update the other."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.control import seeds
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


def test_docs_seed_table_is_the_kept_seed_results() -> None:
    doc = json.loads((ROOT / "benchmarks/results/control-seeds.json").read_text(encoding="utf-8"))
    assert doc["quick"] is False
    assert doc["variant"] == "default"
    assert doc["scenarios"] == list(SCENARIOS)
    runs = seeds.from_json(doc)
    assert [r.seed for r in runs] == [0, 1, 2, 3, 4]
    page = (ROOT / "docs/performance.md").read_text(encoding="utf-8")
    assert seeds.table(runs, doc["scenarios"]) in page, "docs/performance.md's seed table differs"
    assert f"Cells met of 24: {seeds.per_seed(runs)}." in page
    # seed 0 is the main table's run
    main = json.loads((ROOT / "benchmarks/results/control.json").read_text(encoding="utf-8"))
    zero = runs[0]
    for scenario, rows in main["results"].items():
        assert zero.ours[scenario].as_json() | {"wall_seconds": 0} == rows[-1] | {"wall_seconds": 0}
        assert zero.verdicts[scenario] == {k.split()[0]: v for k, v in main["verdicts"][scenario].items()}
        assert zero.static[scenario] == rows[0]["policy"]
