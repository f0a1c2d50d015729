"""deploy/observer.yaml, deploy/autoscaler.yaml and the Dockerfile, checked against the code
they run and run as Kubernetes would run them.

What a cluster provides is stood in for, and only that: the Secret's values (a token and a
fresh PostgreSQL database), the mounted ConfigMap (its file in a temporary directory at the
mount's relative path), the in-cluster API server (the API emulator over real HTTP, with a
service-account token file) and a free port instead of 8080. Everything else (the container's
args and env, the config file, the probes' paths, the grace period) is read from the manifests.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from autoscaler.settings import parse
from observer.config import SHUTDOWN_EXIT_MARGIN_SECONDS, Settings, load_settings
from tests.autoscaler.k8s_emulator import RunningEmulator
from tests.autoscaler.test_rbac import (
    OBSERVER_RBAC,
    RBAC,
    Request,
    documents,
    requests,
    role,
    seed,
    subjects,
)
from tests.observer.store.conftest import fresh_pg_database
from tests.support.procs import free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OBSERVER = DEPLOY / "observer.yaml"
AUTOSCALER = DEPLOY / "autoscaler.yaml"
DOCKERFILE = ROOT / "Dockerfile"
CLI = str(Path(sys.executable).with_name("pd-observer"))
SECRET = {"auth-token": "deploy-test-token-0123456789abcdef"}  # the database URL is per test


# -- reading the manifests ---------------------------------------------------------------------
def kind(path: Path, k: str) -> list[dict[str, Any]]:
    return [d for d in documents(path) if d["kind"] == k]


def deployment(path: Path) -> dict[str, Any]:
    (d,) = kind(path, "Deployment")
    return d


def container(path: Path) -> dict[str, Any]:
    (ctr,) = deployment(path)["spec"]["template"]["spec"]["containers"]
    return ctr


def config_map() -> dict[str, Any]:
    (cm,) = kind(OBSERVER, "ConfigMap")
    return cm


def config_text() -> str:
    text: str = config_map()["data"]["observer.yaml"]
    return text


@dataclass(frozen=True)
class Pod:
    """A Deployment's container as a local process: argv, env and where its config lives."""

    argv: list[str]
    env: dict[str, str]
    config: Path
    grace: float


def as_process(path: Path, tmp: Path, database_url: str, extra_env: dict[str, str]) -> Pod:
    """The container of `path`'s Deployment as a local command: its args after the image's
    entrypoint (`pd-observer`, the Dockerfile's), its env with the Secret's values, its
    ConfigMap volume written under `tmp` at the mount path."""
    dep = deployment(path)
    spec = dep["spec"]["template"]["spec"]
    ctr = container(path)
    mounts = {v["name"]: v["mountPath"] for v in ctr["volumeMounts"]}
    (cfg_vol,) = [v for v in spec["volumes"] if "configMap" in v]
    assert cfg_vol["configMap"]["name"] == config_map()["metadata"]["name"]
    mount = tmp / mounts[cfg_vol["name"]].lstrip("/")
    mount.mkdir(parents=True)
    for key, text in config_map()["data"].items():
        (mount / key).write_text(text, encoding="utf-8")
    secret = {**SECRET, "database-url": database_url}
    env: dict[str, str] = {}
    for e in ctr.get("env", []):
        ref = e["valueFrom"]["secretKeyRef"]
        assert ref["name"] == config_map()["metadata"]["name"]  # the Secret the header creates
        env[e["name"]] = secret[ref["key"]]
    args = [a.replace(mounts[cfg_vol["name"]], str(mount)) for a in ctr["args"]]
    assert any(str(mount) in a for a in args), "the args do not name the mounted config file"
    return Pod(
        [CLI, *args], {**env, **extra_env}, mount / "observer.yaml", spec["terminationGracePeriodSeconds"]
    )


# -- static consistency ------------------------------------------------------------------------
def test_the_config_map_is_a_valid_config_for_every_command() -> None:
    """The mounted file loads with the same validation every command applies (unknown keys,
    every section), and what the manifests rely on is in it."""
    settings = load_settings(None)  # defaults, to compare with
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"pdo-deploy-{os.getpid()}.yaml"
    path.write_text(config_text(), encoding="utf-8")
    try:
        s: Settings = load_settings(path)
    finally:
        path.unlink()
    port = next(p["containerPort"] for p in container(OBSERVER)["ports"] if p["name"] == "http")
    assert s.server.port == port == settings.server.port
    # serve exits by the grace + its margin (observer/wiring/shutdown.py), before the SIGKILL
    assert (
        s.server.shutdown_grace_seconds + SHUTDOWN_EXIT_MARGIN_SECONDS
        < deployment(OBSERVER)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    )
    assert s.sources["discovery"] == "kubernetes"
    # the pods discovery lists are where the observer's Role lets it list them
    assert s.sources["kubernetes"]["namespace"] == role(OBSERVER_RBAC).namespace
    # the autoscaler section parses, and its pools are where the autoscaler's Role is
    a = parse(s.autoscaler)
    assert a.mode == "observe"  # a first deployment recommends only (docs/autoscaler.md)
    assert {p.namespace for p in a.pools} == {role(RBAC).namespace}


def test_probes_ports_and_service_match_the_app() -> None:
    ctr = container(OBSERVER)
    ports = {p["name"]: p["containerPort"] for p in ctr["ports"]}
    from observer.api.app import create_app  # the routes the probes name exist
    from observer.store import MemoryStore

    paths = {getattr(r, "path", "") for r in create_app(Settings(), MemoryStore()).routes}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = ctr[probe]["httpGet"]
        assert get["port"] in ports, probe
        assert get["path"] in paths, probe
    assert ctr["readinessProbe"]["httpGet"]["path"] == "/readyz"
    (svc,) = kind(OBSERVER, "Service")
    pod_labels = deployment(OBSERVER)["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert deployment(OBSERVER)["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (sp,) = svc["spec"]["ports"]
    assert sp["targetPort"] in ports
    # the autoscaler's pods are not selected by the observer's Service (they serve nothing)
    auto_labels = deployment(AUTOSCALER)["spec"]["template"]["metadata"]["labels"]
    assert not svc["spec"]["selector"].items() <= auto_labels.items()


def test_each_workload_runs_as_an_account_bound_to_what_it_calls() -> None:
    """serve lists pods (discovery: kubernetes): bound by rbac-observer.yaml. autoscale scales
    the targets (rbac.yaml) and reads the pods for its arrival side (rbac-observer.yaml)."""

    def account(path: Path) -> tuple[str, str]:
        dep = deployment(path)
        return dep["metadata"]["namespace"], dep["spec"]["template"]["spec"]["serviceAccountName"]

    for path in (OBSERVER, AUTOSCALER):
        ns, name = account(path)
        assert (ns, name) in {
            (d["metadata"]["namespace"], d["metadata"]["name"]) for d in kind(path, "ServiceAccount")
        }
    assert subjects(OBSERVER_RBAC) == {account(OBSERVER), account(AUTOSCALER)}
    assert subjects(RBAC) == {account(AUTOSCALER)}


def test_pods_run_unprivileged_with_a_read_only_root() -> None:
    uid = int(re.search(r"^USER (\d+)", DOCKERFILE.read_text(encoding="utf-8"), re.M).group(1))  # type: ignore[union-attr]
    for path in (OBSERVER, AUTOSCALER):
        spec = deployment(path)["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == uid  # the image's user
        ctr = container(path)
        sc = ctr["securityContext"]
        assert sc == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        assert "memory" in ctr["resources"]["limits"]
        # the image's working directory is the writable emptyDir (SQLite default path, temp files)
        workdir = re.search(r"^WORKDIR (\S+)", DOCKERFILE.read_text(encoding="utf-8").split("FROM")[-1], re.M)
        assert workdir is not None
        assert workdir.group(1) in {m["mountPath"] for m in ctr["volumeMounts"] if m["name"] == "tmp"}


def test_dockerfile_builds_what_pyproject_packages() -> None:
    """Every package pyproject installs is copied into the build stage, with the files the
    build reads; the entrypoint is the console script; the port is the app's."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    copied = {
        src for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M) for src in shlex.split(line)[:-1]
    }
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= copied, packages - copied
    needed = {"pyproject.toml", "setup.py", project["project"]["readme"], "constraints.txt"}
    assert needed <= copied, needed - copied
    (script,) = project["project"]["scripts"]
    assert re.search(r'^ENTRYPOINT \["(.+)"\]$', text, re.M).group(1) == script  # type: ignore[union-attr]
    assert f"EXPOSE {Settings().server.port}" in text
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert not copied & set(ignored)


def test_the_wheel_the_image_installs_runs_from_outside_the_repository(tmp_path: Path) -> None:
    """The image runs the installed wheel, not the checkout: build it (no network: this
    environment's setuptools, no dependencies) and run the migrations, the native decoder and
    the generators from it, imported from a directory outside the repository."""
    out = tmp_path / "wheel"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (whl,) = out.glob("pd_observer-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(whl) as z:
        names = set(z.namelist())
        z.extractall(site)
    assert any(n.startswith("observer/ingest/_otlpfast") and n.endswith(".so") for n in names)
    assert {
        f"migrations/versions/{p.name}" for p in (ROOT / "migrations" / "versions").glob("0*.py")
    } <= names
    probe = (
        "import observer, sys\n"
        f"assert observer.__file__.startswith({str(site)!r}), observer.__file__\n"
        "from observer.ingest import fastpath\n"
        "from observer.config import Settings\n"
        "from observer.ingest.resolve import ResolveConfig\n"
        "cfg = ResolveConfig.from_settings(Settings().ingest)\n"
        "assert fastpath.path(cfg) == 'native', 'native decoder missing from the wheel'\n"
        "from observer.cli import main\n"
        f"assert main(['db', 'upgrade', '--db', 'sqlite:///{tmp_path}/w.db']) == 0\n"
        f"assert main(['alerts', 'export', '{tmp_path}/alerts']) == 0\n"
        f"assert main(['dashboards', 'export', '{tmp_path}/dash']) == 0\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "alerts" / "pd-observer-rules.yaml").is_file()


# -- the containers, run -----------------------------------------------------------------------
@pytest.fixture
def database() -> Iterator[str]:
    with fresh_pg_database() as url:
        yield url


@pytest.fixture
def apiserver() -> Iterator[RunningEmulator]:
    srv = RunningEmulator()
    yield srv
    srv.close()


def cluster_env(tmp: Path, api: str) -> dict[str, str]:
    """What the cluster provides a pod: the API server and the mounted service-account token."""
    token = tmp / "sa-token"
    token.write_text("sa-token-value\n", encoding="utf-8")
    return {
        "PD_OBSERVER_SOURCES__KUBERNETES__API_URL": api,
        "PD_OBSERVER_SOURCES__KUBERNETES__TOKEN_FILE": str(token),
        "PD_OBSERVER_SOURCES__KUBERNETES__CA_FILE": str(tmp / "no-ca.crt"),
    }


@pytest.mark.slow
@pytest.mark.postgres
def test_serve_container_starts_probes_authenticates_and_stops_in_its_grace(
    tmp_path: Path, database: str, apiserver: RunningEmulator
) -> None:
    port = free_port()
    pod = as_process(
        OBSERVER,
        tmp_path,
        database,
        {**cluster_env(tmp_path, apiserver.url), "PD_OBSERVER_SERVER__PORT": str(port)},
    )
    ctr = container(OBSERVER)
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        pod.argv, env={**os.environ, **pod.env}, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        # the startup probe's budget
        startup = ctr["startupProbe"]
        deadline = time.monotonic() + startup["periodSeconds"] * startup["failureThreshold"]
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(url + startup["httpGet"]["path"], timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the startup probe would have failed"
            time.sleep(0.2)
        for probe in ("livenessProbe", "readinessProbe"):
            r = httpx.get(url + ctr[probe]["httpGet"]["path"], timeout=ctr[probe].get("timeoutSeconds", 1))
            assert r.status_code == 200, (probe, r.text)
        # the Secret's token is enforced; with it, ingest and the API work
        assert httpx.get(url + "/metrics", timeout=5).status_code == 401
        auth = {"Authorization": f"Bearer {SECRET['auth-token']}"}
        assert httpx.get(url + "/metrics", headers=auth, timeout=5).status_code == 200
        r = httpx.post(
            url + "/v1/traces", content=b"{}", headers={**auth, "Content-Type": "application/json"}
        )
        assert r.status_code == 200, r.text
        # discovery: kubernetes listed the served namespace's pods on the API server
        ns = load_settings(pod.config).sources["kubernetes"]["namespace"]
        want = Request(ns, "", "pods", "list", "")
        deadline = time.monotonic() + 30
        while want not in requests(apiserver.emulator):
            assert time.monotonic() < deadline, apiserver.emulator.requests
            time.sleep(0.2)
        # the schema is in the Secret's database
        import sqlalchemy as sa

        eng = sa.create_engine(database)
        with eng.connect() as conn:
            assert "requests" in sa.inspect(conn).get_table_names()
        eng.dispose()
        # Kubernetes stops a pod with SIGTERM, then SIGKILL after the grace period
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=pod.grace)
        text = (tmp_path / "serve.log").read_text()
        assert code == 0, text[-3000:]
        assert '"msg": "stopped"' in text  # the app's shutdown ran (batches drained, store closed)
        assert time.monotonic() - t0 < pod.grace
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


@pytest.mark.slow
@pytest.mark.postgres
def test_autoscale_container_ticks_within_its_roles(
    tmp_path: Path, database: str, apiserver: RunningEmulator
) -> None:
    """`autoscale` with the Deployment's args and the ConfigMap's config (plus `--once
    --server`, standing in for the in-cluster API): it takes the Lease, reads its targets and
    the pods, records a decision, and every request it sends is granted by a Role bound to its
    account."""
    pod = as_process(AUTOSCALER, tmp_path, database, cluster_env(tmp_path, apiserver.url))
    settings = load_settings(pod.config)
    seed(apiserver.emulator, parse(settings.autoscaler))
    run = subprocess.run(
        [*pod.argv, "--once", "--server", apiserver.url],
        env={**os.environ, **pod.env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    decisions = [line for line in run.stdout.splitlines() if line.startswith("{")]
    assert decisions, run.stdout
    assert json.loads(decisions[0])["mode"] == "observe"
    reqs = requests(apiserver.emulator)
    assert Request(role(RBAC).namespace, "coordination.k8s.io", "leases", "create", "") in reqs
    assert Request(role(OBSERVER_RBAC).namespace, "", "pods", "list", "") in reqs
    granted = (role(RBAC), role(OBSERVER_RBAC))
    denied = [r for r in reqs if not any(g.allows(r) for g in granted)]
    assert not denied, denied
    # nothing written but the Lease: observe mode
    assert all(r.resource == "leases" for r in reqs if r.verb in {"create", "update", "patch"})
    # the decision is in the Secret's database, where serve's GET /api/v1/decisions reads it
    from autoscaler.audit import SqlAuditLog

    audit = SqlAuditLog.open(database)
    try:
        (stored,) = audit.decisions(pool="llama")
    finally:
        audit.close()
    assert stored["mode"] == "observe"
