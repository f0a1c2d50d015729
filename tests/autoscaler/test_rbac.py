"""deploy/rbac.yaml (the autoscaler) and deploy/rbac-observer.yaml (`serve`'s pod discovery)
grant exactly what the code uses, on the objects it names.

The manifests are read as the API server's RBAC authorizer reads them: a request is (namespace,
API group, resource[/subresource], verb, name), the verb from the HTTP method (a GET of a
collection is `list`), and a rule with `resourceNames` matches only requests naming one of
those objects (a `create` or a `list` names none). The requests are the ones the real adapters
send, through the real clients, to the API emulator (tests/autoscaler/k8s_emulator.py), for the
example configs of docs/autoscaler.md: so the manifests' names are checked against the
documented examples' targets, and a name the code needs and the manifest lacks (or the reverse)
fails. (test_kubernetes.py::test_requests_are_within_rbac and
test_kubernetes_epp.py::test_llmisvc_route_stays_within_rbac check the resource/verb pairs of
the controller's own test fleets against `rules()`.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from autoscaler.connectors.kubernetes_api import KSERVE_GROUP, KSERVE_PLURAL, KubernetesApi
from autoscaler.kubernetes import EppWeightTarget, KServeVersion, KubernetesLease, KubernetesScaleTarget
from autoscaler.settings import AutoscalerSettings, TargetSettings, parse
from observer import conventions as c
from observer.sources.discovery import KubernetesDiscovery, KubernetesDiscoveryConfig
from tests.autoscaler.k8s_emulator import Emulator, Recorded, RunningEmulator
from tests.autoscaler.test_kubernetes import deployment
from tests.autoscaler.test_kubernetes_epp import DECIDER_YAML, llmisvc

ROOT = Path(__file__).resolve().parents[2]
RBAC = ROOT / "deploy" / "rbac.yaml"
OBSERVER_RBAC = ROOT / "deploy" / "rbac-observer.yaml"
DEPLOYED = ROOT / "deploy" / "observer.yaml"  # its ConfigMap holds the deployed autoscaler config
DOCS = ROOT / "docs" / "autoscaler.md"
NOW = 1_700_000_000.0

# verbs whose requests name one object, so `resourceNames` can restrict them; a create, list,
# watch or deletecollection names none (a rule with resourceNames never grants them here)
NAMEABLE = frozenset({"get", "update", "patch", "delete"})


# -- the manifests as the RBAC authorizer reads them -------------------------------------------
@dataclass(frozen=True, slots=True)
class Rule:
    groups: frozenset[str]
    resources: frozenset[str]
    verbs: frozenset[str]
    names: tuple[str, ...] | None  # None: no resourceNames key

    def allows(self, r: Request) -> bool:
        if r.group not in self.groups or r.resource not in self.resources or r.verb not in self.verbs:
            return False
        return not self.names or r.name in self.names  # empty or absent: every object


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    namespace: str
    rules: tuple[Rule, ...]

    def allows(self, r: Request) -> bool:
        return r.namespace == self.namespace and any(rule.allows(r) for rule in self.rules)


@dataclass(frozen=True, slots=True)
class Request:
    """A request's authorization attributes (k8s.io/apiserver RequestInfo)."""

    namespace: str
    group: str
    resource: str  # resource or resource/subresource
    verb: str
    name: str  # "" when the request names no object (create, list)


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def service_accounts() -> set[tuple[str, str]]:
    """(namespace, name) of every ServiceAccount the deploy/ manifests define (the workloads'
    files, deploy/observer.yaml and deploy/autoscaler.yaml)."""
    return {
        (d["metadata"]["namespace"], d["metadata"]["name"])
        for path in sorted((ROOT / "deploy").glob("*.yaml"))
        for d in documents(path)
        if d["kind"] == "ServiceAccount"
    }


def subjects(path: Path) -> set[tuple[str, str]]:
    """(namespace, name) of the service accounts the manifest's one RoleBinding binds."""
    (binding,) = [d for d in documents(path) if d["kind"] == "RoleBinding"]
    assert all(s["kind"] == "ServiceAccount" for s in binding["subjects"]), binding["subjects"]
    return {(s["namespace"], s["name"]) for s in binding["subjects"]}


def role(path: Path) -> Role:
    """The one Role of a manifest, bound by its one RoleBinding to service accounts that
    deploy/ defines."""
    docs = documents(path)
    (r,) = [d for d in docs if d["kind"] == "Role"]
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding"]
    assert binding["metadata"]["namespace"] == r["metadata"]["namespace"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": r["metadata"]["name"],
    }
    missing = subjects(path) - service_accounts()
    assert not missing, f"{path.name} binds service accounts no deploy/ manifest defines: {missing}"
    return Role(
        r["metadata"]["name"],
        r["metadata"]["namespace"],
        tuple(
            Rule(
                frozenset(x["apiGroups"]),
                frozenset(x["resources"]),
                frozenset(x["verbs"]),
                tuple(x["resourceNames"]) if "resourceNames" in x else None,
            )
            for x in r["rules"]
        ),
    )


def rules() -> set[tuple[str, str, str, bool]]:
    """(group, resource, verb, named) of every grant of deploy/rbac.yaml."""
    return {
        (g, res, v, rule.names is not None)
        for rule in role(RBAC).rules
        for g in rule.groups
        for res in rule.resources
        for v in rule.verbs
    }


def named_grants(r: Role) -> set[tuple[str, str, str, str]]:
    """(group, resource, verb, name) of every grant restricted by name."""
    return {
        (g, res, v, n)
        for rule in r.rules
        if rule.names
        for g in rule.groups
        for res in rule.resources
        for v in rule.verbs
        for n in rule.names
    }


_VERBS = {"PUT": "update", "PATCH": "patch", "POST": "create", "DELETE": "delete"}


def request_of(rec: Recorded) -> Request | None:
    """The authorization attributes of a recorded request; None for a non-resource URL
    (discovery, `GET /apis/<group>/<version>`: the built-in system:discovery role's)."""
    parts = rec.path.strip("/").split("/")
    group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
    if not rest:
        assert rec.method == "GET", rec.path
        return None
    assert rest[0] == "namespaces", f"not a namespaced request: {rec.path}"
    assert len(rest) >= 3, f"not a resource request: {rec.path}"
    namespace, resource, rest = rest[1], rest[2], rest[3:]
    name = rest[0] if rest and rec.method != "POST" else ""
    if len(rest) > 1:
        resource += "/" + rest[1]
    if rec.method == "GET":
        watch = rec.query.get("watch", [""])[0] in ("true", "1")
        verb = "get" if name else ("watch" if watch else "list")
    else:
        verb = _VERBS[rec.method] if name or rec.method == "POST" else "deletecollection"
    return Request(namespace, group, resource, verb, name)


def requests(em: Emulator) -> list[Request]:
    return [r for r in (request_of(rec) for rec in em.requests) if r is not None]


# -- the documented example configs, run against the emulator ---------------------------------
def example_configs() -> list[AutoscalerSettings]:
    """The `autoscaler:` examples of docs/autoscaler.md, then the one of deploy/observer.yaml's
    ConfigMap (the config the deployed `autoscale` runs with)."""
    blocks = re.findall(r"```yaml\n(autoscaler:\n.*?)```", DOCS.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 3
    (cm,) = [d for d in documents(DEPLOYED) if d["kind"] == "ConfigMap"]
    deployed = yaml.safe_load(cm["data"]["observer.yaml"])["autoscaler"]
    return [*(parse(yaml.safe_load(b)["autoscaler"]) for b in blocks), parse(deployed)]


def _seed_target(em: Emulator, target: TargetSettings, ns: str) -> None:
    if target.kind == "Deployment":
        obj = deployment(target.name, 1)
        obj["metadata"]["namespace"] = ns
        em.put("apps/v1", "deployments", obj)
    elif target.kind == "LeaderWorkerSet":
        lws = {
            "apiVersion": "leaderworkerset.x-k8s.io/v1",
            "kind": "LeaderWorkerSet",
            "metadata": {"name": target.name, "namespace": ns, "generation": 1},
            "spec": {"replicas": 1},
            "status": {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1},
        }
        em.put("leaderworkerset.x-k8s.io/v1", "leaderworkersets", lws)
    elif target.kind == "LLMInferenceService":
        # no generated workload: the status read then tries every name KServe could have given one
        svc = llmisvc({"inline": yaml.safe_load(DECIDER_YAML)})
        svc["metadata"].update(name=target.name, namespace=ns)
        em.put(f"{KSERVE_GROUP}/{target.version or 'v1alpha1'}", KSERVE_PLURAL, svc)
    else:
        raise AssertionError(f"seed a {target.kind} target here first")


def seed(em: Emulator, s: AutoscalerSettings) -> None:
    for p in s.pools:
        for role_settings in (p.prefill, p.decode):
            _seed_target(em, role_settings.target, role_settings.target.namespace or p.namespace)
        if p.epp is not None and p.epp.source == "configmap":
            assert p.epp.config_map is not None
            assert p.epp.deployment is not None
            epp = deployment(p.epp.deployment, 1)
            epp["metadata"]["namespace"] = p.namespace
            em.put("apps/v1", "deployments", epp)
            cm = {
                "metadata": {"name": p.epp.config_map, "namespace": p.namespace},
                "data": {p.epp.key: DECIDER_YAML},
            }
            em.put("v1", "configmaps", cm)


def exercise(api: KubernetesApi, s: AutoscalerSettings) -> None:
    """Every call of the Kubernetes adapters for this config, each write taken for real."""
    kserve = KServeVersion(api)
    scale = KubernetesScaleTarget(api, s, kserve)
    epp = EppWeightTarget(api, s, kserve)
    for p in s.pools:
        for r in (c.ROLE_PREFILL, c.ROLE_DECODE):
            status = scale.status(p.name, r)
            scale.scale(p.name, r, status.replicas + 1, dry_run=False)
        if p.epp is not None:
            weights = epp.weights(p.name)
            assert weights
            threshold = epp.decider_threshold(p.name)
            assert threshold is not None
            epp.epp_rolled_out(p.name)
            changed = {k: v + 1 for k, v in weights.items()}
            epp.set_epp(p.name, weights=changed, decider=threshold * 2, now=NOW, dry_run=False)
    if s.lease.enabled:
        lease = KubernetesLease(
            api,
            namespace=s.lease.namespace or s.pools[0].namespace,
            name=s.lease.name,
            identity="pd-observer-0",
            duration_seconds=s.lease_duration_seconds,
        )
        assert lease.try_acquire_or_renew(NOW)  # create (+ the times in a patch)
        assert lease.try_acquire_or_renew(NOW + 15)  # renew
        lease.release(NOW + 20)


def example_requests() -> list[tuple[AutoscalerSettings, list[Request]]]:
    out = []
    for s in example_configs():
        srv = RunningEmulator()
        api = KubernetesApi.connect(
            field_manager=c.K8S_FIELD_MANAGER, request_timeout_seconds=2, host=srv.url
        )
        try:
            seed(srv.emulator, s)
            exercise(api, s)
            # the only misses are what is not there yet: the Lease before its create, KServe's
            # v1alpha2 (discovery) and the KServe generated workloads (a 404, never a 403)
            failed = [(r.method, r.path, r.status) for r in srv.emulator.requests if r.status >= 400]
            expected = ("/leases/", f"/apis/{KSERVE_GROUP}/v1alpha2", "-kserve")
            assert all(code == 404 and any(e in path for e in expected) for _, path, code in failed), failed
            out.append((s, requests(srv.emulator)))
        finally:
            api.close()
            srv.close()
    return out


@pytest.fixture(scope="module")
def examples() -> list[tuple[AutoscalerSettings, list[Request]]]:
    return example_requests()


# -- the autoscaler's Role -------------------------------------------------------------------
def test_exact_grants() -> None:
    assert rules() == {
        ("apps", "deployments", "get", True),
        ("apps", "deployments/scale", "get", True),
        ("apps", "deployments/scale", "patch", True),
        ("apps", "deployments", "patch", True),
        ("leaderworkerset.x-k8s.io", "leaderworkersets", "get", True),
        ("leaderworkerset.x-k8s.io", "leaderworkersets/scale", "get", True),
        ("leaderworkerset.x-k8s.io", "leaderworkersets/scale", "patch", True),
        ("serving.kserve.io", "llminferenceservices", "get", True),
        ("serving.kserve.io", "llminferenceservices", "patch", True),
        ("", "configmaps", "get", True),
        ("", "configmaps", "update", True),
        ("coordination.k8s.io", "leases", "create", False),
        ("coordination.k8s.io", "leases", "get", True),
        ("coordination.k8s.io", "leases", "patch", True),
    }


def test_no_wildcards_or_cluster_scope() -> None:
    for path in (RBAC, OBSERVER_RBAC):
        text = path.read_text(encoding="utf-8")
        assert '"*"' not in text, path
        assert "'*'" not in text, path
        assert "ClusterRole" not in text, path
        for d in documents(path):
            assert d["metadata"].get("namespace"), (path, d["kind"])
    assert not any(v in {"delete", "list", "watch", "deletecollection"} for _, _, v, _ in rules())


@pytest.mark.parametrize("path", [RBAC, OBSERVER_RBAC], ids=lambda p: p.name)
def test_every_rule_that_can_name_its_objects_does(path: Path) -> None:
    """A rule of get/update/patch/delete lists its objects (no resourceNames, or an empty list,
    grants every object of the kind); create/list/watch cannot be restricted by name, so their
    rules carry none (with names they would grant nothing) and hold no nameable verb (which
    would then be granted on every object)."""
    for rule in role(path).rules:
        what = f"{path.name}: {sorted(rule.resources)} {sorted(rule.verbs)}"
        if rule.verbs <= NAMEABLE:
            assert rule.names, f"{what} has no resourceNames: it grants every object of the kind"
            assert all(isinstance(n, str) and n for n in rule.names), what
        else:
            assert not (rule.verbs & NAMEABLE), f"{what}: split the verbs that can be restricted by name"
            assert rule.names is None, f"{what}: resourceNames never match these verbs"


def test_the_documented_examples_are_granted_by_name(
    examples: list[tuple[AutoscalerSettings, list[Request]]],
) -> None:
    """Every request the adapters send for each example config of docs/autoscaler.md is granted,
    resourceNames included, in the Role's namespace (the examples' pool and Lease namespace)."""
    granted = role(RBAC)
    for s, reqs in examples:
        assert reqs
        assert {p.namespace for p in s.pools} | {s.lease.namespace or s.pools[0].namespace} == {
            granted.namespace
        }
        denied = [r for r in reqs if not granted.allows(r)]
        assert not denied, f"not granted by {RBAC.name}: {denied}"


def test_the_manifest_names_exactly_the_documented_examples_objects(
    examples: list[tuple[AutoscalerSettings, list[Request]]],
) -> None:
    """The placeholder names are the examples' targets (and the Lease, the EPP, the workloads
    KServe generates): no name the examples do not use, none they use missing."""
    used = {(r.group, r.resource, r.verb, r.name) for _, reqs in examples for r in reqs if r.verb in NAMEABLE}
    assert named_grants(role(RBAC)) == used
    # spelled out, for the reader (and the header of deploy/rbac.yaml says where each comes from)
    main = example_configs()[0]
    (pool,) = main.pools
    assert pool.epp is not None
    names = {n for *_, n in used}
    assert names == {
        pool.prefill.target.name,  # llama-prefill, a Deployment
        pool.decode.target.name,  # llama-decode, a LeaderWorkerSet
        pool.epp.config_map,  # llama-epp, the ConfigMap ...
        pool.epp.deployment,  # ... and the EPP Deployment
        main.lease.name,  # pd-observer-autoscaler
        "llama",  # the KServe example's LLMInferenceService, and what KServe generates for it:
        "llama-kserve",
        "llama-kserve-prefill",
        "llama-kserve-mn",
        "llama-kserve-mn-prefill",
    }


# -- the observer's Role (pod discovery) -------------------------------------------------------
def test_observer_role_grants_exactly_pod_list() -> None:
    r = role(OBSERVER_RBAC)
    grants = {
        (g, res, v) for rule in r.rules for g in rule.groups for res in rule.resources for v in rule.verbs
    }
    assert grants == {("", "pods", "list")}
    # the pods it lists are the documented fleet's: the same namespace as the autoscaler's Role
    assert r.namespace == role(RBAC).namespace


def _pod(name: str, ns: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "status": {
            "phase": "Running",
            "podIP": "10.0.0.7",
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def test_pod_discovery_is_granted_by_the_observer_role(server: RunningEmulator) -> None:
    """`sources.discovery: kubernetes` lists pods (GET /api/v1/namespaces/<ns>/pods?labelSelector=...,
    a `list`) with the service account's token: the observer's Role grants it, in its namespace."""
    granted = role(OBSERVER_RBAC)
    ns = granted.namespace
    serving = {c.K8S_LABEL_SERVING: "true", c.K8S_LABEL_ROLE: c.ROLE_PREFILL, c.K8S_LABEL_INSTANCE: "llama"}
    server.emulator.put("v1", "pods", _pod("llama-prefill-0", ns, serving))
    server.emulator.put("v1", "pods", _pod("grafana-0", ns, {"app": "grafana"}))
    cfg = KubernetesDiscoveryConfig(api_url=server.url, namespace=ns, token_file=None, ca_file=None)
    discovery = KubernetesDiscovery(cfg)
    try:
        for _ in range(2):  # every read is the same single call
            assert [(p.pod, p.role, p.pool) for p in discovery.pods()] == [
                ("llama-prefill-0", c.ROLE_PREFILL, "llama")
            ]
    finally:
        discovery.close()
    reqs = requests(server.emulator)
    assert reqs == [Request(ns, "", "pods", "list", "")] * 2
    denied = [r for r in reqs if not granted.allows(r)]
    assert not denied, f"not granted by {OBSERVER_RBAC.name}: {denied}"
    # ... and nothing of it is in the autoscaler's Role (another process, another account)
    assert not any(role(RBAC).allows(r) for r in reqs)
