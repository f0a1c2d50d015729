"""EPP config actuation (scorer weights and the P/D decider's `nonCachedTokens`) on both routes
— ConfigMap + rollout restart, and the KServe LLMInferenceService inline scheduler config (or
its ConfigMap ref) — with the real `kubernetes` client against the emulated API server over
HTTP (tests/autoscaler/k8s_emulator.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from autoscaler.connectors.kubernetes_api import KSERVE_GROUP, KSERVE_PLURAL, KubernetesApi
from autoscaler.kubernetes import EppWeightTarget, build_controller
from autoscaler.loop import RetryPolicy, call_with_retries
from autoscaler.ports import ManualClock, MemoryAuditSink, PermanentError, StaticObservations
from autoscaler.settings import AutoscalerSettings, parse
from autoscaler.types import Demand, Signals
from observer import conventions as c
from observer.config import ConfigError
from tests.autoscaler.k8s_emulator import Emulator, Fault, RunningEmulator
from tests.autoscaler.test_kubernetes import EPP_YAML, NS, deployment

KSERVE_API = f"{KSERVE_GROUP}/v1alpha1"  # a KServe that serves only the first version
DECIDER_YAML = EPP_YAML.replace(
    "- type: queue-scorer\n",
    "- type: queue-scorer\n"
    "- type: prefix-based-pd-decider   # P/D only above this many uncached tokens\n"
    "  name: pd-decider\n"
    "  parameters:\n"
    "    nonCachedTokens: 16\n"
    "- type: pd-profile-handler\n"
    "  parameters: {deciderPluginName: pd-decider}\n",
)
NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def pool_settings(epp: dict[str, Any], *, kserve: bool = False) -> AutoscalerSettings:
    kind = {"kind": "LLMInferenceService", "name": "llama"} if kserve else None
    return parse(
        {
            "mode": "apply",
            "pools": [
                {
                    "name": "llama",
                    "namespace": NS,
                    "prefill": {"target": kind or {"name": "llama-prefill"}},
                    "decode": {"target": kind or {"name": "llama-decode"}},
                    "epp": epp,
                }
            ],
        }
    )


CM_EPP = {"config_map": "llama-epp", "deployment": "llama-epp"}
KSERVE_EPP = {"source": "llminferenceservice"}


def seed_configmap(
    em: Emulator, text: str = DECIDER_YAML, name: str = "llama-epp", key: str = "config.yaml"
) -> None:
    em.put("apps/v1", "deployments", deployment("llama-epp", 1))
    em.put(
        "v1", "configmaps", {"metadata": {"name": name, "namespace": NS}, "data": {key: text, "other": "x"}}
    )


def llmisvc(config: dict[str, Any] | None) -> dict[str, Any]:
    scheduler: dict[str, Any] = {
        "pool": {"spec": {"selector": {"app": "llama"}, "targetPortNumber": 8000}},
        "template": {
            "containers": [{"name": "main", "image": "ghcr.io/llm-d/llm-d-inference-scheduler:v0.3.0"}]
        },
    }
    if config is not None:
        scheduler["config"] = config
    return {
        "apiVersion": KSERVE_API,
        "kind": "LLMInferenceService",
        "metadata": {"name": "llama", "namespace": NS, "generation": 1},
        "spec": {
            "model": {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct"},
            "replicas": 2,
            "prefill": {"replicas": 1, "template": {"containers": [{"name": "main"}]}},
            "router": {"route": {}, "gateway": {}, "scheduler": scheduler},
        },
        "status": {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True"}]},
    }


def stored_svc(em: Emulator) -> dict[str, Any]:
    return em.get(KSERVE_API, KSERVE_PLURAL, NS, "llama")


def inline_of(obj: dict[str, Any]) -> dict[str, Any]:
    inline = obj["spec"]["router"]["scheduler"]["config"]["inline"]
    assert isinstance(inline, dict)
    return inline


# -- ConfigMap route ------------------------------------------------------------------------
def test_configmap_decider_read_edit_and_restart(em: Emulator, api: KubernetesApi) -> None:
    seed_configmap(em)
    target = EppWeightTarget(api, pool_settings(CM_EPP))
    assert target.decider_threshold("llama") == 16
    rv = em.get("v1", "configmaps", NS, "llama-epp")["metadata"]["resourceVersion"]
    detail = target.set_decider_threshold("llama", 256, now=NOW, dry_run=False)
    assert "nonCachedTokens 16 -> 256" in detail
    assert "restarted Deployment llm/llama-epp" in detail
    data = em.get("v1", "configmaps", NS, "llama-epp")["data"]
    assert data["config.yaml"] == DECIDER_YAML.replace("nonCachedTokens: 16", "nonCachedTokens: 256")
    assert data["other"] == "x"  # the other keys are kept
    (put,) = em.writes("PUT", "/configmaps/")
    assert put.body["metadata"]["resourceVersion"] == rv
    assert put.query["fieldManager"] == [c.K8S_FIELD_MANAGER]
    epp = em.get("apps/v1", "deployments", NS, "llama-epp")
    annotations = epp["spec"]["template"]["metadata"]["annotations"]
    assert annotations[c.K8S_RESTART_ANNOTATION] == "2023-11-14T22:13:20.000000Z"
    assert target.decider_threshold("llama") == 256
    # weights and decider share the edit path: a weight edit keeps the new threshold
    target.set_weights("llama", {c.SCORER_QUEUE: 2.0}, now=NOW + 60, dry_run=False)
    assert target.decider_threshold("llama") == 256
    assert target.weights("llama")[c.SCORER_QUEUE] == 2.0
    assert len(em.writes("PATCH", "/deployments/llama-epp")) == 2


def test_weights_that_differ_per_profile_do_not_take_the_decider_lever(
    em: Emulator, api: KubernetesApi
) -> None:
    # a P/D config whose prefill and decode profiles weigh queue-scorer differently, and no
    # epp.profile: the weights are refused (which profile to tune is the operator's call), the
    # decider is still read and tuned
    two_profiles = DECIDER_YAML + (
        "- name: prefill\n  plugins:\n  - pluginRef: prefill-filter\n"
        "  - {pluginRef: queue-scorer, weight: 3}\n"
    )
    seed_configmap(em, two_profiles)
    target = EppWeightTarget(api, pool_settings(CM_EPP))
    with pytest.raises(PermanentError, match=r"queue-scorer has different weights .*epp\.profile"):
        target.weights("llama")
    assert target.decider_threshold("llama") == 16
    audit = MemoryAuditSink()
    ctl, kapi = build_controller(
        pool_settings(CM_EPP),
        source=StaticObservations(demand={"llama": Demand(40_000, 4_000, 0.5, 40)}),
        audit=audit,
        host=em.url,
        identity="a",
    )
    try:
        ctl.tick()
    finally:
        kapi.close()
    seen = audit.entries[-1].observation
    assert (seen.weights, seen.decider_threshold) == (None, 16)
    # with the decode profile named, its weights are read and the prefill profile is left alone
    decode = EppWeightTarget(api, pool_settings({**CM_EPP, "profile": "decode"}))
    assert decode.weights("llama")[c.SCORER_QUEUE] == 1.0
    decode.set_weights("llama", {c.SCORER_QUEUE: 2.0}, now=NOW, dry_run=False)
    text = em.get("v1", "configmaps", NS, "llama-epp")["data"]["config.yaml"]
    assert "{pluginRef: queue-scorer, weight: 3}" in text
    assert "{pluginRef: queue-scorer, weight: 2}" in text


def test_configmap_decider_409_then_success(em: Emulator, api: KubernetesApi) -> None:
    seed_configmap(em)
    em.faults.append(Fault("PUT", "/configmaps/llama-epp", status=409))
    target = EppWeightTarget(api, pool_settings(CM_EPP))
    clock = ManualClock()
    _, attempts = call_with_retries(
        lambda: target.set_decider_threshold("llama", 32, now=NOW, dry_run=False), RetryPolicy((0.1,)), clock
    )
    assert attempts == 2
    assert clock.slept == [0.1]
    assert [r.status for r in em.writes("PUT", "/configmaps/")] == [409, 200]
    assert len(em.writes("PATCH", "/deployments/llama-epp")) == 1  # restarted once, after the write
    assert target.decider_threshold("llama") == 32


def test_configmap_decider_dry_run_changes_nothing(em: Emulator, api: KubernetesApi) -> None:
    seed_configmap(em)
    before = em.get("apps/v1", "deployments", NS, "llama-epp")
    detail = EppWeightTarget(api, pool_settings(CM_EPP)).set_decider_threshold(
        "llama", 64, now=NOW, dry_run=True
    )
    assert detail.endswith("(dry-run)")
    writes = em.writes()
    assert len(writes) == 2
    assert all(w.query.get("dryRun") == ["All"] for w in writes)
    assert em.get("v1", "configmaps", NS, "llama-epp")["data"]["config.yaml"] == DECIDER_YAML
    assert em.get("apps/v1", "deployments", NS, "llama-epp") == before


def test_configmap_no_decider_and_bad_config_are_permanent(em: Emulator, api: KubernetesApi) -> None:
    seed_configmap(em, EPP_YAML)  # no decider
    target = EppWeightTarget(api, pool_settings(CM_EPP))
    assert target.decider_threshold("llama") is None
    clock = ManualClock()
    with pytest.raises(PermanentError, match="ConfigMap llm/llama-epp: no prefix-based-pd-decider"):
        call_with_retries(
            lambda: target.set_decider_threshold("llama", 32, now=NOW, dry_run=False),
            RetryPolicy((0.1,)),
            clock,
        )
    assert clock.slept == []  # permanent: never retried
    seed_configmap(em, DECIDER_YAML.replace("nonCachedTokens: 16", "nonCachedTokens: many"))
    with pytest.raises(PermanentError, match="nonCachedTokens is not an integer: 'many'"):
        target.decider_threshold("llama")
    seed_configmap(em, "schedulingProfiles: [\n")
    with pytest.raises(PermanentError, match="not valid YAML"):
        target.set_weights("llama", {c.SCORER_QUEUE: 2.0}, now=NOW, dry_run=False)
    assert em.writes() == []


def test_configmap_hostile_yaml_is_permanent_not_a_crash(em: Emulator, api: KubernetesApi) -> None:
    # an anchored weight made the edit raise PyYAML's ComposerError, which is no ActuationError:
    # it escaped the lever and ended the controller; an alias bomb held it for hours
    target = EppWeightTarget(api, pool_settings(CM_EPP))
    anchored = DECIDER_YAML.replace("weight: 2}", "weight: &w 2}").replace(
        "{pluginRef: queue-scorer, weight: 1}", "{pluginRef: queue-scorer, weight: *w}"
    )
    seed_configmap(em, anchored)
    assert target.weights("llama")[c.SCORER_QUEUE] == 2.0
    with pytest.raises(PermanentError, match=r"ConfigMap llm/llama-epp: weight of .* carries a YAML anchor"):
        target.set_weights("llama", {c.SCORER_QUEUE: 3.0}, now=NOW, dry_run=False)
    bomb = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 10) + "]\n" for i in range(8)
    )
    seed_configmap(em, bomb + DECIDER_YAML)
    with pytest.raises(PermanentError, match="more than 1000000 nodes once its aliases are expanded"):
        target.set_epp("llama", decider=32, now=NOW, dry_run=False)
    assert em.writes() == []


# -- LLMInferenceService route --------------------------------------------------------------
def test_llmisvc_inline_weights_and_decider_by_merge_patch(em: Emulator, api: KubernetesApi) -> None:
    config = yaml.safe_load(DECIDER_YAML)
    em.put(KSERVE_API, KSERVE_PLURAL, llmisvc({"inline": config}))
    original = stored_svc(em)
    target = EppWeightTarget(api, pool_settings(KSERVE_EPP, kserve=True))
    assert target.weights("llama") == {
        c.SCORER_PREFIX_CACHE: 2.0,
        c.SCORER_QUEUE: 1.0,
        c.SCORER_KV_UTILIZATION: 1.0,
    }
    assert target.decider_threshold("llama") == 16

    detail = target.set_weights("llama", {c.SCORER_PREFIX_CACHE: 4.0}, now=NOW, dry_run=False)
    assert detail.startswith(
        "llminferenceservices.serving.kserve.io llm/llama spec.router.scheduler.config.inline"
    )
    assert "restarted" not in detail  # KServe re-renders --config-text and rolls the EPP itself
    (patch,) = em.writes("PATCH")
    assert patch.path == f"/apis/{KSERVE_API}/namespaces/{NS}/{KSERVE_PLURAL}/llama"
    assert patch.body["metadata"] == {"resourceVersion": original["metadata"]["resourceVersion"]}
    # only the changed list of the inline config travels; nothing else of the spec
    assert patch.body["spec"] == {"router": {"scheduler": {"config": {"inline": {"schedulingProfiles": [
        {**config["schedulingProfiles"][0], "plugins": [
            *config["schedulingProfiles"][0]["plugins"][:2],
            {"pluginRef": c.SCORER_PREFIX_CACHE, "weight": 4},
            *config["schedulingProfiles"][0]["plugins"][3:],
        ]}
    ]}}}}}  # fmt: skip

    target.set_decider_threshold("llama", 128, now=NOW, dry_run=False)
    assert target.decider_threshold("llama") == 128
    assert target.weights("llama")[c.SCORER_PREFIX_CACHE] == 4.0
    after = stored_svc(em)
    expected = copy.deepcopy(config)
    expected["schedulingProfiles"][0]["plugins"][2]["weight"] = 4
    expected["plugins"][2]["parameters"]["nonCachedTokens"] = 128
    assert inline_of(after) == expected
    rest_before, rest_after = copy.deepcopy(original["spec"]), copy.deepcopy(after["spec"])
    del rest_before["router"]["scheduler"]["config"], rest_after["router"]["scheduler"]["config"]
    assert rest_after == rest_before  # the rest of the spec is untouched
    assert all("/deployments/" not in w.path for w in em.writes())  # no restart annotation


def test_llmisvc_inline_409_then_success(em: Emulator, api: KubernetesApi) -> None:
    em.put(KSERVE_API, KSERVE_PLURAL, llmisvc({"inline": yaml.safe_load(DECIDER_YAML)}))
    em.faults.append(Fault("PATCH", f"/{KSERVE_PLURAL}/llama", status=409))
    target = EppWeightTarget(api, pool_settings(KSERVE_EPP, kserve=True))
    clock = ManualClock()
    _, attempts = call_with_retries(
        lambda: target.set_decider_threshold("llama", 48, now=NOW, dry_run=False), RetryPolicy((0.1,)), clock
    )
    assert attempts == 2
    assert [r.status for r in em.writes("PATCH")] == [409, 200]
    assert inline_of(stored_svc(em))["plugins"][2]["parameters"]["nonCachedTokens"] == 48


def test_llmisvc_inline_dry_run_changes_nothing(em: Emulator, api: KubernetesApi) -> None:
    em.put(KSERVE_API, KSERVE_PLURAL, llmisvc({"inline": yaml.safe_load(DECIDER_YAML)}))
    before = stored_svc(em)
    target = EppWeightTarget(api, pool_settings(KSERVE_EPP, kserve=True))
    assert target.set_decider_threshold("llama", 64, now=NOW, dry_run=True).endswith("(dry-run)")
    target.set_weights("llama", {c.SCORER_QUEUE: 3.0}, now=NOW, dry_run=True)
    writes = em.writes()
    assert len(writes) == 2
    assert all(w.query.get("dryRun") == ["All"] for w in writes)
    assert stored_svc(em) == before


def test_llmisvc_ref_is_followed_to_its_configmap(em: Emulator, api: KubernetesApi) -> None:
    seed_configmap(em, name="llama-sched", key="epp")
    em.put(KSERVE_API, KSERVE_PLURAL, llmisvc({"ref": {"name": "llama-sched"}}))  # key defaults to "epp"
    before = stored_svc(em)
    target = EppWeightTarget(api, pool_settings({**KSERVE_EPP, "llm_inference_service": "llama"}))
    assert target.decider_threshold("llama") == 16
    detail = target.set_decider_threshold("llama", 96, now=NOW, dry_run=False)
    assert detail.startswith("ConfigMap llm/llama-sched (spec.router.scheduler.config.ref of")
    text = em.get("v1", "configmaps", NS, "llama-sched")["data"]["epp"]
    assert text == DECIDER_YAML.replace("nonCachedTokens: 16", "nonCachedTokens: 96")
    assert [w.method for w in em.writes()] == ["PUT"]  # no restart, no patch of the owner
    assert stored_svc(em) == before


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (None, "no spec.router.scheduler.config.inline or .ref"),
        ({"inline": "plugins: []"}, "inline is a str, not an object"),
        ({"inline": {"plugins": []}, "ref": {"name": "x"}}, "has both inline and ref"),
        ({"ref": {"key": "epp"}}, "ref has no ConfigMap name"),
        (
            {"inline": {"plugins": [{"type": c.PD_DECIDER_PLUGIN, "parameters": {"nonCachedTokens": -4}}]}},
            "negative",
        ),
    ],
)
def test_llmisvc_bad_config_is_permanent(
    em: Emulator, api: KubernetesApi, config: dict[str, Any] | None, message: str
) -> None:
    em.put(KSERVE_API, KSERVE_PLURAL, llmisvc(config))
    target = EppWeightTarget(api, pool_settings(KSERVE_EPP, kserve=True))
    with pytest.raises(PermanentError, match=message):
        target.decider_threshold("llama")
    with pytest.raises(PermanentError, match=message):
        target.set_decider_threshold("llama", 32, now=NOW, dry_run=False)
    assert em.writes() == []


def test_llmisvc_route_stays_within_rbac(em: Emulator, api: KubernetesApi) -> None:
    from tests.autoscaler.test_kubernetes import _VERBS
    from tests.autoscaler.test_rbac import rules

    em.put(KSERVE_API, KSERVE_PLURAL, llmisvc({"inline": yaml.safe_load(DECIDER_YAML)}))
    target = EppWeightTarget(api, pool_settings(KSERVE_EPP, kserve=True))
    target.weights("llama")
    target.set_weights("llama", {c.SCORER_QUEUE: 2.0}, now=NOW, dry_run=False)
    target.set_decider_threshold("llama", 64, now=NOW, dry_run=False)
    granted = rules()
    # discovery (which version to use: v1alpha2 is not served, v1alpha1 is) is a non-resource
    # URL every authenticated client may read (the built-in system:discovery role); the rest
    # are the Role's
    discovery = [f"/apis/{KSERVE_GROUP}/v1alpha2", f"/apis/{KSERVE_GROUP}/v1alpha1"]
    assert [r.path for r in em.requests[:2]] == discovery
    assert len(em.requests) == 7
    for r in em.requests[2:]:
        parts = r.path.strip("/").split("/")
        group = "" if parts[0] == "api" else parts[1]
        resource = parts[parts.index("namespaces") + 2]
        verb = _VERBS[r.method]
        assert (group, resource, verb, False) in granted or (group, resource, verb, True) in granted, r.path


def test_llmisvc_route_cannot_tell_the_epp_rollout(em: Emulator, api: KubernetesApi) -> None:
    # KServe renders and rolls the EPP Deployment itself: unknown, the policy's interval stands in
    em.put(KSERVE_API, KSERVE_PLURAL, llmisvc({"inline": yaml.safe_load(DECIDER_YAML)}))
    assert EppWeightTarget(api, pool_settings(KSERVE_EPP, kserve=True)).epp_rolled_out("llama") is None
    assert em.requests == []


def test_build_controller_uses_the_inline_route(em: Emulator, server: RunningEmulator) -> None:
    em.put(KSERVE_API, KSERVE_PLURAL, llmisvc({"inline": yaml.safe_load(DECIDER_YAML)}))
    audit = MemoryAuditSink()
    ctl, kapi = build_controller(
        pool_settings(KSERVE_EPP, kserve=True),
        source=StaticObservations(
            demand={"llama": Demand(40_000, 4_000, 0.5, 40)},
            signals={"llama": Signals(cascade_tenants=("t",), load_imbalance=True)},
        ),
        audit=audit,
        mode="dry-run",
        host=server.url,
        identity="pod-a",
    )
    try:
        report = ctl.tick()
    finally:
        kapi.close()
    weights = [o for o in report.outcomes if o.target == "weights"]
    assert len(weights) == 1
    assert weights[0].ok, weights[0].detail
    assert "spec.router.scheduler.config.inline" in weights[0].detail
    inline_patches = [
        w for w in em.writes("PATCH", f"/{KSERVE_PLURAL}/llama") if "router" in (w.body.get("spec") or {})
    ]
    assert len(inline_patches) == 1
    assert inline_patches[0].query.get("dryRun") == ["All"]
    assert inline_of(stored_svc(em)) == yaml.safe_load(DECIDER_YAML)  # dry-run


# -- settings -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("epp", "kserve", "message"),
    [
        ({"config_map": "x"}, False, "autoscaler.pools.0.epp: source configmap needs deployment"),
        ({}, False, "source configmap needs config_map and deployment"),
        ({**CM_EPP, "llm_inference_service": "s"}, False, "llm_inference_service applies only to source"),
        ({**KSERVE_EPP, "config_map": "x"}, True, "config_map: only for source configmap"),
        ({**KSERVE_EPP, "key": "epp"}, True, "key: only for source configmap"),
        (KSERVE_EPP, False, "needs epp.llm_inference_service or LLMInferenceService targets"),
        ({"source": "crd"}, False, "epp.source: Input should be 'configmap' or 'llminferenceservice'"),
    ],
)
def test_epp_settings_validation(epp: dict[str, Any], kserve: bool, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        pool_settings(epp, kserve=kserve)
    assert "\n" not in str(info.value)


def test_epp_settings_defaults() -> None:
    cm = pool_settings(CM_EPP).pools[0].epp
    assert cm is not None
    assert (cm.source, cm.key, cm.profile) == ("configmap", "config.yaml", None)
    ks = pool_settings(KSERVE_EPP, kserve=True).pools[0].epp
    assert ks is not None
    assert (ks.source, ks.config_map, ks.deployment, ks.llm_inference_service) == (
        "llminferenceservice",
        None,
        None,
        None,
    )
    named = pool_settings({**KSERVE_EPP, "llm_inference_service": "other"}).pools[0].epp
    assert named is not None
    assert named.llm_inference_service == "other"


def test_both_levers_in_one_write_configmap(em: Emulator, api: KubernetesApi) -> None:
    # one PUT carrying both edits and one restart: an EPP pod started between two writes
    # would run half the change
    seed_configmap(em)
    target = EppWeightTarget(api, pool_settings(CM_EPP))
    detail = target.set_epp("llama", weights={c.SCORER_QUEUE: 3.0}, decider=128, now=NOW, dry_run=False)
    assert "weights {'queue-scorer': 3.0}, nonCachedTokens 16 -> 128" in detail
    assert [(r.method, r.path.rsplit("/", 1)[-1]) for r in em.writes()] == [
        ("PUT", "llama-epp"),
        ("PATCH", "llama-epp"),
    ]
    assert target.decider_threshold("llama") == 128
    assert target.weights("llama")[c.SCORER_QUEUE] == 3.0


def test_both_levers_in_one_write_llmisvc_v1alpha2(em: Emulator, api: KubernetesApi) -> None:
    # on the KServe route each owner patch re-renders the EPP Deployment: one patch, one
    # rollout; a KServe serving v1alpha2 (its storage version) is written through it
    em.served[KSERVE_GROUP] = ("v1alpha2", "v1alpha1")
    svc = llmisvc({"inline": yaml.safe_load(DECIDER_YAML)})
    svc["apiVersion"] = f"{KSERVE_GROUP}/v1alpha2"
    em.put(f"{KSERVE_GROUP}/v1alpha2", KSERVE_PLURAL, svc)
    target = EppWeightTarget(api, pool_settings(KSERVE_EPP, kserve=True))
    target.set_epp("llama", weights={c.SCORER_QUEUE: 3.0}, decider=128, now=NOW, dry_run=False)
    (patch,) = em.writes()
    assert patch.path == f"/apis/{KSERVE_GROUP}/v1alpha2/namespaces/{NS}/{KSERVE_PLURAL}/llama"
    inline = inline_of(em.get(f"{KSERVE_GROUP}/v1alpha2", KSERVE_PLURAL, NS, "llama"))
    assert target.decider_threshold("llama") == 128
    (profile,) = inline["schedulingProfiles"]
    assert {"pluginRef": c.SCORER_QUEUE, "weight": 3.0} in profile["plugins"]
