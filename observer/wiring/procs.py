"""Processes and threads the demo runs: the service (uvicorn in a thread), a webhook that
records Alertmanager notifications, and Prometheus/Alertmanager with generated configs."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml
from fastapi import FastAPI

from observer import conventions as c

PROMETHEUS_BIN = "prometheus"
ALERTMANAGER_BIN = "prometheus-alertmanager"


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def pick_port(host: str, preferred: int | None) -> int:
    """`preferred` when it is free (0/None = any), else a free ephemeral port."""
    if preferred and port_free(host, preferred):
        return preferred
    return free_port(host)


def wait_ready(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    # one client for every poll: an `httpx.get` per poll builds a Client each time, whose fresh SSL
    # context (the CA bundle loaded) costs ~50 ms of CPU, half of the 0.1 s poll interval
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"process exited with code {proc.returncode} before {url} was ready")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url).status_code == 200:
                    return
            time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout:.0f} s")


class ServiceThread:
    """The pd-observer app served by uvicorn in a daemon thread."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        self.url = f"http://{host}:{port}"
        self._server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="on")
        )
        self._thread = threading.Thread(target=self._server.run, name="pd-observer-service", daemon=True)

    def start(self, timeout: float = 30.0) -> None:
        self._thread.start()
        wait_ready(self.url + "/readyz", timeout)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)


@dataclass(frozen=True, slots=True)
class Notification:
    wall: float
    body: dict[str, Any]


class WebhookRecorder:
    """An Alertmanager webhook receiver keeping the last `maxlen` notifications."""

    def __init__(self, host: str = "127.0.0.1", maxlen: int = 1000) -> None:
        self.notifications: deque[Notification] = deque(maxlen=maxlen)
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(n)
                with contextlib.suppress(ValueError):
                    recorder.notifications.append(Notification(time.time(), json.loads(raw)))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://{host}:{self._server.server_address[1]}/alerts"
        self._thread = threading.Thread(target=self._server.serve_forever, name="demo-webhook", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def prometheus_config(
    *,
    service: str,
    twin_targets_url: str,
    rules_file: Path,
    alertmanager: str | None,
    token: str | None,
    scrape_interval: str = "1s",
) -> dict[str, Any]:
    """prometheus.yml: scrape the service and (via http_sd) every twin pod and the EPP."""
    svc_job: dict[str, Any] = {"job_name": c.DEMO_JOB_SERVICE, "static_configs": [{"targets": [service]}]}
    if token:
        svc_job["authorization"] = {"credentials": token}
    cfg: dict[str, Any] = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "rule_files": [str(rules_file)],
        "scrape_configs": [
            svc_job,
            {
                "job_name": c.DEMO_JOB_TWIN,
                "http_sd_configs": [{"url": twin_targets_url, "refresh_interval": "5s"}],
            },
        ],
    }
    if alertmanager:
        cfg["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    return cfg


class PromStack:
    """Prometheus (+ Alertmanager) processes started with generated configs in `root`."""

    def __init__(self, root: Path, host: str = "127.0.0.1") -> None:
        self.root = root
        self.host = host
        self.procs: list[subprocess.Popen[bytes]] = []
        self.prometheus_url: str | None = None
        self.alertmanager_url: str | None = None
        self._client: httpx.Client | None = None  # for the queries (one Client: see wait_ready)

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=5.0)
        return self._client

    @staticmethod
    def available() -> tuple[str | None, str | None]:
        return shutil.which(PROMETHEUS_BIN), shutil.which(ALERTMANAGER_BIN)

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        log = (self.root / log_name).open("wb")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def start_alertmanager(self, binary: str, config_file: Path) -> str:
        port, cluster = free_port(self.host), free_port(self.host)
        proc = self._spawn(
            [
                binary,
                f"--config.file={config_file}",
                f"--storage.path={self.root / 'alertmanager-data'}",
                f"--web.listen-address={self.host}:{port}",
                f"--cluster.listen-address={self.host}:{cluster}",
            ],
            "alertmanager.log",
        )
        url = f"http://{self.host}:{port}"
        wait_ready(url + "/-/ready", 30, proc)
        self.alertmanager_url = url
        return f"{self.host}:{port}"

    def start_prometheus(self, binary: str, config: dict[str, Any]) -> str:
        cfg = self.root / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        port = free_port(self.host)
        proc = self._spawn(
            [
                binary,
                f"--config.file={cfg}",
                f"--storage.tsdb.path={self.root / 'prometheus-data'}",
                f"--web.listen-address={self.host}:{port}",
                "--storage.tsdb.retention.time=1d",
            ],
            "prometheus.log",
        )
        url = f"http://{self.host}:{port}"
        wait_ready(url + "/-/ready", 30, proc)
        self.prometheus_url = url
        return url

    def query(self, promql: str) -> list[dict[str, Any]]:
        if self.prometheus_url is None:
            return []
        r = self._http().get(f"{self.prometheus_url}/api/v1/query", params={"query": promql})
        body = r.json()
        if body.get("status") != "success":
            return []
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        if self.prometheus_url is None:
            return []
        r = self._http().get(f"{self.prometheus_url}/api/v1/alerts")
        out: list[dict[str, Any]] = r.json().get("data", {}).get("alerts", [])
        return out

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()
        if self._client is not None:
            self._client.close()
            self._client = None
