"""`benchmarks.control.ceiling`: the one-shot oracle on the twin (its refusals: test_control_bench_smoke)."""

from __future__ import annotations

from benchmarks.control.ceiling import ceiling, decode_for


def test_the_oracle_sets_the_split_once_at_onset_plus_delay() -> None:
    # Mooncake synthetic starts 4:4; the oracle moves to 7:1 at 15 s and holds
    (cell,) = ceiling(
        "mooncake-synthetic",
        phase="mooncake-synthetic",
        delays=[15.0],
        prefill=[7],
        thresholds=[None],
        duration=120.0,
        decode=1,
    )
    assert (cell.prefill, cell.decode, cell.threshold) == (7, 1, None)
    assert cell.result.final_replicas == {"prefill": 7, "decode": 1}
    # without --decode, decode keeps its start size cut to what the budget of 14 leaves
    assert (decode_for(7, 4), decode_for(12, 4), decode_for(13, 4)) == (4, 2, 1)
