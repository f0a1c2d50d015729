from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from simulator.fleet import EVENT_PHASE, MemorySink
from simulator.scenarios import SCENARIOS, build_scenario, scenario_names


@pytest.mark.parametrize("name", scenario_names())
def test_every_scenario_runs_and_marks_its_phases(name: str, mooncake_dir: Path) -> None:
    sink = MemorySink()
    twin = build_scenario(name, sink=sink, seed=0, duration=90.0, start=1_000.0, mooncake_dir=mooncake_dir)
    twin.run()
    assert twin.now == pytest.approx(1_090.0)
    phases = [e.detail["phase"] for e in sink.events if e.kind == EVENT_PHASE]
    assert phases == [p.name for p in SCENARIOS[name].phases]
    assert sink.requests
    assert all(1_000.0 <= r.arrival <= r.decode.first_token <= r.decode.finished for r in sink.requests)
    assert sink.samples
    assert {p.pod for p in sink.samples[-1][1]} == {p.name for p in twin.fleet.all_pods()}


def test_unknown_scenario_and_bad_duration() -> None:
    with pytest.raises(ValueError, match="unknown scenario"):
        build_scenario("nope", sink=MemorySink())
    with pytest.raises(ValueError, match="duration"):
        build_scenario("steady", sink=MemorySink(), duration=0)


def test_prefill_burst_is_steady_until_its_onset() -> None:
    # docs/performance.md ("Where the goal stands", A): a policy that sees only the past cannot
    # tell steady from prefill-burst before the burst, because both send the same requests
    # until then (each tenant's requests come from a stream seeded by its name)
    def before(name: str, until: float) -> list[object]:
        spec = SCENARIOS[name]
        stream = spec.workload(spec.default_duration, 0, 512, None)
        return list(itertools.takewhile(lambda r: r.arrival < until, stream))

    burst = SCENARIOS["prefill-burst"]
    onset = next(p.at for p in burst.phases if p.name == "prefill-burst") * burst.default_duration
    assert onset == pytest.approx(100.0)
    steady = before("steady", onset)
    assert len(steady) > 400
    assert before("prefill-burst", onset) == steady
    # and they differ right after it
    assert before("prefill-burst", onset + 10.0) != before("steady", onset + 10.0)
