"""`benchmarks.control.ceiling`: the one-shot oracle on the twin and its command's refusals."""

from __future__ import annotations

import pytest

from benchmarks.control.ceiling import ceiling, decode_for, main


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


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["mooncake-synthetic", "--phase", "mooncake-synthetic", "--decode", "0"], "--decode out of 1..10"),
        (
            ["mooncake-synthetic", "--phase", "mooncake-synthetic", "--prefill", "10", "--decode", "5"],
            "exceed the GPU budget",
        ),
        (["steady", "--phase", "burst"], "has no phase 'burst'"),
        (["steady", "--phase", "steady", "--prefill", "11"], "--prefill out of 1..10"),
    ],
)
def test_bad_arguments_are_refused_before_any_run(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
