"""`pd-observer demo`, `simulate` and `replay` end to end (subprocesses without a TTY, real HTTP)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from observer.cli import main
from tests.support.procs import in_ci, reaped, require_binary
from tests.support.server import serve_in_thread

ROOT = Path(__file__).resolve().parents[3]


def _run(args: list[str], tmp: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "observer.cli", *args],
        cwd=tmp,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
@pytest.mark.prometheus
def test_demo_end_to_end_without_tty(tmp_path: Path) -> None:
    require_binary("prometheus")
    out = tmp_path / "demo"
    # 2 s of wall time: the report samples each tick the paced loop makes, fewer on a slow box
    proc = _run(["demo", "--duration", "60", "--speed", "30", "--out", str(out), "--port", "0"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "[demo]" in proc.stdout  # plain log lines, not a Live view
    assert "\x1b[" not in proc.stdout
    report = (out / "report.html").read_text()
    for cid in ("load", "replicas", "ttft", "hit_rate", "alerts"):
        assert f"id='{cid}'" in report
    assert report.count("<polyline") >= 4
    data = json.loads((out / "data.json").read_text())
    assert len(data["samples"]) >= 5
    phases = [e["text"] for e in data["events"] if e["kind"] == "phase"]
    assert phases == ["steady", "prefill-burst", "cache-cascade"]
    tenants = {r["tenant"]: r for r in data["summary"]["tenants"]}
    assert sum(r["requests"] for r in tenants.values()) == data["summary"]["requests"] > 0
    assert "batch-docs" in tenants  # the burst reached the service over OTLP/HTTP
    prom = data["prometheus"]
    assert prom["started"] is True
    assert prom["scraped_service"] is True
    assert prom["service_requests_total"] == data["summary"]["requests"]
    assert prom["vllm_series"] >= 1  # Prometheus scraped the twin's vLLM pods via http_sd
    assert "prometheus scraped the service: yes" in proc.stdout
    assert (out / "pd-observer.db").is_file()


def test_demo_without_prometheus_fast(tmp_path: Path) -> None:
    out = tmp_path / "d"
    proc = _run(
        [
            "demo",
            "--scenario",
            "prefill-burst",
            "--duration",
            "450",
            "--speed",
            "0",
            "--out",
            str(out),
            "--port",
            "0",
            "--no-prometheus",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "450 simulated s as fast as possible" in proc.stdout  # --speed 0, not "at 0x"
    data = json.loads((out / "data.json").read_text())
    assert data["prometheus"] == {}
    assert data["summary"]["requests"] > 0
    assert re.search(r"report: .*report\.html", proc.stdout)
    # the autoscaler ran in apply mode on the twin: its changes are in the view, data and report
    assert "autoscaler     apply on the twin" in proc.stdout
    auto = data["autoscaler"]
    assert auto["enabled"] is True
    assert auto["decisions"], proc.stdout[-2000:]
    assert any(d["text"].startswith("prefill ") for d in auto["decisions"])
    assert "autoscaler: llama-8b prefill " in proc.stdout  # live view event line
    assert [e for e in data["events"] if e["kind"] == "autoscaler"]
    report = (out / "report.html").read_text()
    assert "id='decisions'" in report
    assert "prefill desired" in report  # desired vs ready in the replicas chart


def test_demo_no_autoscaler_leaves_the_twin_alone(tmp_path: Path) -> None:
    out = tmp_path / "d"
    args = ["demo", "--scenario", "prefill-burst", "--duration", "60", "--speed", "0"]
    proc = _run([*args, "--out", str(out), "--port", "0", "--no-prometheus", "--no-autoscaler"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "autoscaler     off" in proc.stdout
    data = json.loads((out / "data.json").read_text())
    assert data["autoscaler"] == {"enabled": False, "mode": None, "decisions": []}
    assert not [e for e in data["events"] if e["kind"] in {"autoscaler", "scale"}]
    assert "id='decisions'" not in (out / "report.html").read_text()


def test_simulate_delivers_spans_to_a_running_service(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with serve_in_thread(tmp_path) as svc:
        code = main(
            ["simulate", "--scenario", "steady", "--duration", "60", "--fast", "--otlp-endpoint", svc.url]
        )
        assert code == 0
        printed = capsys.readouterr().out
        m = re.search(r"done: (\d+) requests, (\d+) spans", printed)
        assert m is not None, printed
        sent = int(m.group(1))
        tenants = svc.tenants(window=300)
    assert sent > 100
    assert sum(t["requests"] for t in tenants.values()) == sent
    assert all(t["prompt_tokens"] > 0 for t in tenants.values())


def _closed_port() -> int:
    import socket

    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def quick_sdk_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The OTLP exporter's backoff between retries (1, 2, 4 s with jitter: a refused connection
    failed after about 7 s of waiting) divided by 100. The SDK still retries, as many times as
    it allows, and still gives up: only the waits between the attempts are shorter."""
    from opentelemetry.exporter.otlp.common.http import _OTLPHTTPClient

    backoff = _OTLPHTTPClient._compute_backoff
    monkeypatch.setattr(_OTLPHTTPClient, "_compute_backoff", lambda self, retry: backoff(self, retry) / 100)


def test_simulate_counts_failed_exports_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], quick_sdk_retries: None
) -> None:
    args = ["simulate", "--scenario", "steady", "--duration", "5", "--fast"]
    with serve_in_thread(tmp_path, overrides={"server": {"auth_token": "s3cret"}}) as svc:
        for endpoint, token in (
            (svc.url, []),  # 401: no token
            (svc.url + "/nope/v1/traces", ["--token", "s3cret"]),  # 404
            (f"http://127.0.0.1:{_closed_port()}", []),  # connection refused (after the SDK's retries)
        ):
            assert main([*args, "--otlp-endpoint", endpoint, *token]) == 1
            last = capsys.readouterr().out.strip().splitlines()[-1]
            m = re.fullmatch(
                r"done: (\d+) requests, (\d+) spans in .*; EXPORT FAILED: (\d+) of (\d+) spans .*", last
            )
            assert m is not None, last
            assert int(m.group(2)) == int(m.group(3)) == int(m.group(4)) > 0
            assert "1 failed export; the run stopped at the first" in last
        auth = {"Authorization": "Bearer s3cret"}
        assert svc.get("/api/v1/tenants", params={"window": 300}, headers=auth).json()["tenants"] == []
        assert main([*args, "--otlp-endpoint", svc.url, "--token", "s3cret"]) == 0
        assert "EXPORT FAILED" not in capsys.readouterr().out


def test_batches_after_the_first_failed_export_are_lost_unsent_not_failed_exports() -> None:
    """How many batches a run's spans make depends on wall time (the SDK's batch processor also
    exports every 200 ms): on a slow or busy machine the 5 s run above made two, the second
    (never sent) was counted as a second failed export, and "1 failed export; the run stopped
    at the first" failed about 1 run in 5 beside other tests. Only a tried export counts."""
    from opentelemetry.sdk.trace.export import SpanExportResult
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from observer.wiring.demo import CountingExporter

    class Failing(InMemorySpanExporter):
        calls = 0

        def export(self, spans):  # type: ignore[no-untyped-def]
            self.calls += 1
            return SpanExportResult.FAILURE

    inner, stops = Failing(), []
    exports = CountingExporter(inner, on_failure=lambda: stops.append(1))
    spans = [object()] * 3
    for _ in range(3):
        assert exports.export(spans) is SpanExportResult.FAILURE  # type: ignore[arg-type]
    assert inner.calls == 1  # the dead endpoint is tried once
    assert stops == [1]
    assert (exports.failed_exports, exports.unsent_batches) == (1, 2)
    assert (exports.exported_spans, exports.failed_spans) == (0, 9)


def test_a_bad_trace_is_one_line_in_every_twin_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trunc = tmp_path / "trunc.jsonl"
    good = '{"timestamp": 0, "input_length": 10, "output_length": 5, "hash_ids": [1]}\n'
    trunc.write_text(good * 3 + good[:30])  # cut mid-line
    for args in (
        ["simulate", "--scenario", str(trunc), "--fast", "--otlp-endpoint", "http://127.0.0.1:1"],
        ["demo", "--scenario", str(trunc), "--no-prometheus", "--port", "0", "--out", str(tmp_path / "d")],
        ["replay", str(trunc)],
    ):
        assert main(args) == 1
        err = capsys.readouterr().err.strip()
        assert err == f"pd-observer: {trunc} line 4: not JSON (Unterminated string starting at)"
    assert not (tmp_path / "d").exists()  # the demo refused it before starting anything


def test_a_run_longer_than_a_week_is_refused_before_it_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # one absurd timestamp (1e300 ms) made replay simulate "forever" (~0.2 s of wall per idle hour)
    far = tmp_path / "far.jsonl"
    row = '{{"timestamp": {}, "input_length": 10, "output_length": 5, "hash_ids": [1]}}\n'
    far.write_text(row.format(0) + row.format(1e300))
    for args in (
        ["replay", str(far), "--out", str(tmp_path / "r.json")],
        ["demo", "--scenario", str(far), "--no-prometheus", "--port", "0", "--out", str(tmp_path / "d")],
    ):
        assert main(args) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"pd-observer: {far}: its last request arrives 1e+297 s after the start")
        assert err.endswith(
            "beyond the 604800 s (7 days) a run simulates: give --duration to replay its start"
        )
    assert main(["replay", "steady", "--duration", "1e300"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "pd-observer: duration must be > 0 and at most 604800 s (7 days)"
    assert not (tmp_path / "d").exists()
    assert not (tmp_path / "r.json").exists()
    # --duration replays the start of such a trace
    assert main(["replay", str(far), "--duration", "60", "--out", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["requests"] == 1


def test_replay_checks_out_before_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nodir" / "x.json"
    assert main(["replay", "steady", "--out", str(missing)]) == 2
    out, err = capsys.readouterr()
    assert out == ""  # refused before the replay, not after it
    assert err.strip() == f"pd-observer: --out {missing}: the directory {missing.parent} does not exist"
    assert main(["replay", "steady", "--out", str(tmp_path)]) == 2
    assert (
        capsys.readouterr().err.strip() == f"pd-observer: --out {tmp_path} is a directory; give a file name"
    )
    assert main(["replay", "steady", "--speed", "1"]) == 2
    assert "only --speed 0" in capsys.readouterr().err
    afile = tmp_path / "afile"
    afile.write_text("")
    assert main(["demo", "--out", str(afile), "--no-prometheus", "--port", "0"]) == 2
    assert (
        capsys.readouterr().err.strip() == f"pd-observer: --out {afile} is an existing file, not a directory"
    )


def test_replay_prints_the_table_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "slice.jsonl"
    mc = Path(os.environ.get("PD_OBSERVER_MOONCAKE_DIR", ROOT.parent / "shared/data/mooncake"))
    trace = mc / "conversation_trace.jsonl"
    if not trace.is_file():
        pytest.fail(f"missing {trace}") if in_ci() else pytest.skip(f"missing {trace}")
    with trace.open() as fh:
        src.write_text("".join(next(fh) for _ in range(400)))
    out = tmp_path / "r.json"
    assert main(["replay", str(src), "--tenants", "4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split()[:3] == ["tenant", "requests", "hit"]
    rows = [line for line in printed.splitlines() if line.startswith("mc-")]
    assert 1 <= len(rows) <= 4
    data = json.loads(out.read_text())
    assert sum(t["requests"] for t in data["tenants"]) == data["requests"] > 0
    assert "autoscaler_decisions" not in data


def test_replay_autoscaler_flag_prints_and_writes_the_decisions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.json"
    args = ["replay", "prefill-burst", "--duration", "450", "--seed", "1", "--out", str(out), "--autoscaler"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert re.search(r"autoscaler: \d+ decisions changed the fleet", printed)
    data = json.loads(out.read_text())
    assert data["autoscaler_decisions"]
    assert any(d["text"].startswith("prefill ") for d in data["autoscaler_decisions"])
    assert f"t=+{data['autoscaler_decisions'][0]['elapsed']:.0f}s" in printed


def test_bad_input_is_one_line_and_nonzero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "no-such-scenario"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("pd-observer: unknown scenario")
    assert "\n" not in err
    assert main(["replay", str(tmp_path / "missing.jsonl")]) == 1
    assert "not found" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    good = '{"timestamp": 0, "input_length": 10, "output_length": 5, "hash_ids": [1]}\n'
    for second, message in [
        ("not json\n", "bad.jsonl line 2: not JSON"),
        (
            '{"timestamp": 1, "input_length": -500, "output_length": -3, "hash_ids": [1]}\n',
            "line 2: input_length is negative (-500)",
        ),
        (
            '{"timestamp": 1, "input_length": 5, "output_length": -3, "hash_ids": [1]}\n',
            "line 2: output_length is negative (-3)",
        ),
        ('{"timestamp": 1, "input_length": "x", "output_length": 5, "hash_ids": [1]}\n', "line 2: invalid"),
        ('{"timestamp": 1, "output_length": 5, "hash_ids": [1]}\n', "line 2: no field 'input_length'"),
    ]:
        bad.write_text(good + second)
        assert main(["replay", str(bad)]) == 1
        err = capsys.readouterr().err.strip()
        assert message in err
        assert "\n" not in err
    for name in ("t.json", "t.txt"):  # an existing file that is not .jsonl: not "unknown scenario"
        (tmp_path / name).write_text(good)
        assert main(["replay", str(tmp_path / name)]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"pd-observer: {tmp_path / name}: a trace file must be a Mooncake-format")
        assert ".jsonl" in err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert main(["replay", str(empty)]) == 1
    assert capsys.readouterr().err.strip() == f"pd-observer: {empty} holds no requests (an empty trace)"
    # --autoscaler with pools the twin does not have: refused up front, naming the twin's
    cfg = tmp_path / "observer.yaml"
    cfg.write_text(
        "autoscaler: {pools: [{name: llama, prefill: {target: {name: a}}, decode: {target: {name: b}}}]}\n"
    )
    assert main(["replay", "prefill-burst", "--autoscaler", "--config", str(cfg)]) == 1
    err = capsys.readouterr().err.strip()
    assert "autoscaler.pools llama: no such pool in the twin (its pools: llama-8b)" in err


def test_demo_sigterm_is_graceful(tmp_path: Path) -> None:
    out = tmp_path / "stopped"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "observer.cli",
            "demo",
            "--scenario",
            "steady",
            "--duration",
            "600",
            "--speed",
            "10",
            "--out",
            str(out),
            "--port",
            "0",
            "--no-prometheus",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    with reaped(proc):
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("[demo] t="):
                break
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, rest[-2000:]
    assert "(stopped early)" in rest
    data = json.loads((out / "data.json").read_text())
    assert data["stopped_early"] is True
    assert (out / "report.html").is_file()


def test_replay_shows_progress_on_a_terminal(tmp_path: Path) -> None:
    # the shared conversation trace took ~20 s with nothing shown until the table
    import pty

    args = ["replay", "steady", "--duration", "300", "--out", "r.json"]
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "observer.cli", *args],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=secondary,
            text=True,
            timeout=120,
        )
        os.close(secondary)
        shown = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the terminal's other side is closed: all read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(primary)
    assert proc.returncode == 0
    assert b"replaying steady" in shown
    assert "replaying" not in proc.stdout  # the table and the summary only
