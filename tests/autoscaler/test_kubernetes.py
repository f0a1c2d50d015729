"""The Kubernetes actuators with the real `kubernetes` client against an emulated API server
over real HTTP on loopback (tests/autoscaler/k8s_emulator.py)."""

from __future__ import annotations

from typing import Any

import pytest

from autoscaler.connectors.kubernetes_api import KubernetesApi, ResourceRef
from autoscaler.kubernetes import (
    EppWeightTarget,
    KubernetesLease,
    KubernetesScaleTarget,
    kserve_child_name,
)
from autoscaler.loop import Controller, LeadershipLost, Mode, RetryPolicy, call_with_retries
from autoscaler.ports import (
    ManualClock,
    MemoryAuditSink,
    NotFoundError,
    PermanentError,
    StaticObservations,
    TemporaryError,
)
from autoscaler.settings import AutoscalerSettings, parse
from autoscaler.types import Demand, ReasonCode, Signals
from observer import conventions as c
from tests.autoscaler.k8s_emulator import Emulator, Fault, RunningEmulator

NS = "llm"
EPP_YAML = """\
apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
# tuned by hand, keep the comments
plugins:
- type: prefix-cache-scorer
- type: queue-scorer
schedulingProfiles:
- name: decode
  plugins:
  - pluginRef: decode-filter
  - pluginRef: max-score-picker
  - {pluginRef: prefix-cache-scorer, weight: 2}   # cache first
  - {pluginRef: queue-scorer, weight: 1}
  - pluginRef: kv-cache-utilization-scorer
    weight: 1
"""


def deployment(name: str, replicas: int, ready: int | None = None, **status: Any) -> dict[str, Any]:
    ready = replicas if ready is None else ready
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "generation": 1},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": []}},
        },
        "status": {
            "observedGeneration": 1,
            "replicas": replicas,
            "readyReplicas": ready,
            "updatedReplicas": replicas,
            **status,
        },
    }


def put_leaderworkerset(em: Emulator, name: str, replicas: int, status: dict[str, Any]) -> None:
    em.put(
        "leaderworkerset.x-k8s.io/v1",
        "leaderworkersets",
        {
            "apiVersion": "leaderworkerset.x-k8s.io/v1",
            "kind": "LeaderWorkerSet",
            "metadata": {"name": name, "namespace": NS, "generation": 1},
            "spec": {"replicas": replicas},
            "status": status,
        },
    )


def settings(
    prefill: dict[str, Any] | None = None, decode: dict[str, Any] | None = None, **kw: Any
) -> AutoscalerSettings:
    return parse(
        {
            "mode": "apply",
            "pools": [
                {
                    "name": "llama",
                    "namespace": NS,
                    "prefill": {
                        "target": prefill or {"name": "llama-prefill"},
                        "capacity_tokens_per_s": 10_000,
                    },
                    "decode": {"target": decode or {"name": "llama-decode"}, "capacity_tokens_per_s": 2_000},
                    "scale_up_cooldown_seconds": 0,
                    "scale_down_cooldown_seconds": 0,
                    "epp": {"config_map": "llama-epp", "key": "config.yaml", "deployment": "llama-epp"},
                    **kw,
                }
            ],
        }
    )


def seed(em: Emulator, prefill: int = 1, decode: int = 1) -> None:
    em.put("apps/v1", "deployments", deployment("llama-prefill", prefill))
    em.put("apps/v1", "deployments", deployment("llama-decode", decode))
    em.put("apps/v1", "deployments", deployment("llama-epp", 1))
    em.put(
        "v1",
        "configmaps",
        {"metadata": {"name": "llama-epp", "namespace": NS}, "data": {"config.yaml": EPP_YAML}},
    )


def controller(
    api: KubernetesApi, s: AutoscalerSettings, mode: Mode, clock: ManualClock, **kw: Any
) -> Controller:
    return Controller(
        config=s.policy_config(),
        mode=mode,
        scale=KubernetesScaleTarget(api, s),
        weights=EppWeightTarget(api, s),
        source=kw.pop("source", StaticObservations(demand={"llama": Demand(40_000, 4_000, 0.5, 40)})),
        clock=clock,
        sleeper=clock,
        audit=kw.pop("audit", MemoryAuditSink()),
        retry=RetryPolicy((0.1, 0.2, 0.4)),
        **kw,
    )


def test_scale_patch_uses_scale_subresource_resource_version_and_field_manager(
    em: Emulator, api: KubernetesApi
) -> None:
    seed(em)
    s = settings()
    target = KubernetesScaleTarget(api, s)
    status = target.status("llama", c.ROLE_PREFILL)
    assert (status.replicas, status.ready, status.stable) == (1, 1, True)
    rv_before = em.get("apps/v1", "deployments", NS, "llama-prefill")["metadata"]["resourceVersion"]
    detail = target.scale("llama", c.ROLE_PREFILL, 3, dry_run=False)
    assert "1 -> 3" in detail
    (patch,) = em.writes("PATCH")
    assert patch.path == f"/apis/apps/v1/namespaces/{NS}/deployments/llama-prefill/scale"
    assert patch.body == {"metadata": {"resourceVersion": rv_before}, "spec": {"replicas": 3}}
    assert patch.query["fieldManager"] == [c.K8S_FIELD_MANAGER]
    assert "dryRun" not in patch.query
    assert em.get("apps/v1", "deployments", NS, "llama-prefill")["spec"]["replicas"] == 3


def test_stale_resource_version_is_a_temporary_conflict(em: Emulator, api: KubernetesApi) -> None:
    seed(em)
    ref = ResourceRef("Deployment", NS, "llama-decode")
    stale = api.get_scale(ref).resource_version
    em.put("apps/v1", "deployments", deployment("llama-decode", 2))  # someone else wrote in between
    with pytest.raises(TemporaryError, match="409"):
        api.patch_scale(ref, 5, stale, dry_run=False)
    assert em.get("apps/v1", "deployments", NS, "llama-decode")["spec"]["replicas"] == 2


def test_409_then_success_is_retried_with_a_fresh_read(em: Emulator, api: KubernetesApi) -> None:
    seed(em)
    em.faults.append(Fault("PATCH", "/scale", status=409))
    clock = ManualClock()
    target = KubernetesScaleTarget(api, settings())
    _, attempts = call_with_retries(
        lambda: target.scale("llama", c.ROLE_DECODE, 2, dry_run=False), RetryPolicy((0.1, 0.2)), clock
    )
    assert attempts == 2
    assert clock.slept == [0.1]
    assert [r.status for r in em.writes("PATCH")] == [409, 200]
    assert len([r for r in em.requests if r.method == "GET" and r.path.endswith("/scale")]) == 2
    assert em.get("apps/v1", "deployments", NS, "llama-decode")["spec"]["replicas"] == 2


def test_500_and_timeout_are_retried(em: Emulator, api: KubernetesApi) -> None:
    seed(em)
    em.faults.append(Fault("PATCH", "/scale", status=500))
    em.faults.append(Fault("PATCH", "/scale", status=0, delay=1.5))  # past the 0.5 s client timeout
    clock = ManualClock()
    target = KubernetesScaleTarget(api, settings())
    _, attempts = call_with_retries(
        lambda: target.scale("llama", c.ROLE_PREFILL, 4, dry_run=False), RetryPolicy((0.1, 0.2, 0.4)), clock
    )
    assert attempts == 3
    assert clock.slept == [0.1, 0.2]
    assert em.get("apps/v1", "deployments", NS, "llama-prefill")["spec"]["replicas"] == 4


def test_retries_exhausted_raise_the_last_temporary_error(em: Emulator, api: KubernetesApi) -> None:
    seed(em)
    em.faults.append(Fault("PATCH", "/scale", status=503, times=10))
    target = KubernetesScaleTarget(api, settings())
    with pytest.raises(TemporaryError, match="503"):
        call_with_retries(
            lambda: target.scale("llama", c.ROLE_PREFILL, 4, dry_run=False),
            RetryPolicy((0, 0)),
            ManualClock(),
        )
    assert len(em.writes("PATCH")) == 3


def test_missing_target_is_reported_not_retried(em: Emulator, api: KubernetesApi) -> None:
    seed(em)
    s = settings(decode={"name": "does-not-exist"})
    target = KubernetesScaleTarget(api, s)
    with pytest.raises(NotFoundError, match="404"):
        target.scale("llama", c.ROLE_DECODE, 2, dry_run=False)
    audit = MemoryAuditSink()
    clock = ManualClock(1000.0)
    ctl = controller(api, s, Mode.APPLY, clock, audit=audit)
    ctl.tick()
    entry = audit.entries[-1]
    assert any(h.reason == ReasonCode.MISSING_DATA and h.role == c.ROLE_DECODE for h in entry.holds)
    assert em.writes("PATCH", "/scale") == []  # never acts on a pool it cannot fully see
    assert clock.slept == []  # 404 is permanent: no backoff


def test_scale_up_in_progress_may_grow_but_never_shrink(em: Emulator, api: KubernetesApi) -> None:
    # demand asks for 3 prefill (20k uncached tok/s / (10k x 0.8)).
    # 4 desired, 1 ready (a scale-up still starting): not shrunk to 3 while it starts
    seed(em, prefill=4)
    em.put("apps/v1", "deployments", deployment("llama-prefill", 4, ready=1))
    ctl = controller(api, settings(), Mode.APPLY, ManualClock(1000.0), audit=MemoryAuditSink())
    report = ctl.tick()
    assert report.effects is not None
    p = next(d for d in report.effects.decisions if d.role == c.ROLE_PREFILL)
    assert (p.current, p.desired) == (4, 4)
    assert ReasonCode.SCALE_UP_IN_PROGRESS in p.reasons
    assert em.writes("PATCH", "llama-prefill/scale") == []


def test_scale_up_in_progress_grows_when_the_need_persists(em: Emulator, api: KubernetesApi) -> None:
    # 2 desired, 1 ready, the need (3) persists: grows while the first scale-up starts
    seed(em, prefill=2)
    em.put("apps/v1", "deployments", deployment("llama-prefill", 2, ready=1))
    ctl = controller(api, settings(), Mode.APPLY, ManualClock(1000.0), audit=MemoryAuditSink())
    report = ctl.tick()
    assert report.effects is not None
    p = next(d for d in report.effects.decisions if d.role == c.ROLE_PREFILL)
    assert (p.current, p.desired) == (2, 3), p.reasons
    assert len(em.writes("PATCH", "llama-prefill/scale")) == 1


def test_readiness_gating_holds(em: Emulator, api: KubernetesApi) -> None:
    seed(em)
    em.put("apps/v1", "deployments", deployment("llama-prefill", 2, ready=1))
    audit = MemoryAuditSink()
    classic = settings(scale_up_while_starting=False)
    ctl = controller(api, classic, Mode.APPLY, ManualClock(1000.0), audit=audit)
    report = ctl.tick()
    assert report.effects is not None
    assert all(not d.changed for d in report.effects.decisions)
    assert any(h.reason == ReasonCode.TARGET_NOT_STABLE for h in report.effects.holds)
    assert em.writes("PATCH", "/scale") == []
    # once ready, the same controller acts
    em.set_status("apps/v1", "deployments", NS, "llama-prefill", {"readyReplicas": 2})
    ctl.tick()
    assert len(em.writes("PATCH", "/scale")) == 2


def test_generation_and_rollout_gating(em: Emulator, api: KubernetesApi) -> None:
    seed(em)
    target = KubernetesScaleTarget(api, settings())
    em.set_status("apps/v1", "deployments", NS, "llama-decode", {"observedGeneration": 0})
    assert not target.status("llama", c.ROLE_DECODE).generation_current
    em.set_status(
        "apps/v1", "deployments", NS, "llama-decode", {"observedGeneration": 1, "updatedReplicas": 0}
    )
    assert target.status("llama", c.ROLE_DECODE).rollout_in_progress


def test_apply_mode_scales_both_roles_and_audits(em: Emulator, api: KubernetesApi) -> None:
    seed(em)
    audit = MemoryAuditSink()
    ctl = controller(api, settings(), Mode.APPLY, ManualClock(1000.0), audit=audit)
    report = ctl.tick()
    assert all(o.ok for o in report.outcomes)
    # 40k prompt x 0.5 uncached at 10k x 0.8 -> 3 prefill; 4k output at 2k x 0.8 -> 3 decode
    assert em.get("apps/v1", "deployments", NS, "llama-prefill")["spec"]["replicas"] == 3
    assert em.get("apps/v1", "deployments", NS, "llama-decode")["spec"]["replicas"] == 3
    entry = audit.entries[-1]
    assert [(d.current, d.desired) for d in entry.decisions] == [(1, 3), (1, 3)]
    assert entry.mode == "apply"


def test_dry_run_sends_dry_run_all_and_changes_nothing(em: Emulator, api: KubernetesApi) -> None:
    seed(em)
    ctl = controller(api, settings(), Mode.DRY_RUN, ManualClock(1000.0))
    report = ctl.tick()
    patches = em.writes("PATCH", "/scale")
    assert len(patches) == 2
    assert all(p.query.get("dryRun") == ["All"] for p in patches)
    assert all(o.ok and o.dry_run for o in report.outcomes)
    assert em.get("apps/v1", "deployments", NS, "llama-prefill")["spec"]["replicas"] == 1


def test_observe_mode_writes_nothing(em: Emulator, api: KubernetesApi) -> None:
    seed(em)
    report = controller(api, settings(), Mode.OBSERVE, ManualClock(1000.0)).tick()
    assert report.effects is not None
    assert any(d.changed for d in report.effects.decisions)
    assert em.writes() == []


def test_leaderworkerset_and_custom_resource_scale(em: Emulator, api: KubernetesApi) -> None:
    cr = {
        "apiVersion": "example.com/v1",
        "kind": "RoleScaler",
        "metadata": {"name": "llama-decode", "namespace": NS},
        "spec": {"replicas": 1},
        "status": {"replicas": 1},
    }
    put_leaderworkerset(em, "llama-prefill", 2, {"replicas": 2, "readyReplicas": 2, "updatedReplicas": 2})
    em.put("example.com/v1", "rolescalers", cr)
    s = settings(
        prefill={"kind": "LeaderWorkerSet", "name": "llama-prefill"},
        decode={
            "kind": "CustomResource",
            "name": "llama-decode",
            "group": "example.com",
            "version": "v1",
            "plural": "rolescalers",
        },
    )
    target = KubernetesScaleTarget(api, s)
    assert target.status("llama", c.ROLE_PREFILL).stable
    assert target.status("llama", c.ROLE_DECODE).replicas == 1
    target.scale("llama", c.ROLE_PREFILL, 4, dry_run=False)
    target.scale("llama", c.ROLE_DECODE, 3, dry_run=False)
    paths = [r.path for r in em.writes("PATCH")]
    assert paths == [
        f"/apis/leaderworkerset.x-k8s.io/v1/namespaces/{NS}/leaderworkersets/llama-prefill/scale",
        f"/apis/example.com/v1/namespaces/{NS}/rolescalers/llama-decode/scale",
    ]
    assert (
        em.get("leaderworkerset.x-k8s.io/v1", "leaderworkersets", NS, "llama-prefill")["spec"]["replicas"]
        == 4
    )
    assert em.get("example.com/v1", "rolescalers", NS, "llama-decode")["spec"]["replicas"] == 3


KSERVE_READY = [{"type": t, "status": "True"} for t in ("MainWorkloadReady", "PrefillWorkloadReady", "Ready")]


def test_kserve_readiness_per_role(em: Emulator, api: KubernetesApi) -> None:
    svc = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "LLMInferenceService",
        "metadata": {"name": "llama", "namespace": NS, "generation": 1},
        "spec": {"replicas": 3, "prefill": {"replicas": 2}},
        "status": {
            "observedGeneration": 1,
            # the router is down (Ready False), the workloads are up: readiness is per role
            "conditions": [
                {"type": "MainWorkloadReady", "status": "True"},
                {"type": "PrefillWorkloadReady", "status": "False"},
                {"type": "Ready", "status": "False"},
            ],
        },
    }
    em.put("serving.kserve.io/v1alpha1", "llminferenceservices", svc)
    kind = {"kind": "LLMInferenceService", "name": "llama"}
    target = KubernetesScaleTarget(api, settings(prefill=kind, decode=kind))
    # no generated Deployment to read (a multi-node workload): the role's condition decides
    assert target.status("llama", c.ROLE_DECODE).ready == 3
    assert target.status("llama", c.ROLE_PREFILL).ready == 0
    # the generated Deployments: their ready pods, not the condition (which stays True while a
    # Deployment scales up, its Available condition being about the minimum)
    em.put("apps/v1", "deployments", deployment("llama-kserve", 3, ready=2))
    em.put("apps/v1", "deployments", deployment("llama-kserve-prefill", 2))
    decode = target.status("llama", c.ROLE_DECODE)
    assert (decode.replicas, decode.ready, decode.stable) == (3, 2, False)
    prefill = target.status("llama", c.ROLE_PREFILL)
    assert (prefill.replicas, prefill.ready, prefill.stable) == (2, 2, True)
    # the owner asks for more than the child has yet: not stable until KServe propagates it
    em.put("apps/v1", "deployments", deployment("llama-kserve-prefill", 1))
    assert target.status("llama", c.ROLE_PREFILL).rollout_in_progress


def test_omitted_status_counts_are_zero(em: Emulator, api: KubernetesApi) -> None:
    # apps/v1 and LWS status counts are omitempty: a missing one is 0, not "all"
    seed(em)
    recreate = deployment("llama-decode", 3)
    for k in ("updatedReplicas", "readyReplicas", "replicas"):
        del recreate["status"][k]  # a Recreate rollout's first step: old pods gone, none new
    em.put("apps/v1", "deployments", recreate)
    target = KubernetesScaleTarget(api, settings())
    st = target.status("llama", c.ROLE_DECODE)
    assert (st.ready, st.rollout_in_progress) == (0, True)
    unobserved = deployment("llama-decode", 3)
    unobserved["status"] = {}  # created, not yet seen by its controller
    em.put("apps/v1", "deployments", unobserved)
    assert not target.status("llama", c.ROLE_DECODE).generation_current
    # two groups created, none ready or updated yet
    put_leaderworkerset(em, "llama-prefill", 2, {"replicas": 2})
    target = KubernetesScaleTarget(
        api, settings(prefill={"kind": "LeaderWorkerSet", "name": "llama-prefill"})
    )
    st = target.status("llama", c.ROLE_PREFILL)
    assert (st.replicas, st.ready, st.rollout_in_progress, st.stable) == (2, 0, True, False)


def test_a_count_that_is_not_a_number_is_a_permanent_error(em: Emulator, api: KubernetesApi) -> None:
    """A schema-less object (a LeaderWorkerSet, any CR with /scale) is read as sent: a status
    count like "many" raised a bare ValueError out of `status`, which ended the loop."""
    seed(em)
    target = KubernetesScaleTarget(
        api, settings(prefill={"kind": "LeaderWorkerSet", "name": "llama-prefill"})
    )
    for bad in ("many", "2.0", float("nan")):
        put_leaderworkerset(em, "llama-prefill", 2, {"replicas": 2, "readyReplicas": bad})
        with pytest.raises(PermanentError, match=r"llama-prefill.*a count that is not a whole number"):
            target.status("llama", c.ROLE_PREFILL)
    put_leaderworkerset(em, "llama-prefill", 2, {"replicas": 2, "readyReplicas": "2"})
    assert target.status("llama", c.ROLE_PREFILL).ready == 2


def test_kserve_llminferenceservice_owner_fields(em: Emulator, api: KubernetesApi) -> None:
    svc = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "LLMInferenceService",
        "metadata": {"name": "llama", "namespace": NS, "generation": 1},
        "spec": {
            "replicas": 2,
            "prefill": {"replicas": 1, "template": {"containers": []}},
            "model": {"uri": "hf://x"},
        },
        "status": {"observedGeneration": 1, "conditions": KSERVE_READY},
    }
    em.put("serving.kserve.io/v1alpha1", "llminferenceservices", svc)
    kind = {"kind": "LLMInferenceService", "name": "llama"}
    target = KubernetesScaleTarget(api, settings(prefill=kind, decode=kind))
    assert target.status("llama", c.ROLE_PREFILL).replicas == 1
    assert target.status("llama", c.ROLE_DECODE).stable
    target.scale("llama", c.ROLE_PREFILL, 3, dry_run=False)
    (patch,) = em.writes("PATCH")
    assert patch.path.endswith("/llminferenceservices/llama")
    assert patch.body["spec"] == {"prefill": {"replicas": 3}}
    assert patch.body["metadata"]["resourceVersion"]
    stored = em.get("serving.kserve.io/v1alpha1", "llminferenceservices", NS, "llama")
    assert stored["spec"]["prefill"] == {"replicas": 3, "template": {"containers": []}}  # rest kept
    assert stored["spec"]["replicas"] == 2
    assert not target.status("llama", c.ROLE_PREFILL).generation_current  # generation moved on


KSERVE_V2 = "serving.kserve.io/v1alpha2"


def llmisvc_v2(spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": KSERVE_V2,
        "kind": "LLMInferenceService",
        "metadata": {"name": "llama", "namespace": NS, "generation": 1},
        "spec": spec,
        "status": {"observedGeneration": 1, **(status or {})},
    }


def test_kserve_version_is_discovered(em: Emulator, api: KubernetesApi) -> None:
    # a KServe serving both versions, v1alpha2 the storage one: use it (the newest known; the
    # group's discovery preferredVersion is InferenceService's v1beta1, so it is not asked)
    em.served["serving.kserve.io"] = ("v1alpha2", "v1alpha1")
    em.put(KSERVE_V2, "llminferenceservices", llmisvc_v2({"replicas": 2, "prefill": {"replicas": 1}}))
    kind = {"kind": "LLMInferenceService", "name": "llama"}
    target = KubernetesScaleTarget(api, settings(prefill=kind, decode=kind))
    assert target.status("llama", c.ROLE_DECODE).replicas == 2
    target.scale("llama", c.ROLE_PREFILL, 3, dry_run=False)
    paths = [r.path for r in em.requests]
    assert paths.count("/apis/serving.kserve.io/v1alpha2") == 1  # discovered once
    assert all("/v1alpha2/" in p for p in paths if "llminferenceservices" in p)
    assert em.get(KSERVE_V2, "llminferenceservices", NS, "llama")["spec"]["prefill"]["replicas"] == 3
    # a pinned version is used as it is, without discovery
    em.requests.clear()
    pinned = {**kind, "version": "v1alpha1"}
    KubernetesScaleTarget(api, settings(prefill=pinned, decode=pinned)).scale(
        "llama", c.ROLE_DECODE, 4, dry_run=False
    )
    assert [r.path for r in em.requests] == [
        f"/apis/serving.kserve.io/v1alpha1/namespaces/{NS}/llminferenceservices/llama"
    ] * 2
    assert em.get(KSERVE_V2, "llminferenceservices", NS, "llama")["spec"]["replicas"] == 4


@pytest.mark.parametrize("served", [("v1beta1",), ()])
def test_kserve_version_unknown_is_permanent(
    em: Emulator, api: KubernetesApi, served: tuple[str, ...]
) -> None:
    if served:  # a KServe whose LLMInferenceService is at a version we do not know
        em.served["serving.kserve.io"] = served
        em.put("serving.kserve.io/v1beta1", "llminferenceservices", llmisvc_v2({"replicas": 1}))
    kind = {"kind": "LLMInferenceService", "name": "llama"}
    target = KubernetesScaleTarget(api, settings(prefill=kind, decode=kind))
    with pytest.raises(PermanentError, match="at none of the versions pd-observer knows"):
        target.status("llama", c.ROLE_DECODE)
    assert em.writes() == []


def test_kserve_version_is_discovered_again_after_an_upgrade(em: Emulator, api: KubernetesApi) -> None:
    em.served["serving.kserve.io"] = ("v1alpha1",)
    em.put("serving.kserve.io/v1alpha1", "llminferenceservices", llmisvc_v2({"replicas": 2}))
    kind = {"kind": "LLMInferenceService", "name": "llama"}
    target = KubernetesScaleTarget(api, settings(prefill=kind, decode=kind))
    assert target.status("llama", c.ROLE_DECODE).replicas == 2
    # KServe upgraded: v1alpha2 only. The version found answers 404 once, then is found again
    em.objects = {
        (("serving.kserve.io/v1alpha2", *k[1:]) if k[0] == "serving.kserve.io/v1alpha1" else k): v
        for k, v in em.objects.items()
    }
    em.served["serving.kserve.io"] = ("v1alpha2",)
    with pytest.raises(NotFoundError):
        target.status("llama", c.ROLE_DECODE)
    assert target.status("llama", c.ROLE_DECODE).replicas == 2
    owner = [r for r in em.requests if "/llminferenceservices/" in r.path]
    assert [r.path.split("/")[3] for r in owner[-2:]] == ["v1alpha1", "v1alpha2"]


def assert_prefill_refused(target: KubernetesScaleTarget, em: Emulator, match: str) -> None:
    """Reading and scaling the service's prefill role are both refused (permanent), with no write."""
    for call in (
        lambda: target.status("llama", c.ROLE_PREFILL),
        lambda: target.scale("llama", c.ROLE_PREFILL, 3, dry_run=False),
    ):
        with pytest.raises(PermanentError, match=match):
            call()
    assert em.writes() == []


def test_kserve_scaling_section_is_refused(em: Emulator, api: KubernetesApi) -> None:
    # `scaling` hands a role's replicas to KServe's autoscaler (WVA), and the API refuses
    # `replicas` next to it: a clear refusal, no write
    spec = {"replicas": 2, "prefill": {"scaling": {"maxReplicas": 4, "wva": {"hpa": {}}}}}
    em.put(KSERVE_V2, "llminferenceservices", llmisvc_v2(spec))
    kind = {"kind": "LLMInferenceService", "name": "llama"}
    target = KubernetesScaleTarget(api, settings(prefill=kind, decode=kind))
    assert target.status("llama", c.ROLE_DECODE).replicas == 2
    assert_prefill_refused(target, em, r"spec.prefill.scaling is set \(condition")
    # inherited through spec.baseRefs: not on the object, but KServe reports its scaling
    # condition; a replicas written next to it would fail KServe's merge of the service
    conds = [{"type": "ScalingReady", "status": "True"}]
    em.put(
        KSERVE_V2, "llminferenceservices", llmisvc_v2({"baseRefs": [{"name": "wva"}]}, {"conditions": conds})
    )
    with pytest.raises(
        PermanentError, match=r"spec.scaling is set through spec.baseRefs \(condition ScalingReady"
    ):
        target.scale("llama", c.ROLE_DECODE, 3, dry_run=False)
    assert em.writes() == []


def test_kserve_workloads_from_status(em: Emulator, api: KubernetesApi) -> None:
    # v1alpha2 names each role's workload in status.workloads: a multi-node prefill runs as a
    # LeaderWorkerSet, the decode Deployment has a name of KServe's choosing; the owner leaves
    # decode's replicas unset (its workload's count, the Deployment default)
    workloads = {
        "primary": {"apiGroup": "apps", "kind": "Deployment", "name": "llama-main-x7"},
        "prefill": {"apiGroup": "leaderworkerset.x-k8s.io", "kind": "LeaderWorkerSet", "name": "llama-pf"},
    }
    em.put(
        KSERVE_V2, "llminferenceservices", llmisvc_v2({"prefill": {"replicas": 2}}, {"workloads": workloads})
    )
    em.put("apps/v1", "deployments", deployment("llama-main-x7", 1))
    put_leaderworkerset(em, "llama-pf", 2, {"replicas": 2, "readyReplicas": 1, "updatedReplicas": 2})
    kind = {"kind": "LLMInferenceService", "name": "llama"}
    target = KubernetesScaleTarget(api, settings(prefill=kind, decode=kind))
    decode = target.status("llama", c.ROLE_DECODE)
    assert (decode.replicas, decode.ready, decode.stable) == (1, 1, True)
    prefill = target.status("llama", c.ROLE_PREFILL)
    assert (prefill.replicas, prefill.ready, prefill.stable) == (2, 1, False)


def test_kserve_v1alpha1_view_has_only_v1alpha1_status(em: Emulator, api: KubernetesApi) -> None:
    # a KServe serving both versions stores v1alpha2; its v1alpha1 view has the v1alpha1 status
    # (url, knative's observedGeneration/conditions, addresses) and no status.workloads, router
    # or appliedConfigs. The connector works from either: through v1alpha2 it reads the workload
    # status.workloads names, through v1alpha1 it falls back to the role's conditions
    em.served["serving.kserve.io"] = ("v1alpha2", "v1alpha1")
    status = {
        "url": "http://llama.llm.svc",
        "addresses": [{"url": "http://llama.llm.svc"}],
        "conditions": [{"type": "MainWorkloadReady", "status": "True"}],
        "workloads": {"primary": {"apiGroup": "apps", "kind": "Deployment", "name": "llama-main-x7"}},
        "router": {"gateway": {"name": "gw"}},
        "appliedConfigs": [{"name": "kserve-config-llm-template", "namespace": "kserve", "source": "Preset"}],
    }
    em.put(KSERVE_V2, "llminferenceservices", llmisvc_v2({"replicas": 3}, status))
    em.put("apps/v1", "deployments", deployment("llama-main-x7", 3, ready=1))

    def read(version: str) -> dict[str, Any]:
        ref = ResourceRef(
            "LLMInferenceService", NS, "llama", "serving.kserve.io", version, "llminferenceservices"
        )
        return api.get_object(ref)

    v1 = read("v1alpha1")
    assert v1["apiVersion"] == "serving.kserve.io/v1alpha1"
    assert set(v1["status"]) == {"url", "addresses", "conditions", "observedGeneration"}
    assert {"workloads", "router", "appliedConfigs"} <= set(read("v1alpha2")["status"])
    assert "workloads" in em.get(KSERVE_V2, "llminferenceservices", NS, "llama")["status"]  # stored

    kind = {"kind": "LLMInferenceService", "name": "llama"}
    newest = KubernetesScaleTarget(api, settings(prefill=kind, decode=kind)).status("llama", c.ROLE_DECODE)
    assert (newest.replicas, newest.ready, newest.stable) == (3, 1, False)  # the named Deployment
    pinned = {**kind, "version": "v1alpha1"}
    old = KubernetesScaleTarget(api, settings(prefill=pinned, decode=pinned)).status("llama", c.ROLE_DECODE)
    assert (old.replicas, old.ready) == (3, 3)  # no workload named: MainWorkloadReady True
    # a write through v1alpha1 keeps the stored v1alpha2 status
    KubernetesScaleTarget(api, settings(prefill=pinned, decode=pinned)).scale(
        "llama", c.ROLE_DECODE, 4, dry_run=False
    )
    stored = em.get(KSERVE_V2, "llminferenceservices", NS, "llama")
    assert (stored["spec"]["replicas"], stored["status"]["workloads"]) == (4, status["workloads"])


def test_kserve_multinode_workload_by_name(em: Emulator, api: KubernetesApi) -> None:
    # no status.workloads (v1alpha1): a multi-node role's LeaderWorkerSet by its name
    em.put(KSERVE_V2, "llminferenceservices", llmisvc_v2({"replicas": 1, "prefill": {"replicas": 2}}))
    put_leaderworkerset(
        em, "llama-kserve-mn-prefill", 2, {"replicas": 2, "readyReplicas": 1, "updatedReplicas": 2}
    )
    kind = {"kind": "LLMInferenceService", "name": "llama"}
    target = KubernetesScaleTarget(api, settings(prefill=kind, decode=kind))
    prefill = target.status("llama", c.ROLE_PREFILL)
    assert (prefill.replicas, prefill.ready, prefill.stable) == (2, 1, False)


def test_kserve_child_name() -> None:
    # knative's kmeta.ChildName test vectors: short names are concatenated; a long parent is cut
    # to 31 - len(suffix) characters, followed by the MD5 hex of the whole parent
    assert kserve_child_name("asdf", "-deployment") == "asdf-deployment"
    long = "f" * 63
    assert kserve_child_name(long, "-deployment") == "f" * 20 + "105d7597f637e83cc711605ac3ea4957-deployment"
    assert kserve_child_name(long, "-deploy") == "f" * 24 + "105d7597f637e83cc711605ac3ea4957-deploy"
    exact = "a" * (63 - len("-kserve"))
    assert kserve_child_name(exact, "-kserve") == exact + "-kserve"  # 63 fits
    assert len(kserve_child_name(exact + "b", "-kserve")) == 63
    # a suffix of 31 or more: parent cut to 31, MD5 hex of parent + suffix, as much suffix as
    # fits, no trailing non-alphanumeric (knative's vectors again)
    assert kserve_child_name(long, "f" * 63) == "f" * 31 + "0502661254f13c89973cb3a83e0cbec0"
    assert kserve_child_name("a", "f" * 63) == "ab5cfd486935decbc0d305799f4ce4414" + "f" * 30
    assert kserve_child_name("b" * 32, "f" * 32) == "b" * 31 + "329c7c81b9ab3ba71aa139066aa5625d"
    want = "aaaa7a3f7966594e3f0849720eced8212c18" + "b---a" * 5 + "b"
    assert kserve_child_name("aaaa", "b---a" * 20) == want


def test_kserve_long_name_workload_found(em: Emulator, api: KubernetesApi) -> None:
    # a 60-character service name: KServe names its prefill Deployment with kmeta.ChildName
    # (cut + hash), and the fallback finds it there, not at the plain concatenation
    name = "llama-3-70b-instruct-disaggregated-prefill-decode-production"
    svc = llmisvc_v2({"replicas": 1, "prefill": {"replicas": 2}})
    svc["metadata"]["name"] = name
    em.put(KSERVE_V2, "llminferenceservices", svc)
    hashed = kserve_child_name(name, "-kserve-prefill")
    assert len(hashed) == 63
    assert hashed != name + "-kserve-prefill"
    em.put("apps/v1", "deployments", deployment(hashed, 2, ready=1))
    kind = {"kind": "LLMInferenceService", "name": name}
    target = KubernetesScaleTarget(api, settings(prefill=kind, decode=kind))
    prefill = target.status("llama", c.ROLE_PREFILL)
    assert (prefill.replicas, prefill.ready, prefill.stable) == (2, 1, False)


def test_kserve_multinode_conditions(em: Emulator, api: KubernetesApi) -> None:
    # no workload to read: multi-node roles report WorkerWorkloadReady (decode) and
    # PrefillWorkerWorkloadReady (prefill) instead of MainWorkloadReady / PrefillWorkloadReady
    conds = [
        {"type": "WorkerWorkloadReady", "status": "True"},
        {"type": "PrefillWorkerWorkloadReady", "status": "False"},
    ]
    spec = {"replicas": 2, "prefill": {"replicas": 3}}
    em.put(KSERVE_V2, "llminferenceservices", llmisvc_v2(spec, {"conditions": conds}))
    kind = {"kind": "LLMInferenceService", "name": "llama"}
    target = KubernetesScaleTarget(api, settings(prefill=kind, decode=kind))
    assert target.status("llama", c.ROLE_DECODE).ready == 2
    assert target.status("llama", c.ROLE_PREFILL).ready == 0


def test_configmap_weight_edit_and_restart_annotation(em: Emulator, api: KubernetesApi) -> None:
    seed(em)
    target = EppWeightTarget(api, settings())
    assert target.weights("llama") == {
        c.SCORER_PREFIX_CACHE: 2.0,
        c.SCORER_QUEUE: 1.0,
        c.SCORER_KV_UTILIZATION: 1.0,
    }
    rv = em.get("v1", "configmaps", NS, "llama-epp")["metadata"]["resourceVersion"]
    target.set_weights(
        "llama",
        {c.SCORER_PREFIX_CACHE: 3.0, c.SCORER_KV_UTILIZATION: 2.0},
        now=1_700_000_000.0,
        dry_run=False,
    )
    text = em.get("v1", "configmaps", NS, "llama-epp")["data"]["config.yaml"]
    expected = EPP_YAML.replace("prefix-cache-scorer, weight: 2}", "prefix-cache-scorer, weight: 3}").replace(
        "kv-cache-utilization-scorer\n    weight: 1", "kv-cache-utilization-scorer\n    weight: 2"
    )
    assert text == expected  # byte-for-byte apart from the two scalars, comments kept
    (put,) = em.writes("PUT", "/configmaps/")
    assert put.body["metadata"]["resourceVersion"] == rv
    epp = em.get("apps/v1", "deployments", NS, "llama-epp")
    assert (
        epp["spec"]["template"]["metadata"]["annotations"][c.K8S_RESTART_ANNOTATION]
        == "2023-11-14T22:13:20.000000Z"
    )
    assert epp["spec"]["template"]["metadata"]["labels"] == {"app": "llama-epp"}  # merge kept the rest


def test_epp_rollout_is_read_from_its_deployment_and_gates_the_next_config_write(
    em: Emulator, api: KubernetesApi
) -> None:
    seed(em)
    target = EppWeightTarget(api, settings())
    assert target.epp_rolled_out("llama") is True
    clock = ManualClock(1_700_000_000.0)
    audit = MemoryAuditSink()
    signals = {"llama": Signals(cascade_tenants=("t",))}
    source = StaticObservations(demand={"llama": Demand(40_000, 4_000, 0.5, 40)}, signals=signals)
    ctl = controller(
        api, settings(weights={"min_interval_seconds": 0}), Mode.APPLY, clock, source=source, audit=audit
    )

    def tick() -> list[str]:
        report = ctl.tick()
        clock.advance(15.0)
        return [o.detail for o in report.outcomes if o.target == "weights"]

    assert "restarted Deployment" in tick()[0]  # the cascade raises the prefix-cache weight
    assert target.epp_rolled_out("llama") is False  # the restart bumped the generation
    assert tick() == []  # no second write while the first restart rolls out
    assert ReasonCode.EPP_ROLLOUT in {h.reason for h in audit.entries[-1].holds}
    # the controller saw the new template; the new pod is up but the old one not yet gone
    em.set_status("apps/v1", "deployments", NS, "llama-epp", {"observedGeneration": 2, "replicas": 2})
    assert target.epp_rolled_out("llama") is False
    assert tick() == []
    em.set_status("apps/v1", "deployments", NS, "llama-epp", {"replicas": 1})  # rolled out
    assert target.epp_rolled_out("llama") is True
    assert "restarted Deployment" in tick()[0]  # the still-firing cascade: the next step
    assert target.weights("llama")[c.SCORER_PREFIX_CACHE] == 4.0


def test_a_failed_epp_restart_is_sent_again_on_the_retry(em: Emulator, api: KubernetesApi) -> None:
    # the ConfigMap write succeeds, the restart after it fails: the retry finds the config in
    # place and must still restart the EPP, which reads its config only at start
    seed(em)
    em.faults.append(Fault("PATCH", "/deployments/llama-epp", status=503))
    target = EppWeightTarget(api, settings())
    detail, attempts = call_with_retries(
        lambda: target.set_weights("llama", {c.SCORER_QUEUE: 2.0}, now=1_700_000_000.0, dry_run=False),
        RetryPolicy((0.1,)),
        ManualClock(),
    )
    assert attempts == 2
    assert "(already); restarted Deployment llm/llama-epp" in detail
    assert [r.status for r in em.writes("PUT", "/configmaps/")] == [200]  # written once
    assert [r.status for r in em.writes("PATCH", "/deployments/llama-epp")] == [503, 200]
    epp = em.get("apps/v1", "deployments", NS, "llama-epp")
    assert epp["spec"]["template"]["metadata"]["annotations"][c.K8S_RESTART_ANNOTATION] == (
        "2023-11-14T22:13:20.000000Z"
    )


def test_retry_after_lengthens_the_backoff(em: Emulator, api: KubernetesApi) -> None:
    seed(em)
    em.faults.append(Fault("PATCH", "/scale", status=429, retry_after=3))
    target = KubernetesScaleTarget(api, settings())
    clock = ManualClock()
    _, attempts = call_with_retries(
        lambda: target.scale("llama", c.ROLE_DECODE, 2, dry_run=False),
        RetryPolicy((0.1, 0.2), max_retry_after_seconds=2.5),
        clock,
    )
    assert attempts == 2
    assert clock.slept == [2.5]  # the server's 3 s, capped; never shorter than the backoff


def test_configmap_conflict_is_retried(em: Emulator, api: KubernetesApi) -> None:
    seed(em)
    em.faults.append(Fault("PUT", "/configmaps/", status=409))
    target = EppWeightTarget(api, settings())
    clock = ManualClock()
    _, attempts = call_with_retries(
        lambda: target.set_weights("llama", {c.SCORER_QUEUE: 2.0}, now=0.0, dry_run=False),
        RetryPolicy((0.1,)),
        clock,
    )
    assert attempts == 2
    assert EppWeightTarget(api, settings()).weights("llama")[c.SCORER_QUEUE] == 2.0


def test_weight_dry_run(em: Emulator, api: KubernetesApi) -> None:
    seed(em)
    EppWeightTarget(api, settings()).set_weights("llama", {c.SCORER_QUEUE: 2.0}, now=0.0, dry_run=True)
    assert all(w.query.get("dryRun") == ["All"] for w in em.writes())
    assert em.get("v1", "configmaps", NS, "llama-epp")["data"]["config.yaml"] == EPP_YAML


def test_two_instances_contend_for_the_lease_only_the_leader_acts(em: Emulator, api: KubernetesApi) -> None:
    seed(em)
    s = settings()
    clock = ManualClock(1_700_000_000.0)
    lease_a = lease_of(api, "a", 15, clock)
    lease_b = lease_of(api, "b", 15, clock)
    a = controller(api, s, Mode.APPLY, clock, lease=lease_a)
    b = controller(api, s, Mode.APPLY, clock, lease=lease_b)
    assert a.tick().leader
    assert len(em.writes("PATCH", "/scale")) == 2
    report_b = b.tick()
    assert not report_b.leader
    assert report_b.effects is None
    assert len(em.writes("PATCH", "/scale")) == 2  # b did nothing
    assert (
        em.get("coordination.k8s.io/v1", "leases", NS, "pd-observer-autoscaler")["spec"]["holderIdentity"]
        == "a"
    )
    clock.advance(5)
    assert a.tick().leader  # renews
    clock.advance(10)
    assert not b.tick().leader  # a renewed 10 s ago: still a's
    # a stops renewing (hung); after the lease duration b takes over
    clock.advance(20)
    assert b.tick().leader
    lease = em.get("coordination.k8s.io/v1", "leases", NS, "pd-observer-autoscaler")
    assert lease["spec"]["holderIdentity"] == "b"
    assert lease["spec"]["leaseTransitions"] == 1
    with pytest.raises(LeadershipLost):  # a wakes up: it must exit, not act
        a.tick()


def lease_of(
    api: KubernetesApi, identity: str, duration: float = 60.0, clock: ManualClock | None = None
) -> KubernetesLease:
    return KubernetesLease(
        api,
        namespace=NS,
        name="pd-observer-autoscaler",
        identity=identity,
        duration_seconds=duration,
        monotonic=(clock or ManualClock()).monotonic,
    )


class _SteppedClock(ManualClock):
    """A ManualClock whose wall clock can be stepped (NTP, an operator) apart from its
    monotonic one."""

    def __init__(self, start: float) -> None:
        super().__init__(start)
        self.step = 0.0

    def now(self) -> float:
        return super().now() + self.step


def test_a_wall_clock_step_neither_expires_nor_extends_the_lease(em: Emulator, api: KubernetesApi) -> None:
    seed(em)
    clock_a, clock_b = _SteppedClock(1_700_000_000.0), _SteppedClock(1_700_000_000.0)
    a = controller(api, settings(), Mode.APPLY, clock_a, lease=lease_of(api, "a", 60, clock_a))
    b = controller(api, settings(), Mode.APPLY, clock_b, lease=lease_of(api, "b", 60, clock_b))
    assert a.tick().leader
    assert not b.tick().leader
    # the standby's wall clock jumps 5 minutes ahead: the lease it watches is not expired by it
    clock_b.step = 300.0
    clock_b.advance(15)
    assert not b.tick().leader
    # the leader's wall clock jumps back 5 minutes during an outage: its renew deadline still
    # falls 40 s (2/3 of 60 s) after its last renewal, before the standby may take over
    clock_a.step = -300.0
    em.faults.append(Fault("GET", "/leases/", status=503, times=100))
    for _ in range(2):
        clock_a.advance(15)
        assert not a.tick().leader
    clock_a.advance(15)
    with pytest.raises(LeadershipLost, match="could not renew the lease"):
        a.tick()


def test_a_leader_rides_out_lease_errors_until_the_renew_deadline(em: Emulator, api: KubernetesApi) -> None:
    seed(em)
    clock = ManualClock(1_700_000_000.0)
    a = controller(api, settings(), Mode.APPLY, clock, lease=lease_of(api, "a", clock=clock))  # 60 s lease
    assert a.tick().leader
    scaled = len(em.writes("PATCH", "/scale"))
    # one API-server blip: every attempt of this tick fails. Not the leader this tick (it does
    # not act), but still the leader on record: it neither exits nor gives the lease up
    em.faults.append(Fault("GET", "/leases/", status=503, times=4))  # the 4 attempts of a tick
    clock.advance(15)
    report = a.tick()
    assert (report.leader, report.effects) == (False, None)
    assert (report.lease_error or "").startswith("lease renewal failed")
    assert len(em.writes("PATCH", "/scale")) == scaled
    clock.advance(15)
    assert a.tick().leader  # renewed: acting again
    # an outage: it stops once it has not renewed for 2/3 of the lease duration (40 s), before a
    # standby may take over (60 s)
    em.faults.append(Fault("GET", "/leases/", status=503, times=100))
    clock.advance(15)
    assert not a.tick().leader  # 15 s + retries since the renewal
    clock.advance(15)
    assert not a.tick().leader  # 30 s
    clock.advance(15)
    with pytest.raises(LeadershipLost, match=r"could not renew the lease for 4[5-9] s"):
        a.tick()


class _SlowSource(StaticObservations):
    """Observations that take `seconds` of the clock (a slow Prometheus, API retries)."""

    def __init__(self, clock: ManualClock, seconds: float) -> None:
        super().__init__(demand={"llama": Demand(40_000, 4_000, 0.5, 40)})
        self.clock, self.seconds = clock, seconds

    def observe(self, pool: str, now: float) -> Any:
        self.clock.advance(self.seconds)
        return super().observe(pool, now)


def test_a_slow_tick_renews_the_lease_before_it_writes(em: Emulator, api: KubernetesApi) -> None:
    seed(em)
    clock = ManualClock(1_700_000_000.0)
    slow = _SlowSource(clock, 25.0)  # more than a third of the 60 s lease
    a = controller(api, settings(), Mode.APPLY, clock, lease=lease_of(api, "a", clock=clock), source=slow)
    assert a.tick().leader
    assert len(em.writes("PATCH", "/leases/")) == 2  # renewed again after observing, then acted
    assert len(em.writes("PATCH", "/scale")) == 2
    # a quick tick renews once
    slow.seconds = 0.0
    clock.advance(15)
    a.tick()
    assert len(em.writes("PATCH", "/leases/")) == 3
    # the lease changed hands while a slow tick observed: it must not write
    slow.seconds = 25.0
    clock.advance(15)
    scaled = len(em.writes("PATCH", "/scale"))

    def steal(pool: str, now: float) -> Any:
        lease = em.get("coordination.k8s.io/v1", "leases", NS, "pd-observer-autoscaler")
        lease["spec"]["holderIdentity"] = "b"
        em.put("coordination.k8s.io/v1", "leases", lease)
        return _SlowSource.observe(slow, pool, now)

    slow.observe = steal  # type: ignore[method-assign]
    with pytest.raises(LeadershipLost):
        a.tick()
    assert len(em.writes("PATCH", "/scale")) == scaled


def test_lease_write_race_loses_cleanly(em: Emulator, api: KubernetesApi) -> None:
    lease = KubernetesLease(api, namespace=NS, name="l", identity="a", duration_seconds=15)
    assert lease.try_acquire_or_renew(100.0)
    em.faults.append(Fault("PATCH", "/leases/l", status=409))
    assert not lease.try_acquire_or_renew(105.0)
    assert lease.try_acquire_or_renew(106.0)
    lease.release(107.0)
    assert em.get("coordination.k8s.io/v1", "leases", NS, "l")["spec"].get("holderIdentity") is None


_VERBS = {"GET": "get", "PATCH": "patch", "PUT": "update", "POST": "create"}


def test_requests_are_within_rbac(em: Emulator, api: KubernetesApi) -> None:
    from tests.autoscaler.test_rbac import rules

    seed(em)
    clock = ManualClock(1_700_000_000.0)
    lease = KubernetesLease(
        api, namespace=NS, name="pd-observer-autoscaler", identity="a", duration_seconds=15
    )
    source = StaticObservations(
        demand={"llama": Demand(40_000, 4_000, 0.5, 40)},
        signals={"llama": Signals(cascade_tenants=("t",), load_imbalance=True)},
    )
    report = controller(api, settings(), Mode.APPLY, clock, lease=lease, source=source).tick()
    assert {o.target for o in report.outcomes} == {c.ROLE_PREFILL, c.ROLE_DECODE, "weights"}
    granted = rules()
    for r in em.requests:
        parts = r.path.strip("/").split("/")
        group = "" if parts[0] == "api" else parts[1]
        after_ns = parts[parts.index("namespaces") + 2 :]
        resource = after_ns[0] + ("/" + after_ns[2] if len(after_ns) > 2 else "")
        verb = _VERBS[r.method]
        assert (group, resource, verb, False) in granted or (group, resource, verb, True) in granted, r.path


def test_build_controller_from_settings(em: Emulator, server: RunningEmulator) -> None:
    from autoscaler.kubernetes import build_controller

    seed(em)
    audit = MemoryAuditSink()
    ctl, kapi = build_controller(
        settings(),
        source=StaticObservations(demand={"llama": Demand(40_000, 4_000, 0.5, 40)}),
        audit=audit,
        mode="dry-run",
        host=server.url,
        identity="pod-a",
    )
    try:
        report = ctl.tick()
    finally:
        kapi.close()
    assert report.leader
    assert (
        em.get("coordination.k8s.io/v1", "leases", NS, "pd-observer-autoscaler")["spec"]["holderIdentity"]
        == "pod-a"
    )
    # the Lease is real (leadership is not dry-run); every other write is dryRun=All
    assert all(p.query.get("dryRun") == ["All"] for p in em.writes("PATCH") if "/leases/" not in p.path)
    assert audit.entries[-1].mode == "dry-run"


# -- odd answers of the API server --------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>proxy error</html>", "the response is not a valid object"),
        (b"null", "the response is not a JSON object but NoneType"),
        (b"[]", "the response is not"),
    ],
)
def test_a_2xx_that_is_not_an_object_is_a_permanent_error(
    em: Emulator, api: KubernetesApi, body: bytes, message: str
) -> None:
    """A 200 whose body is not a JSON object (an HTML page from a proxy, `null`): the client's
    JSONDecodeError / pydantic ValidationError escaped the adapter (no ActuationError: it ended
    the controller), and `null` read as an empty object (a Scale of 0 replicas)."""
    seed(em)
    put_leaderworkerset(em, "llama-lws", 2, {"replicas": 2, "readyReplicas": 2})
    target = KubernetesScaleTarget(api, settings(decode={"kind": "LeaderWorkerSet", "name": "llama-lws"}))
    for role, path in ((c.ROLE_PREFILL, "/deployments/llama-prefill"), (c.ROLE_DECODE, "/leaderworkersets/")):
        em.faults.append(Fault("GET", path, status=200, body=body))
        with pytest.raises(PermanentError, match=message):
            target.status("llama", role)
    em.faults.append(Fault("GET", "/leaderworkersets/llama-lws/scale", status=200, body=body))
    with pytest.raises(PermanentError, match=message):
        target.scale("llama", c.ROLE_DECODE, 3, dry_run=False)
    em.faults.append(Fault("PATCH", "/deployments/llama-prefill/scale", status=200, body=b"<html/>"))
    with pytest.raises(PermanentError, match="patch Deployment llm/llama-prefill/scale: the response is not"):
        target.scale("llama", c.ROLE_PREFILL, 2, dry_run=False)
    em.faults.append(Fault("GET", "/configmaps/llama-epp", status=200, body=body))
    with pytest.raises(PermanentError, match="get ConfigMap llm/llama-epp: the response is not"):
        EppWeightTarget(api, settings()).weights("llama")


def test_a_scale_whose_replicas_are_not_a_count_is_a_permanent_error(
    em: Emulator, api: KubernetesApi
) -> None:
    # a custom /scale answered by an aggregated API or a schema-less CRD: int("many") raised
    # ValueError out of the adapter; a missing status.replicas (omitempty) is 0
    em.put(
        "example.com/v1",
        "workers",
        {"metadata": {"name": "w", "namespace": NS}, "spec": {"replicas": 2}, "status": {}},
    )
    ref = ResourceRef("Worker", NS, "w", "example.com", "v1", "workers")
    assert api.get_scale(ref).status_replicas == 0
    scale = b'{"kind": "Scale", "metadata": null, "spec": {"replicas": "many"}, "status": null}'
    em.faults.append(Fault("GET", "/workers/w/scale", status=200, body=scale))
    with pytest.raises(PermanentError, match=r"spec\.replicas is not a non-negative integer: 'many'"):
        api.get_scale(ref)


def test_kserve_without_prefill_has_no_prefill_role_to_scale(em: Emulator, api: KubernetesApi) -> None:
    """An LLMInferenceService with no `spec.prefill` does not disaggregate. Its prefill role
    read as 1 replica, 0 ready, and a scale-up wrote `spec.prefill: {replicas: N}`, which makes
    KServe create a prefill workload (P/D turned on by the autoscaler). Now refused, no write;
    a prefill inherited through `spec.baseRefs` (only the status shows it) is still scaled."""
    svc = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "LLMInferenceService",
        "metadata": {"name": "llama", "namespace": NS, "generation": 1},
        "spec": {"replicas": 2, "model": {"uri": "hf://x"}},
        "status": {"observedGeneration": 1, "conditions": [{"type": "MainWorkloadReady", "status": "True"}]},
    }
    em.put("serving.kserve.io/v1alpha1", "llminferenceservices", svc)
    kind = {"kind": "LLMInferenceService", "name": "llama"}
    target = KubernetesScaleTarget(api, settings(prefill=kind, decode=kind))
    assert target.status("llama", c.ROLE_DECODE).replicas == 2
    assert_prefill_refused(target, em, r"no spec\.prefill and KServe reports no prefill workload")
    inherited = {"type": "PrefillWorkloadReady", "status": "True"}
    em.set_status(
        "serving.kserve.io/v1alpha1",
        "llminferenceservices",
        NS,
        "llama",
        {"conditions": [*svc["status"]["conditions"], inherited]},
    )
    assert target.status("llama", c.ROLE_PREFILL).ready == 1
    target.scale("llama", c.ROLE_PREFILL, 2, dry_run=False)
    (patch,) = em.writes("PATCH")
    assert patch.body["spec"] == {"prefill": {"replicas": 2}}
