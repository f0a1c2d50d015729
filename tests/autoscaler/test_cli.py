"""`pd-observer autoscale` end to end: the real CLI, the real `kubernetes` client against the
loopback API emulator, demand read from the observer's SQLite store, decisions written back."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from autoscaler.audit import SqlAuditLog
from autoscaler.service import run_autoscale
from observer import conventions as c
from observer.cli import main
from observer.config import Settings, load_settings
from observer.model import TierTokens
from observer.store import Store
from tests.autoscaler.k8s_emulator import Emulator, RunningEmulator
from tests.autoscaler.test_kubernetes import NS, deployment
from tests.observer.store.factories import record

LEASE = ("coordination.k8s.io/v1", "leases", NS, "pd-observer-autoscaler")


@pytest.fixture
def server() -> Iterator[RunningEmulator]:
    srv = RunningEmulator()
    yield srv
    srv.close()


def config(tmp_path: Path, db: str, **autoscaler: Any) -> Path:
    raw = {
        "store": {"url": db},
        "autoscaler": {
            "mode": "observe",
            "interval_seconds": 0.2,
            "retry": {"backoff_seconds": [0.01], "request_timeout_seconds": 2},
            "pools": [
                {
                    "name": "llama",
                    "namespace": NS,
                    "prefill": {
                        "target": {"kind": "Deployment", "name": "llama-prefill"},
                        "max": 8,
                        "max_step": 2,
                        "capacity_tokens_per_s": 20_000,
                    },
                    "decode": {
                        "target": {"kind": "Deployment", "name": "llama-decode"},
                        "max": 8,
                        "capacity_tokens_per_s": 3000,
                    },
                }
            ],
            **autoscaler,
        },
    }
    path = tmp_path / "observer.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def seed(db: str, *, prompt: int, n: int = 120) -> None:
    """n requests in the last 30 s, no cache hits: n / 60 req/s of `prompt` tokens over the
    controller's 60 s window, as long as its tick comes within 30 s (a loaded machine)."""
    st = Store.open(db)
    st.upgrade()
    now = time.time()
    recs = [
        replace(
            record(i, now - 30 + i * 30 / n),
            prompt_tokens=prompt,
            cached=TierTokens(),
            prefill_pod=f"llama-prefill-{i % 2}",
            decode_pod=f"llama-decode-{i % 2}",
        )
        for i in range(n)
    ]
    st.write_batch(recs)
    st.close()


def setup(em: Emulator) -> None:
    em.put("apps/v1", "deployments", deployment("llama-prefill", 2))
    em.put("apps/v1", "deployments", deployment("llama-decode", 2))


def test_once_dry_run_sends_dry_run_patches_and_records_the_decision(
    server: RunningEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    em = server.emulator
    setup(em)
    db = f"sqlite:///{tmp_path / 'pdo.db'}"
    seed(db, prompt=40_000)  # 2 req/s x 40k = 80k uncached tok/s: 5 prefill replicas at 80% of 20k
    cfg = config(tmp_path, db)
    code = main(["autoscale", "--once", "--dry-run", "--config", str(cfg), "--server", server.url])
    assert code == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert len(lines) == 1
    d = lines[0]
    assert d["mode"] == "dry-run"
    pre = next(x for x in d["replicas"] if x["role"] == c.ROLE_PREFILL)
    assert (pre["before"], pre["after"]) == (2, 4)  # 5 wanted, max_step 2
    assert "capacity_floor" in pre["reasons"]
    assert "step_limited" in pre["reasons"]
    assert d["inputs"]["demand"]["prompt_tokens_per_s"] == pytest.approx(80_000, rel=0.05)
    out = next(o for o in d["outcomes"] if o["target"] == c.ROLE_PREFILL)
    assert out["ok"] is True
    assert out["dry_run"] is True
    # the real client sent a /scale patch with dryRun=All; nothing persisted
    patches = em.writes("PATCH", "/deployments/llama-prefill/scale")
    assert patches
    assert patches[-1].query["dryRun"] == ["All"]
    assert patches[-1].body["metadata"]["resourceVersion"]  # optimistic concurrency
    assert em.get("apps/v1", "deployments", NS, "llama-prefill")["spec"]["replicas"] == 2
    # the lease was taken, then given up (a one-shot run does not keep the loop's lease); the
    # decision is in the database, served as the API serves it
    (taken,) = em.writes("POST", "/leases")
    assert taken.body["spec"]["holderIdentity"]
    assert em.writes("PATCH", "/leases/")[-1].body["spec"]["holderIdentity"] is None
    assert em.get(*LEASE)["spec"].get("holderIdentity") is None
    log = SqlAuditLog.open(db)
    rows = log.decisions(pool="llama")
    log.close()
    assert len(rows) == 1
    assert rows[0]["replicas"] == d["replicas"]


def test_observe_mode_writes_nothing(server: RunningEmulator, tmp_path: Path) -> None:
    em = server.emulator
    setup(em)
    db = f"sqlite:///{tmp_path / 'pdo.db'}"
    seed(db, prompt=40_000)
    cfg = config(tmp_path, db)
    assert main(["autoscale", "--once", "--config", str(cfg), "--server", server.url]) == 0
    assert not em.writes("PATCH", "/scale")
    assert em.get("apps/v1", "deployments", NS, "llama-prefill")["spec"]["replicas"] == 2


def test_stale_store_holds(
    server: RunningEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No records at all: the store cannot tell zero traffic from a stopped observer → hold."""
    em = server.emulator
    setup(em)
    db = f"sqlite:///{tmp_path / 'pdo.db'}"
    cfg = config(tmp_path, db, mode="apply")
    assert main(["autoscale", "--once", "--config", str(cfg), "--server", server.url]) == 0
    d = json.loads(capsys.readouterr().out.splitlines()[0])
    assert "stale_data" in d["reasons"]
    assert {"reason": "stale_data", "detail": "no record seen yet"}.items() <= d["holds"][0].items()
    assert all(x["before"] == x["after"] for x in d["replicas"])
    assert not em.writes("PATCH", "/scale")


def light_load(server: RunningEmulator, tmp_path: Path) -> tuple[Emulator, Settings]:
    """A 2:2 fleet on the emulator, a store with light load, and the loop's settings."""
    setup(server.emulator)
    db = f"sqlite:///{tmp_path / 'pdo.db'}"
    seed(db, prompt=1000)
    return server.emulator, load_settings(config(tmp_path, db), env={})


def test_losing_the_lease_exits_non_zero(server: RunningEmulator, tmp_path: Path) -> None:
    em, settings = light_load(server, tmp_path)
    printed: list[str] = []

    def out(line: str) -> None:
        printed.append(line)
        if len(printed) == 1:  # after our first tick, another instance takes the lease
            lease = em.get(*LEASE)
            lease["spec"]["holderIdentity"] = "intruder"
            em.put("coordination.k8s.io/v1", "leases", lease)

    code = run_autoscale(settings, host=server.url, identity="me", out=out, max_ticks=5)
    assert code == 1
    assert "leadership lost" in printed[-1]
    assert em.get(*LEASE)["spec"]["holderIdentity"] == "intruder"


def test_bad_config_is_one_line_and_non_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"autoscaler": {"pools": [{"name": "x"}]}}), encoding="utf-8")
    assert main(["autoscale", "--once", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"pd-observer: invalid configuration in {bad}: autoscaler.pools")
    assert "\n" not in err


def test_once_as_a_standby_exits_zero_and_says_who_holds_the_lease(
    server: RunningEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setup(server.emulator)
    db = f"sqlite:///{tmp_path / 'pdo.db'}"
    cfg = str(config(tmp_path, db, lease={"duration_seconds": 600}))
    spec = {"holderIdentity": "a", "leaseDurationSeconds": 600, "renewTime": "2026-11-21T10:00:00.000000Z"}
    lease = {"metadata": {"name": LEASE[3], "namespace": NS}, "spec": spec}
    server.emulator.put("coordination.k8s.io/v1", "leases", lease)  # the running loop's
    assert main(["autoscale", "--once", "--config", cfg, "--server", server.url, "--identity", "b"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "leader": False,
        "detail": "another instance holds the lease",
    }


def test_once_without_a_reachable_lease_exits_one_and_names_the_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    db = f"sqlite:///{tmp_path / 'pdo.db'}"
    assert main(["autoscale", "--once", "--config", str(config(tmp_path, db)), "--server", closed]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["leader"] is False
    assert out["detail"].startswith("lease renewal failed:")


def test_once_holds_like_a_freshly_started_loop(
    server: RunningEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--once is the first tick of a started loop: the warm-start hold keeps the fleet it has
    not measured yet (light load would otherwise take 2:2 down to 1:1 at once)."""
    em = server.emulator
    setup(em)
    db = f"sqlite:///{tmp_path / 'pdo.db'}"
    seed(db, prompt=1000)
    cfg = config(tmp_path, db, mode="apply")
    assert main(["autoscale", "--once", "--config", str(cfg), "--server", server.url]) == 0
    d = json.loads(capsys.readouterr().out.splitlines()[0])
    assert all(x["before"] == x["after"] == 2 for x in d["replicas"])
    assert all("stabilized_down" in x["reasons"] for x in d["replicas"])
    assert not em.writes("PATCH", "/scale")


def test_sigterm_stops_the_loop_and_releases_the_lease(server: RunningEmulator, tmp_path: Path) -> None:
    em, settings = light_load(server, tmp_path)
    printed: list[str] = []

    def out(line: str) -> None:
        printed.append(line)
        assert em.get(*LEASE)["spec"]["holderIdentity"] == "me"
        signal.raise_signal(signal.SIGTERM)  # how Kubernetes stops the pod

    before = signal.getsignal(signal.SIGTERM)
    assert run_autoscale(settings, host=server.url, identity="me", out=out, max_ticks=50) == 0
    assert len(printed) == 1
    assert em.get(*LEASE)["spec"].get("holderIdentity") is None  # a standby takes over at once
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back


def test_no_kubeconfig_is_one_line_and_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # not in a cluster
    db = f"sqlite:///{tmp_path / 'pdo.db'}"
    missing = tmp_path / "no-such-kubeconfig"
    args = ["autoscale", "--once", "--config", str(config(tmp_path, db)), "--kubeconfig", str(missing)]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("pd-observer: no Kubernetes API to talk to")
    assert str(missing) in err
    assert "--server URL" in err
    assert "\n" not in err


def test_no_pools_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "empty.yaml"
    cfg.write_text("autoscaler: {mode: observe}\n", encoding="utf-8")
    assert main(["autoscale", "--once", "--config", str(cfg)]) == 2
    assert "no pools configured" in capsys.readouterr().err


def test_invalid_kubeconfig_is_the_same_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # not in a cluster
    db = f"sqlite:///{tmp_path / 'pdo.db'}"
    bad = tmp_path / "badkc"
    bad.write_text("apiVersion: v1\nclusters: [\n", encoding="utf-8")
    args = ["autoscale", "--once", "--config", str(config(tmp_path, db)), "--kubeconfig", str(bad)]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"pd-observer: no Kubernetes API to talk to: not in a cluster, and the kubeconfig {bad} could "
        "not be loaded (not valid YAML (line 3)); give --kubeconfig FILE or --server URL"
    )


def test_server_that_is_not_a_url_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{tmp_path / 'pdo.db'}"
    with pytest.raises(SystemExit) as exc:
        main(["autoscale", "--once", "--config", str(config(tmp_path, db)), "--server", "notaurl"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --server: not an http:// or https:// URL: 'notaurl'" in err
    assert "FutureWarning" not in err


def test_unreachable_database_is_one_line_before_the_tick(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_a_db = tmp_path / "notes.txt"
    not_a_db.write_text("not SQLite\n" * 100, encoding="utf-8")
    assert main(["autoscale", "--once", "--config", str(config(tmp_path, f"sqlite:///{not_a_db}"))]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"pd-observer: cannot open the database at sqlite:///{not_a_db}: file is not a database"


@pytest.mark.parametrize("mode", ["observe", "apply"])
def test_dry_run_with_another_mode_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: str
) -> None:
    # `--dry-run --mode apply` silently ran dry-run; `--dry-run --mode observe` sent dry-run writes
    db = f"sqlite:///{tmp_path / 'pdo.db'}"
    args = ["autoscale", "--once", "--dry-run", "--mode", mode, "--config", str(config(tmp_path, db))]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == (
        f"pd-observer: --dry-run conflicts with --mode {mode} (--dry-run means --mode dry-run)"
    )
    assert not (tmp_path / "pdo.db").exists()
