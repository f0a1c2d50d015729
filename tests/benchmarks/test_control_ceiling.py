"""The reactive-ceiling oracle of the control benchmark (`python -m benchmarks.control.ceiling`):
it acts when told, within the budget, and the cold start shows in its attainment."""

from __future__ import annotations

import pytest

from benchmarks.control.ceiling import Cell, Oracle, ceiling, decode_for, main, onset_of, report
from benchmarks.control.harness import POOL, START, Meter, RunResult, run
from observer import conventions as c
from simulator.scenarios import Twin

QUICK = 150.0  # prefill-burst at a half of its duration: the burst from 50 s to 100 s


def _result(ttft: float, itl: float, gpu_hours: float, policy: str = "oracle") -> RunResult:
    return RunResult("prefill-burst", policy, 100, ttft, itl, gpu_hours, 0, 0, 0, {}, 0.0)


def test_oracle_acts_once_at_onset_plus_delay_within_the_budget() -> None:
    oracle = Oracle("prefill-burst", 15.0, 10, 65536)
    seen: list[tuple[float, int, int, int]] = []

    def probe(twin: Twin, t: float, meter: Meter, entry: object) -> None:
        oracle(twin, t, meter, None)
        st = twin.actuator.get_state().pools[POOL]
        rep = st.replicas
        seen.append((t - START, rep[c.ROLE_PREFILL].desired, rep[c.ROLE_DECODE].desired, st.decider_active))

    run("prefill-burst", "static", duration=QUICK, interval=1.0, probe=probe)
    act = onset_of("prefill-burst", "prefill-burst", QUICK) + 15.0
    assert act == pytest.approx(65.0)
    assert oracle.acted_at is not None
    assert oracle.acted_at - START == pytest.approx(act)
    assert {s[1:] for s in seen if s[0] < act} == {(2, 6, 512)}  # the start fleet and threshold
    # budget 14: decode gives way; the threshold routes after the 30 s EPP restart
    assert {s[1:] for s in seen if act <= s[0] < act + 30} == {(10, 4, 512)}
    assert {s[1:] for s in seen if s[0] >= act + 30} == {(10, 4, 65536)}
    assert oracle.decode == 4


def test_decode_keeps_its_start_size_unless_the_budget_needs_it() -> None:
    assert decode_for(4, 6) == 6
    assert decode_for(8, 6) == 6
    assert decode_for(10, 6) == 4
    assert decode_for(13, 6, budget=14) == 1


def test_acting_before_the_burst_beats_any_reaction_after_it() -> None:
    cells = ceiling(
        "prefill-burst", delays=(-90.0, 0.0, 15.0), prefill=(8,), thresholds=(None, 65536), duration=QUICK
    )
    ahead, at_onset, late = (cell.result.ttft_attainment for cell in cells)
    assert [cell.delay for cell in cells] == [-90.0, 0.0, 15.0]
    assert ahead > 0.95  # pods ready when the burst comes: the hindsight static split's case
    assert ahead > at_onset + 0.05  # the cold start and the EPP restart cost what a reaction cannot win back
    assert at_onset >= late  # and every second of detection costs more
    assert all(cell.prefill == 8 and cell.decode == 6 for cell in cells)


def test_verdict_says_whether_a_reaction_could_meet_the_static_split() -> None:
    cells = [
        Cell(-90.0, 6, 6, None, _result(0.998, 1.0, 1.0)),
        Cell(0.0, 4, 6, 65536, _result(0.89, 0.98, 0.8)),
    ]
    ours = _result(0.74, 0.999, 0.94, "pd-observer")
    out = report("prefill-burst", "prefill-burst", cells, ours, _result(0.998, 1.0, 0.92, "static 6:5"))
    assert out[2].startswith("| onset − 90 s | 6:6 | — | 0.998 |")
    assert out[3].startswith("| onset | 4:6 | 65536 | 0.890 | 0.980 |")
    assert "no reaction in this grid meets this row" in out[-1]
    assert "best 0.890 / 0.980" in out[-1]
    out = report("prefill-burst", "prefill-burst", cells, ours, _result(0.893, 0.97, 0.92, "static 3:5"))
    assert "a reactive policy could meet this row" in out[-1]


def test_bad_input_is_one_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in (
        (["steady"], "has no phase 'prefill-burst' (its phases: steady)"),
        (["prefill-burst", "--delays", "500"], "act after the end"),
        (["prefill-burst", "--prefill", "14"], "--prefill out of 1..10"),
        (["prefill-burst", "--thresholds", "0"], "positive token count"),
    ):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err
