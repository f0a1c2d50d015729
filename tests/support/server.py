"""Run the real pd-observer service for a test: in a thread (uvicorn) or as a subprocess."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from observer.api.app import create_app
from observer.config import load_settings
from observer.store.repository import Store
from tests.support.procs import HTTP, free_port, wait_http


@dataclass
class Running:
    url: str
    app: Any

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return HTTP.get(self.url + path, timeout=10.0, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return HTTP.post(self.url + path, timeout=30.0, **kw)

    def put(self, path: str, **kw: Any) -> httpx.Response:
        return HTTP.put(self.url + path, timeout=30.0, **kw)

    def tenants(self, window: int = 3600, **params: Any) -> dict[str, dict[str, Any]]:
        r = self.get("/api/v1/tenants", params={"window": window, **params})
        r.raise_for_status()
        return {t["tenant"]: t for t in r.json()["tenants"]}


@contextlib.contextmanager
def serve_in_thread(
    tmp: Path, overrides: dict[str, Any] | None = None, clock: Any = None
) -> Iterator[Running]:
    port = free_port()
    base: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": port},
        "store": {"url": f"sqlite:///{tmp / 'pdo.db'}"},
    }
    for key, value in (overrides or {}).items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    settings = load_settings(None, overrides=base, env={})
    store = Store.open(settings.store.url)
    app = create_app(settings, store, clock=clock)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/readyz", timeout=30)
        yield Running(url=url, app=app)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@dataclass
class Proc:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self) -> int:
        self.proc.terminate()
        return self.proc.wait(timeout=30)


@contextlib.contextmanager
def serve_subprocess(db_url: str, tmp: Path, env: dict[str, str] | None = None) -> Iterator[Proc]:
    port = free_port()
    log = tmp / f"serve-{port}.log"
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "observer.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--db",
            db_url,
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=full_env,
        cwd=str(Path(__file__).resolve().parents[2]),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/readyz", timeout=60, proc=proc)
        yield Proc(url=url, proc=proc, log=log)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        time.sleep(0)
