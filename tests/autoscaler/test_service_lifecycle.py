"""The control loop stopped as Kubernetes stops its pod (SIGTERM), as real processes:
`pd-observer autoscale` and `pd-observer serve` with `autoscaler.enabled`, the real `kubernetes`
client against the API emulator over HTTP. A SIGTERM during a tick lets the request in flight
finish (the API server may apply it whatever the client does), sends nothing new, audits the
tick, and releases the Lease, so a standby takes over at once; a second signal exits at once
(status 1), the Lease released on the way out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from autoscaler.audit import SqlAuditLog
from autoscaler.loop import NOT_SENT_STOPPING
from observer import conventions as c
from tests.autoscaler.k8s_emulator import Fault, RunningEmulator
from tests.autoscaler.test_cli import LEASE, NS, config, seed, setup
from tests.support.otel import Req, VllmSpans, encode, gzipped
from tests.support.procs import free_port, reaped, wait_http

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
SCALE_DOWN = "/deployments/llama-decode/scale"  # a tick's first action (scale-downs go first)


@pytest.fixture
def server() -> Any:
    srv = RunningEmulator()
    yield srv
    srv.close()


def kubeconfig(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "kubeconfig"
    cluster = {"name": "emulator", "cluster": {"server": url}}
    context = {"name": "emulator", "context": {"cluster": "emulator", "user": "me"}}
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "emulator",
                "clusters": [cluster],
                "contexts": [context],
                "users": [{"name": "me", "user": {}}],
            }
        )
    )
    return path


def env_for(tmp_path: Path, url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}  # not in a cluster
    return {**env, "KUBECONFIG": str(kubeconfig(tmp_path, url))}


def heavy_load_config(tmp_path: Path, db: str, **extra: Any) -> Path:
    """Prefill 2 -> 4 and decode 2 -> 1 on the first tick (no warm-start hold), in apply mode."""
    seed(db, prompt=40_000)
    return config(
        tmp_path,
        db,
        mode="apply",
        interval_seconds=1,
        warm_start_hold_seconds=0,
        retry={"backoff_seconds": [0.5, 1, 2], "request_timeout_seconds": 10},
        **extra,
    )


def wait_in_flight(fault: Fault, proc: subprocess.Popen[Any], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while fault.times > 0:  # taken when the request arrives, before its delay
        assert proc.poll() is None, "exited before the request"
        assert time.monotonic() < deadline, "the request never came"
        time.sleep(0.02)
    time.sleep(0.3)


def autoscale_process(cfg: Path, api_url: str, **env: str) -> subprocess.Popen[str]:
    """`pd-observer autoscale` (the loop) as a real process against the emulator, output piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "observer.cli", "autoscale", "--config", str(cfg), "--server", api_url],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def check_the_tick_was_finished_and_audited(server: RunningEmulator, db: str, released_after: int) -> None:
    em = server.emulator
    # the request in flight was applied (and audited as such); the next one was never sent
    assert em.get("apps/v1", "deployments", NS, "llama-decode")["spec"]["replicas"] == 1
    assert em.get("apps/v1", "deployments", NS, "llama-prefill")["spec"]["replicas"] == 2
    assert not em.writes("PATCH", "/deployments/llama-prefill/scale")
    log = SqlAuditLog.open(db)
    try:
        row = log.decisions(pool="llama")[0]  # the newest: the tick the signal came in
    finally:
        log.close()
    outcomes = {o["target"]: o for o in row["outcomes"]}
    assert outcomes["decode"]["ok"] is True
    assert "2 -> 1" in outcomes["decode"]["detail"]
    assert (outcomes["prefill"]["ok"], outcomes["prefill"]["detail"]) == (False, NOT_SENT_STOPPING)
    # the lease was given up after the tick's last request: a standby takes over at once
    assert em.get(*LEASE)["spec"].get("holderIdentity") is None
    writes = [r for r in em.requests[released_after:] if r.method in ("PATCH", "PUT", "POST")]
    assert writes[-1].path.endswith("/leases/pd-observer-autoscaler")
    assert writes[-1].body["spec"]["holderIdentity"] is None


def test_autoscale_sigterm_finishes_the_request_in_flight_audits_and_releases(
    server: RunningEmulator, tmp_path: Path
) -> None:
    em = server.emulator
    setup(em)
    db = f"sqlite:///{tmp_path / 'pdo.db'}"
    cfg = heavy_load_config(tmp_path, db)
    fault = Fault("PATCH", SCALE_DOWN, status=0, delay=2.0)
    em.faults.append(fault)
    proc = autoscale_process(cfg, server.url)
    with reaped(proc):
        wait_in_flight(fault, proc)
        n = len(em.requests)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err[-3000:]
    check_the_tick_was_finished_and_audited(server, db, n)
    (printed,) = [json.loads(x) for x in out.splitlines() if x.startswith("{")]  # the tick, printed
    assert {o["target"] for o in printed["outcomes"]} == {"decode", "prefill"}
    lines = [json.loads(x) for x in err.splitlines() if x.startswith("{")]
    assert {"msg": "stopped", "signal": "SIGTERM", "exit_code": 0}.items() <= lines[-1].items()


def test_autoscale_past_the_grace_hands_the_lease_over_and_exits_1(
    server: RunningEmulator, tmp_path: Path
) -> None:
    """A request hanging past `server.shutdown_grace_seconds`: the process still exits within
    the grace plus the exit margin (status 1), and the lease is released at the grace, as
    `serve` does, so a standby need not wait out `leaseDurationSeconds` (it was left before)."""
    em = server.emulator
    setup(em)
    db = f"sqlite:///{tmp_path / 'pdo.db'}"
    cfg = heavy_load_config(tmp_path, db)
    fault = Fault("PATCH", SCALE_DOWN, status=0, delay=30.0)  # hangs well past the grace
    em.faults.append(fault)
    proc = autoscale_process(cfg, server.url, PD_OBSERVER_SERVER__SHUTDOWN_GRACE_SECONDS="1")
    with reaped(proc):
        wait_in_flight(fault, proc)
        assert em.get(*LEASE)["spec"].get("holderIdentity")  # held while the tick runs
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        elapsed = time.monotonic() - t0
    assert proc.returncode == 1, err[-3000:]
    assert 1 <= elapsed < 1 + 2 + 1  # the grace, then at most the exit margin (and the start-up)
    assert em.get(*LEASE)["spec"].get("holderIdentity") is None
    assert em.get(*LEASE)["spec"]["leaseDurationSeconds"] == 1
    msgs = [json.loads(x)["msg"] for x in err.splitlines() if x.startswith("{")]
    assert (
        "the autoscaler tick in flight did not finish within the shutdown grace; releasing the lease" in msgs
    )


def serve_process(
    server: RunningEmulator, tmp_path: Path, db: str, log: Path, **env: str
) -> subprocess.Popen[bytes]:
    """`pd-observer serve` with the loop inside (`autoscaler.enabled`), the demand `seed` put in
    the store sent to it as spans (`serve` reads the records it commits), output in `log`."""
    port = free_port()
    cfg = heavy_load_config(tmp_path, db, enabled=True)
    raw = yaml.safe_load(cfg.read_text())
    raw["server"] = {"host": "127.0.0.1", "port": port}
    cfg.write_text(yaml.safe_dump(raw))
    proc = subprocess.Popen(
        [sys.executable, "-m", "observer.cli", "serve", "--config", str(cfg)],
        cwd=ROOT,
        env={**env_for(tmp_path, server.url), **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", proc=proc, timeout=60)
        sp = VllmSpans()
        now = time.time()
        for i in range(120):
            sp.aggregated(
                Req("t", prompt=40_000, output=3, start=now - 61 + i / 2), pod=f"llama-decode-{i % 2}"
            )
        body = gzipped(encode(sp.take()))
        headers = {"content-type": c.CT_PROTOBUF, "content-encoding": "gzip"}
        r = httpx.post(
            f"http://127.0.0.1:{port}{c.OTLP_TRACES_PATH}", content=body, headers=headers, timeout=30
        )
        assert r.status_code == 200, r.text
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


def test_serve_sigterm_stops_its_autoscaler_after_the_tick_and_releases_the_lease(
    server: RunningEmulator, tmp_path: Path
) -> None:
    em = server.emulator
    setup(em)
    db = f"sqlite:///{tmp_path / 'pdo.db'}"
    fault = Fault("PATCH", SCALE_DOWN, status=0, delay=2.0)
    em.faults.append(fault)
    log = tmp_path / "serve.log"
    proc = serve_process(server, tmp_path, db, log)
    with reaped(proc):
        wait_in_flight(fault, proc)
        n = len(em.requests)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
        elapsed = time.monotonic() - t0
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert elapsed < 10  # server.shutdown_grace_seconds
    check_the_tick_was_finished_and_audited(server, db, n)
    assert json.loads(text.splitlines()[-1])["msg"] == "exiting"


def test_autoscale_second_sigterm_releases_the_lease_and_exits_1(
    server: RunningEmulator, tmp_path: Path
) -> None:
    """A second SIGTERM while the tick in flight hangs (the first one waits for it, up to the
    grace): the process exits 1 within the exit margin, long before the grace, and the Lease is
    released on the way out, so a standby need not wait out `leaseDurationSeconds` (it had to)."""
    em = server.emulator
    setup(em)
    db = f"sqlite:///{tmp_path / 'pdo.db'}"
    cfg = heavy_load_config(tmp_path, db)
    fault = Fault("PATCH", SCALE_DOWN, status=0, delay=30.0)  # hangs past the second signal
    em.faults.append(fault)
    proc = autoscale_process(cfg, server.url, PD_OBSERVER_SERVER__SHUTDOWN_GRACE_SECONDS="20")
    with reaped(proc):
        wait_in_flight(fault, proc)
        assert em.get(*LEASE)["spec"].get("holderIdentity")  # held while the tick runs
        proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert proc.poll() is None  # stopping: waits for the request in flight
        assert em.get(*LEASE)["spec"].get("holderIdentity")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        elapsed = time.monotonic() - t0
    assert proc.returncode == 1, err[-3000:]
    assert elapsed < 2 + 1  # the exit margin at most (not the 20 s grace, nor the 30 s request)
    assert em.get(*LEASE)["spec"].get("holderIdentity") is None
    assert em.get(*LEASE)["spec"]["leaseDurationSeconds"] == 1
    lines = [json.loads(x) for x in err.splitlines() if x.startswith("{")]
    assert {"msg": "second signal: releasing the lease, then exiting", "exit_code": 1}.items() <= lines[
        -1
    ].items()


def test_serve_second_sigterm_releases_its_autoscalers_lease_and_exits_1(
    server: RunningEmulator, tmp_path: Path
) -> None:
    """`serve` with the loop inside, the same: a second SIGTERM while the autoscaler's tick hangs
    exits 1 within the exit margin, the Lease released on the way out."""
    em = server.emulator
    setup(em)
    db = f"sqlite:///{tmp_path / 'pdo.db'}"
    fault = Fault("PATCH", SCALE_DOWN, status=0, delay=30.0)
    em.faults.append(fault)
    log = tmp_path / "serve.log"
    proc = serve_process(server, tmp_path, db, log, PD_OBSERVER_SERVER__SHUTDOWN_GRACE_SECONDS="20")
    with reaped(proc):
        wait_in_flight(fault, proc)
        assert em.get(*LEASE)["spec"].get("holderIdentity")
        proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert proc.poll() is None  # stopping: the autoscaler waits for the request in flight
        assert em.get(*LEASE)["spec"].get("holderIdentity")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
        elapsed = time.monotonic() - t0
    text = log.read_text()
    assert code == 1, text[-3000:]
    assert elapsed < 2 + 1  # the exit margin at most
    assert em.get(*LEASE)["spec"].get("holderIdentity") is None
    assert em.get(*LEASE)["spec"]["leaseDurationSeconds"] == 1
    last = json.loads(text.splitlines()[-1])
    assert (last["level"], last["exit_code"], last["signal"]) == ("error", 1, "SIGTERM")
    assert "second signal" in last["msg"]
