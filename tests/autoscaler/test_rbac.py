"""deploy/rbac.yaml grants exactly the resources/verbs the actuators use (the requests they
really send are checked against it in test_kubernetes.py::test_requests_are_within_rbac)."""

from __future__ import annotations

from pathlib import Path

import yaml

RBAC = Path(__file__).resolve().parents[2] / "deploy" / "rbac.yaml"


def rules() -> set[tuple[str, str, str, bool]]:
    docs = list(yaml.safe_load_all(RBAC.read_text(encoding="utf-8")))
    (role,) = [d for d in docs if d["kind"] == "Role"]
    out = set()
    for r in role["rules"]:
        for g in r["apiGroups"]:
            for res in r["resources"]:
                for v in r["verbs"]:
                    out.add((g, res, v, "resourceNames" in r))
    return out


def test_exact_grants() -> None:
    assert rules() == {
        ("apps", "deployments", "get", False),
        ("apps", "statefulsets", "get", False),
        ("apps", "deployments/scale", "get", False),
        ("apps", "deployments/scale", "patch", False),
        ("apps", "statefulsets/scale", "get", False),
        ("apps", "statefulsets/scale", "patch", False),
        ("apps", "deployments", "patch", True),
        ("leaderworkerset.x-k8s.io", "leaderworkersets", "get", False),
        ("leaderworkerset.x-k8s.io", "leaderworkersets/scale", "get", False),
        ("leaderworkerset.x-k8s.io", "leaderworkersets/scale", "patch", False),
        ("serving.kserve.io", "llminferenceservices", "get", False),
        ("serving.kserve.io", "llminferenceservices", "patch", False),
        ("", "configmaps", "get", True),
        ("", "configmaps", "update", True),
        ("coordination.k8s.io", "leases", "create", False),
        ("coordination.k8s.io", "leases", "get", True),
        ("coordination.k8s.io", "leases", "patch", True),
    }


def test_no_wildcards_or_cluster_scope() -> None:
    text = RBAC.read_text(encoding="utf-8")
    assert '"*"' not in text
    assert "ClusterRole" not in text
    assert not any(v in {"delete", "list", "watch", "deletecollection"} for _, _, v, _ in rules())
