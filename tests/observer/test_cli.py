"""The CLI contract: --help everywhere, one-line errors with a non-zero exit, real commands work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from observer.cli import build_parser, main
from tests.support.procs import missing


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "observer.cli", *args], capture_output=True, text=True, timeout=120, env=env
    )


def _commands() -> list[list[str]]:
    parser = build_parser()
    out: list[list[str]] = []

    def walk(p: object, prefix: list[str]) -> None:
        for action in getattr(p, "_actions", []):
            choices = getattr(action, "choices", None)
            if isinstance(choices, dict):
                for name, sub in choices.items():
                    out.append([*prefix, name])
                    walk(sub, [*prefix, name])

    walk(parser, [])
    return out


@pytest.mark.parametrize("cmd", _commands(), ids=lambda c: " ".join(c))
def test_every_command_has_help(cmd: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*cmd, "--help"])
    assert exc.value.code == 0
    assert "usage: pd-observer" in capsys.readouterr().out


def test_contract_commands_exist() -> None:
    names = {" ".join(c) for c in _commands()}
    assert {"serve", "db upgrade", "alerts export"} <= names


def test_bad_config_is_one_line_naming_the_field(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("aggregation:\n  max_tenants: -3\n")
    r = run("db", "upgrade", "--config", str(cfg))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "aggregation.max_tenants" in lines[0]


def test_unknown_setting_and_missing_file_are_clear(tmp_path: Path) -> None:
    cfg = tmp_path / "typo.yaml"
    cfg.write_text("server:\n  prot: 80\n")
    r = run("db", "upgrade", "--config", str(cfg))
    assert r.returncode == 2
    assert "server.prot" in r.stderr
    r = run("db", "upgrade", "--config", str(tmp_path / "missing.yaml"))
    assert r.returncode == 2
    assert "not found" in r.stderr


def test_env_var_overrides_the_file(tmp_path: Path) -> None:
    import os

    cfg = tmp_path / "ok.yaml"
    cfg.write_text("server:\n  port: 8081\n")
    env = {**os.environ, "PD_OBSERVER_SERVER__PORT": "not-a-port"}
    r = run("db", "upgrade", "--config", str(cfg), env=env)
    assert r.returncode == 2
    assert "server.port" in r.stderr


def test_a_flag_beats_the_env_var_and_the_file(tmp_path: Path) -> None:
    # docs/configuration.md: flags first, then PD_OBSERVER_* variables, then the --config file
    import os

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"store:\n  url: sqlite:///{tmp_path / 'file.db'}\n")
    env = {**os.environ, "PD_OBSERVER_STORE__URL": f"sqlite:///{tmp_path / 'env.db'}"}
    r = run("db", "upgrade", "--config", str(cfg), "--db", f"sqlite:///{tmp_path / 'flag.db'}", env=env)
    assert r.returncode == 0, r.stderr
    assert "flag.db" in r.stdout
    assert sorted(p.name for p in tmp_path.glob("*.db")) == ["flag.db"]


def test_db_upgrade_on_a_fresh_sqlite_file(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "pdo.db"
    r = run("db", "upgrade", "--db", f"sqlite:///{db}")
    assert r.returncode == 0, r.stderr
    assert "revision" in r.stdout
    assert db.exists()


def test_alerts_export_writes_the_files(tmp_path: Path) -> None:
    r = run("alerts", "export", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["alertmanager.yml", "pd-observer-prometheusrule.yaml", "pd-observer-rules.yaml"]


def test_serve_gc_tuning_raises_gen0_threshold_and_zero_keeps_the_default() -> None:
    import gc

    from observer.cli import _tune_gc

    before = gc.get_threshold()
    try:
        _tune_gc(0)
        assert gc.get_threshold() == before
        _tune_gc(50_000)
        assert gc.get_threshold() == (50_000, before[1], before[2])
        assert gc.get_freeze_count() > 0  # startup objects are out of the collector's way
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


# ---------------------------------------------------------------- every section, one mechanism
@pytest.mark.parametrize(
    ("section", "where"),
    [
        ("sources:\n  bogus: 1\n", "sources.bogus"),
        ("signals:\n  cascade:\n    ttft_ratio: -2\n", "signals.cascade.ttft_ratio"),
        ("autoscaler:\n  enabeld: true\n", "autoscaler.enabeld"),  # not only when `enabled` is set
        ("autoscaler:\n  mode: aply\n", "autoscaler.mode"),
        ("alerts:\n  bogus: 1\n", "alerts.bogus"),
        ("dashboards:\n  top_tenants: 0\n", "dashboards.top_tenants"),
        ("simulator:\n  speed: 2\n", "simulator"),  # no such section: the twin takes flags
    ],
)
# (`--db notaurl`: were the section not checked first, these would fail on the URL, not run)
@pytest.mark.parametrize(
    "command",
    [["serve", "--db", "notaurl"], ["db", "upgrade", "--db", "notaurl"], ["alerts", "export", "out"]],
)
def test_every_section_is_validated_by_every_command_naming_the_file(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    section: str,
    where: str,
    command: list[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(section)
    assert main([*command, "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"pd-observer: invalid configuration in {cfg}: {where}: "), err
    assert "\n" not in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "is a directory"),
        (b"server:\n  host: \xff\xfe\n", "is not UTF-8 text"),
        (b"store: {url: 'sqlite:///a.db'}\nserver: {}\nstore:\n  url: b\n", "line 3: duplicate key 'store'"),
        (b"a: &x {p: 1}\nb:\n  <<: *x\n  p: 2\n", ": a: Extra inputs"),  # a merge is no duplicate
    ],
)
def test_unreadable_config_file_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None, message: str
) -> None:
    cfg = tmp_path / "c.yaml"
    if content is None:
        cfg.mkdir()
    else:
        cfg.write_bytes(content)
    assert main(["db", "upgrade", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert str(cfg) in err
    assert message in err
    assert "\n" not in err


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PD_OBSERVER_AGGREGATION__WINDOWS_SECONDS", "60,300"),
        ("PD_OBSERVER_AUTOSCALER", "{bad"),
        ("PD_OBSERVER_SLOS", "[1"),
    ],
)
def test_env_var_that_is_not_json_is_one_line_naming_it(tmp_path: Path, name: str, value: str) -> None:
    import os

    r = run("alerts", "export", str(tmp_path / "out"), env={**os.environ, name: value})
    assert r.returncode == 2
    assert r.stderr.strip() == (
        f"pd-observer: invalid configuration in environment variable {name}: not valid JSON "
        "(lists and sections are JSON, e.g. PD_OBSERVER_AGGREGATION__WINDOWS_SECONDS='[60,300]')"
    )


def test_unknown_env_var_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "PD_OBSERVER_STORE_URL": "sqlite:///x.db", "PD_OBSERVER_MOONCAKE_DIR": "/x"}
    r = run("alerts", "export", str(tmp_path / "out"), env=env)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == (
        "pd-observer: warning: ignoring unknown environment variable(s): "
        "PD_OBSERVER_STORE_URL (did you mean PD_OBSERVER_STORE__URL?)"
    )


# ---------------------------------------------------------------------------- database URLs
def _closed_port() -> int:
    import socket

    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("notaurl", "invalid database URL 'notaurl': not a SQLAlchemy URL"),
        ("mysql://u@h/db", "unsupported database 'mysql'"),
        ("sqlite:///:memory:", "in-memory SQLite"),
        ("postgresql+psycopg2://postgres@127.0.0.1/x", "database driver 'postgresql+psycopg2'"),
    ],
)
def test_bad_database_url_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], url: str, message: str
) -> None:
    for command in (["db", "upgrade"], ["serve", "--port", "0"]):
        assert main([*command, "--db", url]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("pd-observer: ")
        assert message in err
        assert "\n" not in err


def test_unreachable_database_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/x"
    assert main(["db", "upgrade", "--db", url]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"pd-observer: cannot open the database at {url}: connection failed")
    assert "Connection refused" in err
    assert "\n" not in err
    not_a_db = tmp_path / "notes.txt"
    not_a_db.write_text("hello, not SQLite\n" * 100)
    assert main(["db", "upgrade", "--db", f"sqlite:///{not_a_db}"]) == 1
    assert capsys.readouterr().err.strip().endswith(": file is not a database")


@pytest.mark.postgres
def test_missing_postgres_database_names_the_drivers_reason(capsys: pytest.CaptureFixture[str]) -> None:
    import psycopg

    from tests.support.procs import in_ci

    try:
        psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3").close()
    except psycopg.OperationalError as exc:
        (pytest.fail if in_ci() else pytest.skip)(f"PostgreSQL not reachable: {exc}".splitlines()[0])
    url = "postgresql+psycopg://postgres@127.0.0.1:5432/pdo_no_such_database"
    assert main(["db", "upgrade", "--db", url]) == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith('database "pdo_no_such_database" does not exist')
    assert "\n" not in err


def _json_lines(text: str) -> list[dict[str, object]]:
    import json

    return [json.loads(line) for line in text.splitlines()]


def test_serve_with_an_unreachable_database_logs_one_error_line_and_exits_1() -> None:
    r = run("serve", "--port", "0", "--db", f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/x")
    assert r.returncode == 1
    logs = _json_lines(r.stderr)  # every line is JSON, no traceback
    assert logs[-1]["level"] == "error"
    assert str(logs[-1]["msg"]).startswith("cannot open the database at postgresql+psycopg://")
    assert not any("exc" in line for line in logs)
    assert not any(line["msg"] in ("ready", "listening") for line in logs)


def test_serve_on_a_taken_port_fails_before_it_logs_ready(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = run("serve", "--host", "127.0.0.1", "--port", str(port), "--db", f"sqlite:///{tmp_path / 'p.db'}")
    assert r.returncode == 1
    logs = _json_lines(r.stderr)
    assert logs[-1]["level"] == "error"
    assert logs[-1]["msg"] == f"cannot listen on 127.0.0.1:{port}: Address already in use"
    assert not any(line["msg"] == "ready" for line in logs)


# ----------------------------------------------------------------------- command-line values
@pytest.mark.parametrize(
    "args",
    [
        ["replay", "steady", "--duration", "nan"],
        ["simulate", "--fast", "--otlp-endpoint", "http://127.0.0.1:1", "--duration", "nan"],
        ["simulate", "--otlp-endpoint", "http://127.0.0.1:1", "--speed", "-1"],
        ["simulate", "--otlp-endpoint", "http://127.0.0.1:1", "--speed", "nan"],
        ["simulate", "--otlp-endpoint", "http://127.0.0.1:1", "--metrics-port", "99999"],
        ["simulate", "--otlp-endpoint", "http://127.0.0.1:1", "--metrics-port", "-1"],
        ["simulate", "--otlp-endpoint", "notaurl"],
        ["simulate", "--otlp-endpoint", "127.0.0.1:4318"],
        ["demo", "--port", "99999"],
        ["demo", "--speed", "-1"],
        ["replay", "steady", "--speed", "-1"],
        ["autoscale", "--once", "--server", "notaurl"],
    ],
    ids=lambda a: " ".join(a),
)
def test_bad_flag_values_are_usage_errors(
    args: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    assert "error: argument" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "NaN", "1e999"])
def test_the_shared_number_types_refuse_non_finite_values(text: str) -> None:
    import argparse

    from observer.cli import non_negative, positive

    for number in (positive, non_negative):
        with pytest.raises(argparse.ArgumentTypeError, match="not a finite number"):
            number(text)


def test_export_into_an_existing_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    for command in (["alerts", "export"], ["dashboards", "export"]):
        assert main([*command, str(afile)]) == 2
        assert capsys.readouterr().err.strip() == (
            f"pd-observer: output directory {afile} is an existing file, not a directory"
        )
        assert main([*command, str(afile / "sub")]) == 2
        assert f"{afile} is not a directory" in capsys.readouterr().err


# ------------------------------------------------------------------ operator mistakes (review)
@pytest.mark.parametrize(
    ("section", "where"),
    [
        ("server:\n  shutdown_grace_seconds: .inf\n", "server.shutdown_grace_seconds"),
        ("store:\n  maintenance_interval_seconds: .inf\n", "store.maintenance_interval_seconds"),
        ("alerts:\n  signals:\n    prefill_queue_depth: .inf\n", "alerts.signals.prefill_queue_depth"),
        ("signals:\n  interval_seconds: .inf\n", "signals.interval_seconds"),
        ("sources:\n  prometheus:\n    timeout_seconds: .inf\n", "sources.prometheus.timeout_seconds"),
        ("autoscaler:\n  interval_seconds: .inf\n", "autoscaler.interval_seconds"),
        ("autoscaler:\n  retry: {backoff_seconds: [.inf]}\n", "autoscaler.retry.backoff_seconds.0"),
        ("autoscaler:\n  warm_start_hold_seconds: .nan\n", "autoscaler.warm_start_hold_seconds"),
    ],
)
def test_a_non_finite_setting_is_refused_naming_the_field(tmp_path: Path, section: str, where: str) -> None:
    # `.inf` passed `gt=0`: serve died with an OverflowError traceback on the grace, the autoscaler
    # loop on its lease duration, and `alerts export` wrote `... >= inf` rules that never fire
    cfg = tmp_path / "c.yaml"
    cfg.write_text(section)
    r = run("alerts", "export", str(tmp_path / "out"), "--config", str(cfg))
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == (
        f"pd-observer: invalid configuration in {cfg}: {where}: Input should be a finite number"
    )
    assert not (tmp_path / "out").exists()


def test_an_interval_too_large_for_the_lease_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("autoscaler:\n  interval_seconds: 1.0e+308\n")  # x 4 = the lease: inf
    r = run("alerts", "export", str(tmp_path / "out"), "--config", str(cfg))
    assert r.returncode == 2
    assert r.stderr.startswith(f"pd-observer: invalid configuration in {cfg}: autoscaler: ")
    assert "lease" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_bad_value_is_blamed_on_where_it_came_from(tmp_path: Path) -> None:
    # the file holds a good port; the bad one comes from the environment, then from a flag
    import os

    cfg = tmp_path / "ok.yaml"
    cfg.write_text("server:\n  port: 8081\n")
    out = str(tmp_path / "out")
    env = {**os.environ, "PD_OBSERVER_SERVER__PORT": "99999"}
    r = run("alerts", "export", out, "--config", str(cfg), env=env)
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "pd-observer: invalid configuration in environment variable PD_OBSERVER_SERVER__PORT: "
        "server.port: Input should be less than or equal to 65535"
    )
    r = run("alerts", "export", out, env={**os.environ, "PD_OBSERVER_AUTOSCALER__MODE": "aply"})
    assert r.stderr.startswith(
        "pd-observer: invalid configuration in environment variable PD_OBSERVER_AUTOSCALER__MODE: "
        "autoscaler.mode: "
    ), r.stderr
    r = run("serve", "--port", "99999", "--config", str(cfg))
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "pd-observer: invalid configuration in the command-line options: server.port: "
        "Input should be less than or equal to 65535"
    )
    bad = tmp_path / "bad.yaml"  # a value of the file is still blamed on the file
    bad.write_text("server:\n  port: 99999\n")
    r = run("alerts", "export", out, "--config", str(bad))
    assert r.stderr.startswith(f"pd-observer: invalid configuration in {bad}: server.port: ")


@pytest.mark.parametrize("windows", ["[]", "[0]", "[-60]", "[60, 0]"])
def test_aggregation_windows_must_be_positive_and_given(tmp_path: Path, windows: str) -> None:
    # [] was `(root): max() arg is an empty sequence`; [0] or [-60] started a service whose
    # every API query was refused (`window must be <= -60 seconds`)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"aggregation:\n  windows_seconds: {windows}\n")
    r = run("alerts", "export", str(tmp_path / "out"), "--config", str(cfg))
    assert r.returncode == 2
    assert r.stderr.startswith(f"pd-observer: invalid configuration in {cfg}: aggregation.windows_seconds")
    assert "max()" not in r.stderr


def test_an_empty_db_flag_is_refused_not_the_default(tmp_path: Path) -> None:
    # `--db "$DB_URL"` with the variable unset created ./pd-observer.db and exited 0
    for command in (["db", "upgrade"], ["serve", "--port", "0"]):
        r = subprocess.run(
            [sys.executable, "-m", "observer.cli", *command, "--db", ""],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        assert r.returncode == 2, r.stderr
        assert r.stderr.strip().startswith("pd-observer: invalid database URL '': not a SQLAlchemy URL")
        assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [["alerts", "export"], ["dashboards", "export"]])
def test_an_empty_output_directory_is_a_usage_error(tmp_path: Path, command: list[str]) -> None:
    # `alerts export "$OUT"` with the variable unset wrote into the current directory
    r = subprocess.run(
        [sys.executable, "-m", "observer.cli", *command, ""],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert r.returncode == 2
    assert "argument DIR: must not be empty" in r.stderr
    assert list(tmp_path.iterdir()) == []


def _unwritable() -> Path:
    """A directory this process cannot create files in, even as root."""
    proc = Path("/proc/self")
    if not proc.is_dir():
        missing("needs /proc")
    return proc


@pytest.mark.parametrize("command", [["alerts", "export"], ["dashboards", "export"]])
def test_export_into_an_unwritable_directory_is_one_line(command: list[str]) -> None:
    for target in (_unwritable(), _unwritable() / "sub"):  # existing, and to be created
        r = run(*command, str(target))
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith(f"pd-observer: output directory {target}: cannot write there: ")
        assert "\n" not in r.stderr.strip()


@pytest.mark.parametrize(
    ("command", "blocker"),
    [
        (["alerts", "export"], "alertmanager.yml"),  # the last file written
        (["dashboards", "export"], "pd-observer-dashboards-configmaps.yaml"),
    ],
)
def test_export_that_fails_writes_nothing(tmp_path: Path, command: list[str], blocker: str) -> None:
    # a file to write is a directory: the files before it used to be written, then a traceback
    out = tmp_path / "out"
    (out / blocker).mkdir(parents=True)
    r = run(*command, str(out))
    assert r.returncode == 1
    assert r.stderr.strip() == f"pd-observer: cannot write {out / blocker}: Is a directory"
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == []


def test_replay_out_that_cannot_be_written_fails_before_the_run() -> None:
    target = _unwritable() / "r.json"
    r = run("replay", "steady", "--duration", "30", "--out", str(target))
    assert r.returncode == 2
    assert r.stderr.startswith(f"pd-observer: --out {target}: cannot write there: ")
    assert r.stdout == ""  # refused before the replay


def test_replay_out_that_fails_at_the_end_is_one_line() -> None:
    full = Path("/dev/full")  # every write: ENOSPC
    if not full.exists():
        missing("needs /dev/full")
    r = run("replay", "steady", "--duration", "30", "--out", str(full))
    assert r.returncode == 1
    assert r.stderr.strip() == "pd-observer: cannot write /dev/full: No space left on device"


def test_demo_out_that_cannot_be_written_fails_before_the_run(tmp_path: Path) -> None:
    # the demo waited 30 s for a service that could not create its database there, then a traceback
    target = _unwritable()
    args = ["--duration", "10", "--speed", "0", "--no-prometheus", "--port", "0", "--out", str(target)]
    r = run("demo", *args)
    assert r.returncode == 2
    assert r.stderr.strip().startswith(f"pd-observer: --out {target}: cannot write there: ")


def test_demo_whose_report_cannot_be_written_is_one_line_and_keeps_the_data(tmp_path: Path) -> None:
    # a disk that filled during the run ended the demo with a traceback at report.html
    full = Path("/dev/full")  # every write: ENOSPC
    if not full.exists():
        missing("needs /dev/full")
    (tmp_path / "report.html").symlink_to(full)
    args = ["--duration", "10", "--speed", "0", "--no-prometheus", "--no-autoscaler", "--port", "0"]
    r = run("demo", *args, "--out", str(tmp_path))
    assert r.returncode == 1, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith(f"pd-observer: cannot write {tmp_path / 'report.html'}: No space left on device")
    assert f"kept: {tmp_path / 'data.json'}, {tmp_path / 'pd-observer.db'}" in line
    assert "Traceback" not in r.stderr
    assert json.loads((tmp_path / "data.json").read_text())["scenario"]
