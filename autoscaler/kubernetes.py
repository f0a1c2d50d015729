"""Kubernetes adapters of the ports, built on `connectors.kubernetes_api` (which alone
imports the client): replica counts (/scale subresource, or the KServe LLMInferenceService
owner fields), the EPP config — scorer weights and the P/D decider threshold — (ConfigMap
edit + rollout restart, or the KServe LLMInferenceService inline scheduler config / its ConfigMap
ref, which KServe rolls out itself), and a Lease lock.

Each method is one attempt: errors surface as TemporaryError/PermanentError and
`autoscaler.loop` retries. Writes are guarded by resourceVersion (409 → retry re-reads).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from autoscaler.connectors.kubernetes_api import (
    KSERVE_GROUP,
    KSERVE_PLURAL,
    KSERVE_VERSIONS,
    LWS_GROUP,
    LWS_PLURAL,
    LWS_VERSION,
    KubernetesApi,
    ResourceRef,
)
from autoscaler.eppconfig import (
    EppConfigError,
    edit_decider_threshold,
    edit_weights,
    mapping_text,
    read_decider_threshold,
    read_weights,
)
from autoscaler.loop import Controller, Mode, SystemClock, elapsed_seconds
from autoscaler.ports import (
    ActuationError,
    AuditSink,
    ConflictError,
    LeverMemory,
    NotFoundError,
    ObservationSource,
    PermanentError,
)
from autoscaler.settings import AutoscalerSettings, EppSettings, PoolSettings, TargetSettings
from autoscaler.types import RoleStatus
from observer import conventions as c

KSERVE_KIND = "LLMInferenceService"
T = TypeVar("T")


def micro_time(t: float) -> str:
    """RFC 3339 MicroTime, as Lease fields carry it."""
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: Any) -> float | None:
    if isinstance(value, dt.datetime):
        return value.timestamp()
    if isinstance(value, str) and value:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return None


class KServeVersion:
    """The LLMInferenceService API version to talk to: the newest of `KSERVE_VERSIONS` the API
    server lists `llminferenceservices` under (discovery, once; again after `read` gets a 404,
    e.g. after a KServe upgrade). A target's `version` pins it instead."""

    def __init__(self, api: KubernetesApi) -> None:
        self._api = api
        self._found: str | None = None

    def __call__(self, pinned: str | None = None) -> str:
        if pinned:
            return pinned
        if self._found is None:  # a failed discovery is not kept: the next use tries again
            served = (v for v in KSERVE_VERSIONS if self._api.serves(KSERVE_GROUP, v, KSERVE_PLURAL))
            self._found = next(served, None)
            if self._found is None:
                raise PermanentError(
                    f"the API server serves {KSERVE_PLURAL}.{KSERVE_GROUP} at none of the versions "
                    f"pd-observer knows ({', '.join(KSERVE_VERSIONS)}): is KServe's LLMInferenceService "
                    "installed? (A newer version with the same replica and scheduler fields can be "
                    "pinned with the target's `version`.)"
                )
        return self._found

    def read(self, ref: ResourceRef) -> dict[str, Any]:
        """GET an LLMInferenceService; a 404 also forgets the version found (a KServe upgrade
        may have stopped serving it), so the next use discovers again."""
        try:
            return self._api.get_object(ref)
        except NotFoundError:
            self._found = None
            raise


def resource_ref(target: TargetSettings, namespace: str, kserve: KServeVersion) -> ResourceRef:
    """The object a role's target names; an LLMInferenceService at the version `kserve` finds
    (the target's pinned `version`, else discovery)."""
    ns = target.namespace or namespace
    if target.kind in ("Deployment", "StatefulSet"):
        return ResourceRef(target.kind, ns, target.name)
    if target.kind == "LeaderWorkerSet":
        return ResourceRef(target.kind, ns, target.name, LWS_GROUP, LWS_VERSION, LWS_PLURAL)
    if target.kind == KSERVE_KIND:
        return ResourceRef(target.kind, ns, target.name, KSERVE_GROUP, kserve(target.version), KSERVE_PLURAL)
    return ResourceRef(
        target.kind, ns, target.name, target.group or "", target.version or "", target.plural or ""
    )


def _int(value: Any) -> int:
    """A count of a schema-less object (absent or empty: 0); one that is not a whole number is
    ValueError (`KubernetesScaleTarget.status` makes it a PermanentError naming the object)."""
    if not (isinstance(value, int | float | str) and str(value).strip() != ""):
        return 0
    try:
        return int(value)
    except (ValueError, OverflowError):
        raise ValueError(f"a count that is not a whole number: {value!r}") from None


def _conditions(status: Mapping[str, Any]) -> dict[Any, Any]:
    """type → status of a Knative-style `status.conditions`."""
    return {x.get("type"): x.get("status") for x in status.get("conditions") or [] if isinstance(x, dict)}


def _kserve_workload(ref: ResourceRef, obj: Mapping[str, Any], role: str) -> Mapping[str, Any]:
    """The role's WorkloadSpec of an LLMInferenceService (`spec` for decode, `spec.prefill`); a
    PermanentError when the role has `scaling`, which hands its replicas to KServe's own
    autoscaler (the API refuses `replicas` next to it): on the object, or inherited through
    `spec.baseRefs`, which only the role's scaling condition shows (a `replicas` written next to
    an inherited `scaling` fails KServe's merge and takes the service down)."""
    spec = obj.get("spec") or {}
    work, path = (spec.get("prefill") or {}, "spec.prefill") if role == c.ROLE_PREFILL else (spec, "spec")
    status = obj.get("status") or {}
    if role == c.ROLE_PREFILL and spec.get("prefill") is None and not _kserve_has_prefill(status):
        raise PermanentError(
            f"{ref}: no spec.prefill and KServe reports no prefill workload: the service does not "
            "disaggregate, so it has no prefill role to scale (writing spec.prefill.replicas would "
            "turn P/D on): give the pool's prefill another target, or add spec.prefill to the service"
        )
    inherited = c.KSERVE_SCALING_CONDITION[role] in _conditions(status)
    if work.get(c.KSERVE_SCALING_FIELD) is not None or inherited:
        where = "through spec.baseRefs " if work.get(c.KSERVE_SCALING_FIELD) is None else ""
        raise PermanentError(
            f"{ref}: {path}.{c.KSERVE_SCALING_FIELD} is set {where}(condition "
            f"{c.KSERVE_SCALING_CONDITION[role]}), so KServe's autoscaler owns the {role} replicas: "
            "remove it for pd-observer to scale this role, or leave the pool out"
        )
    return work


def _kserve_has_prefill(status: Mapping[str, Any]) -> bool:
    """KServe reports a prefill workload (one inherited through `spec.baseRefs` shows only here):
    a prefill workload condition, or `status.workloads.prefill`."""
    conds = _conditions(status)
    workloads = status.get("workloads")
    named = isinstance(workloads, dict) and workloads.get(c.KSERVE_STATUS_WORKLOAD[c.ROLE_PREFILL])
    return bool(named) or any(t in conds for t in c.KSERVE_WORKLOAD_CONDITIONS[c.ROLE_PREFILL])


def _generation_current(obj: Mapping[str, Any]) -> bool:
    """status.observedGeneration has caught up with metadata.generation (or either is absent)."""
    gen = (obj.get("metadata") or {}).get("generation")
    observed = (obj.get("status") or {}).get("observedGeneration")
    return gen is None or observed is None or _int(observed) >= _int(gen)


_MD5_HEX_LEN = 32
_TRAILING_NON_ALNUM = re.compile(r"[^a-zA-Z0-9]+$")


def kserve_child_name(parent: str, suffix: str) -> str:
    """The name KServe gives the object it generates for `parent` with `suffix` (knative's
    `kmeta.ChildName`): `parent + suffix` when that fits a 63-character DNS label; otherwise the
    parent cut to 31 - len(suffix) characters, then the MD5 hex of the whole parent (32), then
    the suffix, so long names stay unique. A suffix of 31 characters or more leaves no room for
    that: then the parent cut to 31, the MD5 hex of parent + suffix, as much of the suffix as
    still fits, and no trailing character that is not a letter or digit."""
    if len(parent) + len(suffix) <= c.K8S_NAME_MAX:
        return parent + suffix
    keep = c.K8S_NAME_MAX - _MD5_HEX_LEN - len(suffix)
    if keep > 0:
        return parent[:keep] + _md5_hex(parent) + suffix
    name = parent[: c.K8S_NAME_MAX - _MD5_HEX_LEN] + _md5_hex(parent + suffix)
    name += suffix[: c.K8S_NAME_MAX - len(name)]
    return _TRAILING_NON_ALNUM.sub("", name)


def _md5_hex(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def lws_status(obj: Mapping[str, Any]) -> RoleStatus:
    """A LeaderWorkerSet's groups: its counts are omitempty too (missing = 0 groups)."""
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    replicas = _int(spec.get("replicas", 1))
    ready, updated = _int(st.get("readyReplicas")), _int(st.get("updatedReplicas"))
    return RoleStatus(replicas, ready, _generation_current(obj), updated < replicas)


def workload_status(obj: Mapping[str, Any]) -> RoleStatus:
    """A Deployment's or StatefulSet's replicas and rollout state: a rollout is in progress
    while fewer pods than desired run the current template, or old pods are still there.

    Their status counts are `omitempty`: a missing one is 0 (a Recreate rollout's first step
    has no `updatedReplicas`). Their controllers always write `observedGeneration`, so a status
    without it has not been observed yet: not current."""
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    replicas = _int(spec.get("replicas", 1))
    ready = _int(st.get("readyReplicas"))
    updated = _int(st.get("updatedReplicas"))
    rollout = updated < replicas or _int(st.get("replicas")) > replicas
    observed = "observedGeneration" in st
    return RoleStatus(replicas, ready, observed and _generation_current(obj), rollout)


class KubernetesScaleTarget:
    """ScaleTarget over Deployments, StatefulSets, LeaderWorkerSets, CRs with /scale and
    KServe LLMInferenceService (owner fields `spec.replicas` = decode, `spec.prefill.replicas`)."""

    def __init__(
        self, api: KubernetesApi, settings: AutoscalerSettings, kserve: KServeVersion | None = None
    ) -> None:
        self._api = api
        self._settings = settings
        self._kserve = kserve or KServeVersion(api)

    def _pool(self, pool: str) -> PoolSettings:
        try:
            return self._settings.pool(pool)
        except KeyError:
            raise PermanentError(f"pool {pool!r} not configured") from None

    def ref(self, pool: str, role: str) -> ResourceRef:
        p = self._pool(pool)
        return resource_ref(p.role(role).target, p.namespace, self._kserve)

    def status(self, pool: str, role: str) -> RoleStatus:
        ref = self.ref(pool, role)
        obj = self._kserve.read(ref) if ref.kind == KSERVE_KIND else self._api.get_object(ref)
        try:
            return self._status(ref, obj, role)
        except ValueError as exc:  # a schema-less object's count that is not a number
            raise PermanentError(f"{ref}: {exc}") from exc

    def _status(self, ref: ResourceRef, obj: Mapping[str, Any], role: str) -> RoleStatus:
        if ref.kind in ("Deployment", "StatefulSet"):
            return workload_status(obj)
        if ref.kind == KSERVE_KIND:
            return self._kserve_status(ref, obj, role)
        if ref.kind == "LeaderWorkerSet":
            return lws_status(obj)
        st = obj.get("status") or {}
        generation_current = _generation_current(obj)
        scale = self._api.get_scale(ref)
        # any other resource with /scale: its readyReplicas if it has one, else the Scale's
        ready = _int(st["readyReplicas"]) if "readyReplicas" in st else scale.status_replicas
        rollout = "updatedReplicas" in st and _int(st["updatedReplicas"]) < scale.replicas
        return RoleStatus(scale.replicas, ready, generation_current, rollout)

    def _kserve_status(self, ref: ResourceRef, obj: Mapping[str, Any], role: str) -> RoleStatus:
        """An LLMInferenceService role: the owner's replicas (unset: its workload's, else the
        Deployment default 1); readiness and rollout from the workload KServe generates for the
        role, found through `status.workloads` (v1alpha2: a Deployment or, multi-node, a
        LeaderWorkerSet) or by its name; where there is none to read, from the role's workload
        conditions (`Ready` also covers the router): all ready or none."""
        work = _kserve_workload(ref, obj, role)
        st = obj.get("status") or {}
        current = _generation_current(obj) and st.get("observedGeneration") is not None
        child = self._kserve_child(ref, st, role)
        if "replicas" in work:
            replicas = _int(work["replicas"])
        else:
            replicas = child.replicas if child is not None else 1
        if child is None:
            conds = _conditions(st)
            present = [conds[t] for t in c.KSERVE_WORKLOAD_CONDITIONS[role] if t in conds]
            ready = replicas if present and all(v == "True" for v in present) else 0
            return RoleStatus(replicas, ready, current, False)
        # the child follows the owner: until it has the owner's count, the role is not stable
        rollout = child.rollout_in_progress or child.replicas != replicas
        return RoleStatus(replicas, min(child.ready, replicas), current and child.generation_current, rollout)

    def _kserve_child(self, ref: ResourceRef, status: Mapping[str, Any], role: str) -> RoleStatus | None:
        """The status of the workload KServe generated for `role`: the one `status.workloads`
        names, else the Deployment `<name>-kserve[-prefill]`, else the LeaderWorkerSet
        `<name>-kserve-mn[-prefill]` (hashed as KServe does past 63 characters); None when there
        is none."""
        ns = ref.namespace
        named = ((status.get("workloads") or {}).get(c.KSERVE_STATUS_WORKLOAD[role])) or {}
        kind, name = named.get("kind"), named.get("name")
        if kind in ("Deployment", "LeaderWorkerSet") and name:
            candidates = [(str(kind), str(name))]
        else:
            candidates = [
                ("Deployment", kserve_child_name(ref.name, c.KSERVE_DEPLOYMENT_SUFFIX[role])),
                ("LeaderWorkerSet", kserve_child_name(ref.name, c.KSERVE_LWS_SUFFIX[role])),
            ]
        for kind, name in candidates:
            try:
                if kind == "LeaderWorkerSet":
                    lws = ResourceRef(kind, ns, name, LWS_GROUP, LWS_VERSION, LWS_PLURAL)
                    return lws_status(self._api.get_object(lws))
                return workload_status(self._api.get_object(ResourceRef(kind, ns, name)))
            except NotFoundError:
                continue
        return None

    def scale(self, pool: str, role: str, replicas: int, *, dry_run: bool) -> str:
        ref = self.ref(pool, role)
        suffix = " (dry-run)" if dry_run else ""
        if ref.kind == KSERVE_KIND:
            obj = self._kserve.read(ref)
            rv = str(obj.get("metadata", {}).get("resourceVersion", ""))
            work = _kserve_workload(ref, obj, role)
            old = work.get("replicas", "unset")
            field: dict[str, Any] = (
                {"prefill": {"replicas": replicas}} if role == c.ROLE_PREFILL else {"replicas": replicas}
            )
            self._api.merge_patch_custom(
                ref, {"metadata": {"resourceVersion": rv}, "spec": field}, dry_run=dry_run
            )
            return f"{ref} {role}: {old} -> {replicas}{suffix}"
        view = self._api.get_scale(ref)
        self._api.patch_scale(ref, replicas, view.resource_version, dry_run=dry_run)
        return f"{ref}/scale: {view.replicas} -> {replicas}{suffix}"


@dataclass(frozen=True, slots=True)
class _EppConfig:
    """One read of a pool's EndpointPickerConfig: its text, where it came from, and how to
    write a new text back (guarded by the resourceVersion of this read)."""

    text: str
    where: str
    write: Callable[[str, float, bool], str]  # (new text, now, dry_run) -> what else was done
    # the EPP restart that follows a write, where the route needs one: (now, dry_run) -> detail
    restart: Callable[[float, bool], str] | None = None


def _merge_patch(old: Any, new: Any) -> Any:
    """The RFC 7386 merge patch taking `old` to `new` (only what changed; lists whole)."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return new
    out: dict[str, Any] = {k: None for k in old if k not in new}
    for k, v in new.items():
        if k not in old:
            out[k] = v
        elif old[k] != v:
            out[k] = _merge_patch(old[k], v)
    return out


class EppWeightTarget:
    """WeightTarget: the EndpointPickerConfig (scorer weights, P/D decider `nonCachedTokens`)
    of each pool, from where `epp.source` says it lives:

    - `configmap`: key `epp.key` of ConfigMap `epp.config_map`, replaced with a
      resourceVersion-guarded PUT; the EPP reads it only at start, so a change is followed by a
      rollout restart of `epp.deployment` (pod-template annotation `kubectl.kubernetes.io/restartedAt`).
    - `llminferenceservice`: KServe `spec.router.scheduler.config` of the owner. `inline` (a JSON
      object in the API) is edited by a resourceVersion-guarded merge patch of the owner; `ref`
      is followed to its ConfigMap key (default `epp`) and that is replaced. No restart in either
      case: KServe renders the config into the EPP Deployment's `--config-text` argument and
      re-renders it when the spec or the referenced ConfigMap changes, which rolls the EPP.

    Every text edit is `autoscaler.eppconfig`'s (surgical, verified); one private helper reads,
    edits and writes for all four public methods.
    """

    def __init__(
        self, api: KubernetesApi, settings: AutoscalerSettings, kserve: KServeVersion | None = None
    ) -> None:
        self._api = api
        self._settings = settings
        self._kserve = kserve or KServeVersion(api)

    def _epp(self, pool: str) -> tuple[PoolSettings, EppSettings]:
        try:
            p = self._settings.pool(pool)
        except KeyError:
            raise PermanentError(f"pool {pool!r} not configured") from None
        if p.epp is None:
            raise PermanentError(f"pool {pool!r} has no epp section")
        return p, p.epp

    # -- routes ----------------------------------------------------------------------------
    def _config_map(self, namespace: str, name: str, key: str, restart: str | None, where: str) -> _EppConfig:
        data, rv = self._api.get_config_map(namespace, name)
        if key not in data:
            raise PermanentError(f"{where} has no key {key!r}")

        rollout = None if restart is None else functools.partial(self._restart, namespace, restart)

        def write(new_text: str, now: float, dry_run: bool) -> str:
            self._api.replace_config_map_data(namespace, name, {**data, key: new_text}, rv, dry_run=dry_run)
            return rollout(now, dry_run) if rollout is not None else ""

        return _EppConfig(data[key], where, write, rollout)

    def _restart(self, namespace: str, deployment: str, now: float, dry_run: bool) -> str:
        """Rollout restart of the EPP Deployment (pod-template `restartedAt` = `now`)."""
        annotation = {c.K8S_RESTART_ANNOTATION: micro_time(now)}
        patch = {"spec": {"template": {"metadata": {"annotations": annotation}}}}
        self._api.patch_deployment(namespace, deployment, patch, dry_run=dry_run)
        return f"; restarted Deployment {namespace}/{deployment}"

    def _llm_inference_service(self, p: PoolSettings, epp: EppSettings) -> _EppConfig:
        target = p.prefill.target
        pinned = target.version if target.kind == KSERVE_KIND else None
        if epp.llm_inference_service is not None:
            ns, name = p.namespace, epp.llm_inference_service
        else:  # the pool's LLMInferenceService target (settings check there is one)
            ns, name = target.namespace or p.namespace, target.name
        ref = ResourceRef(KSERVE_KIND, ns, name, KSERVE_GROUP, self._kserve(pinned), KSERVE_PLURAL)
        obj = self._kserve.read(ref)
        rv = str((obj.get("metadata") or {}).get("resourceVersion", ""))
        node: Any = obj.get("spec")
        for part in c.KSERVE_SCHEDULER_CONFIG_PATH[1:]:
            node = node.get(part) if isinstance(node, dict) else None
        config = node if isinstance(node, dict) else {}
        inline, cm_ref = config.get("inline"), config.get("ref")
        path = ".".join(c.KSERVE_SCHEDULER_CONFIG_PATH)
        if inline is not None and cm_ref is not None:
            raise PermanentError(f"{ref}: {path} has both inline and ref")
        if isinstance(cm_ref, dict):
            cm, key = cm_ref.get("name"), cm_ref.get("key") or c.KSERVE_SCHEDULER_CONFIG_REF_DEFAULT_KEY
            if not isinstance(cm, str) or not cm:
                raise PermanentError(f"{ref}: {path}.ref has no ConfigMap name")
            return self._config_map(ns, cm, key, None, f"ConfigMap {ns}/{cm} ({path}.ref of {ref})")
        if inline is None:
            raise PermanentError(
                f"{ref}: no {path}.inline or .ref (KServe's built-in default, or inherited through "
                "spec.baseRefs): put the EndpointPickerConfig on the LLMInferenceService first"
            )
        if not isinstance(inline, dict):
            raise PermanentError(f"{ref}: {path}.inline is a {type(inline).__name__}, not an object")
        where = f"{ref} {path}.inline"

        def write(new_text: str, now: float, dry_run: bool) -> str:
            patch = _merge_patch(inline, json.loads(new_text))
            body = {
                "metadata": {"resourceVersion": rv},
                "spec": {"router": {"scheduler": {"config": {"inline": patch}}}},
            }
            self._api.merge_patch_custom(ref, body, dry_run=dry_run)
            return ""

        return _EppConfig(mapping_text(inline), where, write)

    def _load(self, pool: str) -> tuple[_EppConfig, EppSettings]:
        p, epp = self._epp(pool)
        if epp.source == "llminferenceservice":
            return self._llm_inference_service(p, epp), epp
        if epp.config_map is None or epp.deployment is None:  # settings validate it; mypy cannot see
            raise PermanentError(f"pool {pool!r}: epp source configmap needs config_map and deployment")
        where = f"ConfigMap {p.namespace}/{epp.config_map}"
        return self._config_map(p.namespace, epp.config_map, epp.key, epp.deployment, where), epp

    # -- the one read and the one edit -----------------------------------------------------
    def _read(self, pool: str, read: Callable[[str, EppSettings], T]) -> T:
        cfg, epp = self._load(pool)
        try:
            return read(cfg.text, epp)
        except EppConfigError as exc:
            raise PermanentError(f"{cfg.where}: {exc}") from exc

    def _edit(
        self,
        pool: str,
        edit: Callable[[str, EppSettings], str],
        describe: Callable[[str], str],
        *,
        now: float,
        dry_run: bool,
    ) -> str:
        """Read, edit the text, write it back (+ restart where the route needs one)."""
        cfg, epp = self._load(pool)
        try:
            new_text = edit(cfg.text, epp)
            what = describe(cfg.text)
        except EppConfigError as exc:
            raise PermanentError(f"{cfg.where}: {exc}") from exc
        if new_text == cfg.text:
            if cfg.restart is None:
                return f"{cfg.where}: {what} (already)"
            # the config is there, but the restart that follows it may not be: the attempt that
            # wrote it can have failed on the restart, and the EPP reads its config only at
            # start. Restarting again with the same `now` (the same annotation) is a no-op for
            # a restart that did go through.
            done = cfg.restart(now, dry_run)
            return f"{cfg.where}: {what} (already){done}{' (dry-run)' if dry_run else ''}"
        done = cfg.write(new_text, now, dry_run)
        return f"{cfg.where}: {what}{done}{' (dry-run)' if dry_run else ''}"

    # -- WeightTarget ----------------------------------------------------------------------
    def weights(self, pool: str) -> Mapping[str, float]:
        return self._read(pool, lambda text, epp: read_weights(text, epp.profile))

    def set_epp(
        self,
        pool: str,
        *,
        weights: Mapping[str, float] | None = None,
        decider: int | None = None,
        now: float,
        dry_run: bool,
    ) -> str:
        """Both edits on one read, in one write and (ConfigMap route) one restart: two writes
        would roll the EPP twice on the KServe routes, and on the ConfigMap route an EPP pod
        started between them would run half the change."""

        def edited(text: str, epp: EppSettings) -> str:
            if weights is not None:
                text = edit_weights(text, weights, epp.profile)
            return edit_decider_threshold(text, decider) if decider is not None else text

        def describe(text: str) -> str:
            parts = [f"weights {dict(weights)}"] if weights is not None else []
            if decider is not None:
                parts.append(f"{c.PD_DECIDER_THRESHOLD_PARAM} {read_decider_threshold(text)} -> {decider}")
            return ", ".join(parts)

        return self._edit(pool, edited, describe, now=now, dry_run=dry_run)

    def set_weights(self, pool: str, weights: Mapping[str, float], *, now: float, dry_run: bool) -> str:
        return self.set_epp(pool, weights=weights, now=now, dry_run=dry_run)

    def decider_threshold(self, pool: str) -> int | None:
        return self._read(pool, lambda text, _: read_decider_threshold(text))

    def epp_rolled_out(self, pool: str) -> bool | None:
        """Source `configmap`: whether `epp.deployment` is stable (generation observed, every
        replica updated and ready, no old pod left). Source `llminferenceservice`: None — KServe
        renders and rolls the EPP Deployment itself, under a name this config does not give."""
        p, epp = self._epp(pool)
        if epp.source != "configmap" or epp.deployment is None:
            return None
        deployment = self._api.get_object(ResourceRef("Deployment", p.namespace, epp.deployment))
        return workload_status(deployment).stable

    def set_decider_threshold(self, pool: str, tokens: int, *, now: float, dry_run: bool) -> str:
        return self.set_epp(pool, decider=tokens, now=now, dry_run=dry_run)


class KubernetesLease:
    """LeaseLock on a coordination.k8s.io/v1 Lease, acquire/renew with resourceVersion.

    Expiry is judged like client-go: by how long the record has gone unchanged on *our*
    monotonic clock (no cross-node clock comparison, and a step of our wall clock does not
    expire it); the wall-clock `now` is only what is written. Losing a write race (409) means
    not the leader.
    """

    def __init__(
        self,
        api: KubernetesApi,
        *,
        namespace: str,
        name: str,
        identity: str,
        duration_seconds: float,
        monotonic: Callable[[], float] = elapsed_seconds,
    ) -> None:
        self._api = api
        self._ns = namespace
        self._name = name
        self._identity = identity
        self._duration = duration_seconds
        self._monotonic = monotonic
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def duration_seconds(self) -> float:
        return self._duration

    def _spec(self, now: float, acquire: float, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self._identity,
            "leaseDurationSeconds": max(1, round(self._duration)),
            "acquireTime": micro_time(acquire),
            "renewTime": micro_time(now),
            "leaseTransitions": transitions,
        }

    def try_acquire_or_renew(self, now: float) -> bool:
        lease = self._api.get_lease(self._ns, self._name)
        if lease is None:
            try:
                self._api.create_lease(self._ns, self._name, self._spec(now, now, 0))
            except ConflictError:  # someone else created it first
                return False
            return True
        spec = lease.get("spec") or {}
        meta = lease.get("metadata") or {}
        holder = spec.get("holderIdentity") or ""
        key = (holder, str(spec.get("renewTime")), meta.get("resourceVersion"))
        elapsed = self._monotonic()
        if key != self._observed:
            self._observed, self._observed_at = key, elapsed
        duration = _int(spec.get("leaseDurationSeconds")) or self._duration
        if holder and holder != self._identity and elapsed - self._observed_at < duration:
            return False
        mine = holder == self._identity
        acquire = parse_time(spec.get("acquireTime")) if mine else now
        transitions = _int(spec.get("leaseTransitions")) + (0 if mine else 1)
        try:
            self._api.patch_lease(
                self._ns,
                self._name,
                self._spec(now, acquire if acquire is not None else now, transitions),
                str(meta.get("resourceVersion", "")),
            )
        except ConflictError:  # lost the race
            return False
        return True

    def release(self, now: float) -> None:
        """Give the lease up (holder cleared) so a standby takes over without waiting."""
        try:
            lease = self._api.get_lease(self._ns, self._name)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self._identity:
                return
            self._api.patch_lease(
                self._ns,
                self._name,
                {"holderIdentity": None, "leaseDurationSeconds": 1},
                str((lease.get("metadata") or {}).get("resourceVersion", "")),
            )
        except ActuationError:
            return


def build_controller(
    settings: AutoscalerSettings,
    *,
    source: ObservationSource,
    audit: AuditSink,
    mode: str | None = None,
    host: str | None = None,
    kubeconfig: str | None = None,
    identity: str | None = None,
    memory: LeverMemory | None = None,
) -> tuple[Controller, KubernetesApi]:
    """Wire a Controller to the Kubernetes API (in-cluster, kubeconfig, or `host`).

    `mode` overrides settings.mode (e.g. `--dry-run`); the Lease identity defaults to the
    hostname (the pod name), read here at runtime; `memory` (the audit log) is what a new
    leader recalls of the EPP levers. Close the returned API when done.
    """
    api = KubernetesApi.connect(
        field_manager=settings.field_manager,
        request_timeout_seconds=settings.retry.request_timeout_seconds,
        host=host,
        kubeconfig=kubeconfig,
    )
    clock = SystemClock()
    lease = None
    if settings.lease.enabled:
        ns = settings.lease.namespace or (settings.pools[0].namespace if settings.pools else "default")
        lease = KubernetesLease(
            api,
            namespace=ns,
            name=settings.lease.name,
            identity=identity or settings.lease.identity or socket.gethostname(),
            duration_seconds=settings.lease_duration_seconds,
            monotonic=clock.monotonic,
        )
    has_epp = any(p.epp is not None for p in settings.pools)
    kserve = KServeVersion(api)  # one discovery for both
    ctl = Controller(
        config=settings.policy_config(),
        mode=Mode(mode or settings.mode),
        scale=KubernetesScaleTarget(api, settings, kserve),
        weights=EppWeightTarget(api, settings, kserve) if has_epp else None,
        source=source,
        clock=clock,
        sleeper=clock,
        audit=audit,
        lease=lease,
        retry=settings.retry_policy(),
        interval_seconds=settings.interval_seconds,
        memory=memory,
    )
    return ctl, api
