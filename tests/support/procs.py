"""Start real Prometheus / Alertmanager processes for tests, on free loopback ports.

In CI (CI=true) a missing binary is a failure, never a skip (`require_binary`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

# The tests' own HTTP calls (readiness polls, PromQL queries, the service's API) share one client:
# `httpx.get()` builds a new `Client` per call, and every `Client` loads the CA bundle into a fresh
# SSL context, about 50-60 ms of CPU even for an http:// URL (a poll every 0.1 s spent most of its
# time there). No keep-alive: each request still has a connection of its own, as with
# `httpx.get()` (tests of the server's limits send bodies it refuses before reading them).
# httpx's `Client` is thread-safe.
HTTP = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0))


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing(msg: str, *, module: bool = False) -> NoReturn:
    """A component the test needs is missing: a failure in CI, a skip locally (of the whole
    module when called at its top level with `module=True`)."""
    if in_ci():
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg, allow_module_level=module)


def require_binary(name: str) -> str:
    """Path of a binary; fail in CI, skip locally when missing."""
    path = shutil.which(name)
    if path is None:
        missing(f"{name} not found on PATH (install Debian's prometheus / prometheus-alertmanager)")
    return path


@contextlib.contextmanager
def reaped(proc: subprocess.Popen[Any]) -> Iterator[subprocess.Popen[Any]]:
    """`proc`, killed and waited for on the way out if still running: a failing test leaves no
    process behind."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} was ready")
        try:
            if HTTP.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout}s: {last}")


@dataclass
class Prometheus:
    url: str
    config_path: Path
    proc: subprocess.Popen[bytes]

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"query": promql}
        if at is not None:
            params["time"] = at
        r = HTTP.get(f"{self.url}/api/v1/query", params=params, timeout=10.0)
        body = r.json()
        if body.get("status") != "success":
            raise AssertionError(f"query {promql!r} failed: {body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_for(self, promql: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Poll until the query returns at least one series (a query costs a few ms: poll often)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(promql)
            if result:
                return result
            time.sleep(0.1)
        raise AssertionError(f"no data for {promql!r} after {timeout}s")

    def reload(self) -> None:
        HTTP.post(f"{self.url}/-/reload", timeout=10.0).raise_for_status()


@contextlib.contextmanager
def run_prometheus(config_yaml: str, extra_files: dict[str, str] | None = None) -> Iterator[Prometheus]:
    """Run Prometheus with the given config (and files beside it, e.g. rule files)."""
    binary = require_binary("prometheus")
    with tempfile.TemporaryDirectory(prefix="pdo-prom-") as tmp:
        root = Path(tmp)
        for name, text in (extra_files or {}).items():
            (root / name).write_text(text)
        cfg = root / "prometheus.yml"
        cfg.write_text(config_yaml)
        port = free_port()
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={cfg}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=1d",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(root / "prometheus.log").open("wb"),
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_http(f"{url}/-/ready", proc=proc)
            yield Prometheus(url=url, config_path=cfg, proc=proc)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass
class Alertmanager:
    url: str
    proc: subprocess.Popen[bytes]


@contextlib.contextmanager
def run_alertmanager(config_yaml: str) -> Iterator[Alertmanager]:
    binary = require_binary("prometheus-alertmanager")
    with tempfile.TemporaryDirectory(prefix="pdo-am-") as tmp:
        root = Path(tmp)
        cfg = root / "alertmanager.yml"
        cfg.write_text(config_yaml)
        port = free_port()
        cluster_port = free_port()
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={cfg}",
                f"--storage.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                f"--cluster.listen-address=127.0.0.1:{cluster_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(root / "alertmanager.log").open("wb"),
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_http(f"{url}/-/ready", proc=proc)
            yield Alertmanager(url=url, proc=proc)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
