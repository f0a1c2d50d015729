"""The CLI contract: --help everywhere, one-line errors with a non-zero exit, real commands work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from observer.cli import build_parser, main


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
