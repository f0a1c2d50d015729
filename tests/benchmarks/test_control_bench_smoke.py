"""Smoke run of the control-loop benchmark (`python -m benchmarks.control.run --quick`) on two
scenarios: every policy runs, the table and the JSON have one row per policy."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from autoscaler.capacity import spill_scale
from autoscaler.ports import AuditEntry
from benchmarks.control import variant
from benchmarks.control.ceiling import main as ceiling_main
from benchmarks.control.forecast_cases import main as forecast_cases_main
from benchmarks.control.harness import POOL, START, TTFT_SLO, Meter, RunResult, run
from benchmarks.control.reuse import main as reuse_main
from benchmarks.control.run import main, matched_gpus
from benchmarks.control.seeds import main as seeds_main
from benchmarks.control.trace import main as trace_main
from observer import conventions as c
from simulator.events import CompletedRequest
from simulator.scenarios import Twin


def test_quick_benchmark_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "control.json"
    assert main(["--quick", "--scenarios", "steady,prefill-burst", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| scenario | policy |" in table
    doc = json.loads(out.read_text())
    for scenario in ("steady", "prefill-burst"):
        rows = doc["results"][scenario]
        assert [r["policy"].split()[0] for r in rows] == ["static", "saturation", "dynamo", "pd-observer"]
        for r in rows:
            assert 0.0 <= r["ttft_attainment"] <= 1.0
            assert r["gpu_hours"] > 0
        assert set(doc["verdicts"][scenario]) == {r["policy"] for r in rows[:-1]}


def test_the_table_runs_a_variant_of_pd_observer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # quick steady is 200 s: the default warm start (120 s) holds the start fleet's GPUs
    # (decode's surplus serving as prefill), a 0 s hold lets it shed them at once
    out = tmp_path / "control.json"
    argv = ["--quick", "--scenarios", "steady", "--out", str(out)]
    assert main(argv) == 0
    default = json.loads(out.read_text())
    assert main([*argv, "--warm-hold", "0", "--tune", "cache_spill_target=none"]) == 0
    assert "pd-observer variant: warm_hold=0 cache_spill_target=none" in capsys.readouterr().err
    var = json.loads(out.read_text())
    assert (default["variant"], var["variant"]) == ("default", "warm_hold=0 cache_spill_target=none")
    ours = [d["results"]["steady"][-1] for d in (default, var)]
    assert ours[1]["gpu_hours"] < ours[0]["gpu_hours"] - 0.05


def test_the_static_column_never_has_fewer_gpu_hours_than_pd_observer() -> None:
    def gpus(gpu_hours: float) -> int:
        ours = RunResult("steady", "pd-observer", 1, 1.0, 1.0, gpu_hours, 0, 0, 0, {}, 0.0)
        return matched_gpus("steady", ours, 600.0)

    assert gpus(5 * 600.0 / 3600.0) == 5  # exactly five GPUs on average
    assert gpus(4.2 * 600.0 / 3600.0) == 5  # rounded up, not to the nearest
    assert gpus(5.05 * 600.0 / 3600.0) == 6  # 1 % over five: six
    assert gpus(0.5 * 600.0 / 3600.0) == 2  # a split needs one of each


def test_unknown_scenario_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--scenarios", "nope"])
    assert exc.value.code == 2
    assert "unknown scenario(s): nope" in capsys.readouterr().err


def test_static_split_is_exact_and_pd_observer_scales() -> None:
    st = run("steady", "static", duration=200.0, static=(3, 2))
    assert st.final_replicas == {"prefill": 3, "decode": 2}
    assert st.scaling_actions == 0
    assert st.gpu_hours == pytest.approx(5 * 200.0 / 3600.0)
    ours = run("prefill-burst", "pd-observer", duration=900.0)
    assert ours.scaling_actions > 0
    assert ours.final_replicas["prefill"] > 2


def test_requests_in_flight_at_the_end_are_followed_to_their_first_token() -> None:
    done: list[CompletedRequest] = []
    r = run("steady", "static", duration=200.0, static=(3, 2), listen=done.append)
    assert len(done) == r.requests  # every request that arrived has completed
    assert any(x.decode.finished > START + 200.0 for x in done)  # some of them after the end
    assert r.gpu_hours == pytest.approx(5 * 200.0 / 3600.0)  # the drain costs no GPU time
    good = sum(x.decode.first_token - (x.prefill or x.decode).arrival <= TTFT_SLO for x in done)
    assert r.ttft_attainment == good / len(done)


def test_dynamo_like_planner_first_adjusts_one_interval_after_start() -> None:
    # as Dynamo's planner loop: the interval clock starts at start, the first adjustment observes
    # a full interval of traffic (steady starts at 2:6 and needs less)
    seen: list[tuple[float, int, int]] = []

    def probe(twin: Twin, t: float, meter: Meter, entry: AuditEntry | None) -> None:
        st = twin.actuator.get_state().pools[POOL]
        seen.append((t - START, st.replicas[c.ROLE_PREFILL].desired, st.replicas[c.ROLE_DECODE].desired))

    run("steady", "dynamo", duration=300.0, probe=probe)
    first = seen[0][1:]
    assert all(r[1:] == first for r in seen if r[0] < 180.0)
    assert any(r[1:] != first for r in seen if r[0] >= 180.0)


def test_trace_misses_breakdown_counts_what_the_meter_counts(capsys: pytest.CaptureFixture[str]) -> None:
    assert trace_main(["prefill-burst", "--duration", "150", "--every", "1000", "--misses"]) == 0
    out = capsys.readouterr()
    first = next(line for line in out.out.splitlines() if line.startswith("misses "))
    m = re.match(r"misses (\d+) of (\d+) completed \(\+(\d+) unfinished", first)
    assert m is not None
    miss, done, unfinished = map(int, m.groups())
    attainment = float(re.search(r"ttft_attainment=([0-9.]+)", out.err).group(1))  # type: ignore[union-attr]
    assert miss > 0  # the burst's first seconds always miss
    assert abs((done - miss) / (done + unfinished) - attainment) < 1e-9
    by_arrival = next(line for line in out.out.splitlines() if line.startswith("by arrival"))
    assert sum(int(x.split(":")[1]) for x in by_arrival.split(") ")[1].split()) == miss


def test_trace_takes_the_seed_run_takes(capsys: pytest.CaptureFixture[str]) -> None:
    def result(*extra: str) -> str:
        assert trace_main(["prefill-burst", "--duration", "150", "--every", "1000", *extra]) == 0
        return capsys.readouterr().err.split("wall_seconds")[0]  # the run's figures, not its time

    zero = result()
    assert "requests=" in zero
    assert result("--seed", "0") == zero
    assert result("--seed", "1") != zero


def test_seeds_counts_the_verdicts_run_gives_per_seed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "seeds.json"
    argv = ["--seeds", "0,1", "--quick", "--scenarios", "prefill-burst", "--jobs", "1"]
    assert seeds_main([*argv, "--out", str(out)]) == 0
    table = capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert set(doc["seeds"]) == {"0", "1"}
    for seed in ("0", "1"):
        single = tmp_path / f"run{seed}.json"
        assert main(["--quick", "--scenarios", "prefill-burst", "--seed", seed, "--out", str(single)]) == 0
        ran = json.loads(single.read_text())
        by_kind = {k.split()[0]: v for k, v in ran["verdicts"]["prefill-burst"].items()}
        entry = doc["seeds"][seed]
        assert entry["verdicts"]["prefill-burst"] == by_kind
        assert entry["cells_met"] == list(by_kind.values()).count("≥")
        assert (
            entry["pd_observer"]["prefill-burst"]["ttft_attainment"]
            == ran["results"]["prefill-burst"][-1]["ttft_attainment"]
        )
    met = {
        k: sum(doc["seeds"][s]["verdicts"]["prefill-burst"][k] == "≥" for s in ("0", "1")) for k in by_kind
    }
    row = next(line for line in table.splitlines() if line.startswith("| prefill-burst |"))
    assert row.endswith(" | ".join(f"{met[k]} of 2" for k in ("static", "saturation", "dynamo")) + " |")
    assert "cells met of 3: seed 0: " in table


def test_trace_tiers_reads_the_spill_and_its_lambda(capsys: pytest.CaptureFixture[str]) -> None:
    # static 3:1 on the Mooncake synthetic trace spills to disk once its working set outgrows
    # three pods' HBM + DRAM (~2 min in); λ is what the cache-residency floor learns from it
    argv = ["mooncake-synthetic", "--policy", "static", "--static", "3:1", "--duration", "400"]
    assert trace_main([*argv, "--every", "1000", "--tiers"]) == 0
    out = capsys.readouterr().out.splitlines()
    run_line = next(line for line in out if line.startswith("disk share of cached tokens over the run"))
    m = re.search(r"run ([0-9.]+) \(λ = ([0-9.]+) at 3 prefill\)", run_line)
    assert m is not None
    share, lam = map(float, m.groups())
    assert 0.05 < share < 0.5
    assert lam == pytest.approx(spill_scale(3, share), abs=0.01)
    per = next(line for line in out if line.startswith("by arrival")).split(") ")[1].split()
    assert per[0] == "0:0.000"  # cold caches: nothing on disk in the first two minutes


def test_tune_replaces_pd_observers_pool_config() -> None:
    on = run("mooncake-synthetic", "pd-observer", duration=500)
    off = run("mooncake-synthetic", "pd-observer", duration=500, tune={"prefill_wait_share": None})
    assert on.scaling_actions != off.scaling_actions or on.gpu_hours != off.gpu_hours
    with pytest.raises(TypeError):
        run("steady", "pd-observer", duration=30, tune={"no_such_field": 1})


def test_trace_shows_the_decider_changes_and_takes_tune_and_warm_hold(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # the burst overflows the two ready prefill pods: the lever is raised (an EPP restart)
    assert trace_main(["prefill-burst", "--duration", "200"]) == 0
    default = capsys.readouterr()
    assert re.search(r" thr:512->\d+\[prefill_overflow", default.out)
    # --tune reaches pd-observer's PoolConfig (a lower target utilization sizes differently);
    # --warm-hold 0 lets the controller shrink the idle start fleet at the first tick
    argv = ["prefill-burst", "--duration", "200", "--warm-hold", "0", "--tune", "target_utilization=0.5"]
    assert trace_main(argv) == 0
    tuned = capsys.readouterr()
    assert tuned.out != default.out
    first = tuned.out.splitlines()[0]
    assert re.search(r"d:6->[1-5]\[", first), first  # scaled decode down at the first tick


TRACE = ["trace", "steady"]
RUN = ["run", "--scenarios", "steady"]


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        ([*TRACE, "--tune", "nope=1"], "not a PoolConfig field: nope"),
        ([*TRACE, "--tune", "cache_spill_target"], "FIELD=VALUE"),
        ([*TRACE, "--tune", "ttft_target_seconds=x"], "not a number"),
        ([*TRACE, "--tune", "name=3"], "not a number field of PoolConfig: name"),
        (
            [*TRACE, "--tune", "ttft_target_seconds=none"],
            "cannot be turned off ('none'): ttft_target_seconds",
        ),
        ([*TRACE, "--policy", "hpa"], "invalid choice: 'hpa'"),
        ([*TRACE, "--policy", "static", "--static", "6-1"], "--static takes P:D"),
        ([*TRACE, "--policy", "static", "--static", "0:4"], "two counts in 1..10"),
        ([*TRACE, "--policy", "static", "--static", "6:x"], "got '6:x'"),
        ([*TRACE, "--static", "6:1"], "--static only applies to --policy static"),
        ([*TRACE, "--every", "0"], "--every must be ≥ 1"),
        ([*RUN, "--tune", "nope=1"], "not a PoolConfig field: nope"),
        (
            [*RUN, "--tune", "warm_shift_decode_spare=1.5"],
            "whole number is needed for: warm_shift_decode_spare",
        ),
        ([*RUN, "--warm-hold", "-5"], "--warm-hold must be ≥ 0"),
        (["run", "--scenarios", ","], "--scenarios names no scenario"),
        # the bounds a config file has: no variant runs a policy no configuration could
        (
            [*RUN, "--tune", "target_utilization=-1"],
            "--tune target_utilization=-1: Input should be greater than 0",
        ),
        (
            [*RUN, "--tune", "cache_spill_target=5"],
            "--tune cache_spill_target=5: Input should be less than 1",
        ),
        ([*TRACE, "--tune", "scale_down_window_seconds=-100"], "scale_down_window_seconds=-100"),
        ([*TRACE, "--duration", "-5"], "argument --duration: must be > 0"),
        (
            ["ceiling", "mooncake-synthetic", "--phase", "mooncake-synthetic", "--decode", "0"],
            "--decode out of 1..10",
        ),
        (
            [
                "ceiling",
                "mooncake-synthetic",
                "--phase",
                "mooncake-synthetic",
                "--prefill",
                "10",
                "--decode",
                "5",
            ],
            "exceed the GPU budget",
        ),
        (["ceiling", "steady", "--phase", "burst"], "has no phase 'burst'"),
        (["ceiling", "steady", "--phase", "steady", "--prefill", "11"], "--prefill out of 1..10"),
        (["reuse", "nope"], "unknown Mooncake trace 'nope'"),
        (["reuse", "/no/such.jsonl"], "Mooncake trace not found"),
        (["reuse", "synthetic", "--pods", "0,2"], "expected numbers ≥ 1"),
        (["reuse", "synthetic", "--blocks", "x"], "comma-separated whole numbers"),
        (["seeds", "--seeds", "a-b"], "--seeds takes a range (0-4) or a list (0,2,5)"),
        (["seeds", "--seeds", ","], "--seeds names no seed"),
        (["seeds", "--scenarios", "nope"], "unknown scenario(s): nope"),
        (["seeds", "--jobs", "0"], "--jobs must be ≥ 1"),
    ],
)
def test_benchmark_commands_refuse_bad_arguments_in_one_line(
    argv: list[str], why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = {
        "trace": trace_main,
        "run": main,
        "ceiling": ceiling_main,
        "reuse": reuse_main,
        "seeds": seeds_main,
    }[argv[0]]
    with pytest.raises(SystemExit) as exc:
        cli(argv[1:])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert why in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("cli", "later_line"),
    [
        (main, "`--quick` shortens every scenario"),
        (trace_main, "python -m benchmarks.control.trace story --misses"),
        (seeds_main, "Each seed is one `benchmarks.control.run`"),
    ],
)
def test_benchmark_help_shows_the_whole_description(
    cli: Callable[[list[str]], int], later_line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # argparse used to get only the docstring's first line, cut mid-sentence
    with pytest.raises(SystemExit) as exc:
        cli(["--help"])
    assert exc.value.code == 0
    assert later_line in capsys.readouterr().out


def test_harness_refuses_an_unknown_policy_before_running() -> None:
    expected = "unknown policy 'hpa'; one of static, saturation, dynamo, pd-observer"
    with pytest.raises(ValueError, match=re.escape(expected)):
        run("steady", "hpa")


def test_trace_sizes_gives_the_work_per_request_and_both_floors(capsys: pytest.CaptureFixture[str]) -> None:
    assert trace_main(["mooncake-conversation", "--duration", "180", "--every", "1000", "--sizes"]) == 0
    out = capsys.readouterr().out.splitlines()
    head = out.index(next(line for line in out if line.startswith("prefill work per 60 s")))
    rows = [re.match(r"(\d+): ([0-9.]+) / ([0-9.]+) -> (\d+), (\d+)$", line) for line in out[head + 1 :]]
    assert [int(m.group(1)) for m in rows if m] == [0, 60, 120]
    for m in rows:
        assert m is not None
        mean, biased = float(m.group(2)), float(m.group(3))
        queueing, demand = int(m.group(4)), int(m.group(5))
        assert biased >= mean > 0  # Σw²/Σw ≥ Σw/n
        # Mooncake's long prompts: the wait asks for more than the mean load does
        assert 1 <= demand < queueing <= 10


def test_forecast_cases_print_both_trends(capsys: pytest.CaptureFixture[str]) -> None:
    assert forecast_cases_main([]) == 0
    rows = {line[:48].strip(): line[48:].split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["flat 100, one tick of 300 (newest)"] == ["+48.6", "+0.0"]  # least squares leads on a spike
    assert rows["flat, then +10 per tick over the last 20 ticks"] == ["+40.0", "+40.0"]  # a line is a line
    with pytest.raises(SystemExit) as refused:  # argparse: one line naming what it refused
        forecast_cases_main(["--bogus"])
    assert refused.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_tune_takes_a_whole_number_field_as_an_int() -> None:
    ap = argparse.ArgumentParser()
    variant.add_arguments(ap)
    v = variant.from_args(
        ap.parse_args(["--tune", "warm_shift_decode_spare=2", "--tune", "prefill_wait_share=0.3"])
    )
    assert v.tune_map == {"warm_shift_decode_spare": 2, "prefill_wait_share": 0.3}
    assert isinstance(v.tune_map["warm_shift_decode_spare"], int)
    assert v.label() == "warm_shift_decode_spare=2 prefill_wait_share=0.3"
    off = variant.from_args(ap.parse_args(["--tune", "warm_shift_decode_spare=none"]))
    assert off.tune_map == {"warm_shift_decode_spare": None}
