"""Kubernetes adapters of the ports, built on `connectors.kubernetes_api` (which alone
imports the client): replica counts (/scale subresource, or the KServe LLMInferenceService
owner fields), EPP scorer weights (ConfigMap edit + rollout restart), and a Lease lock.

Each method is one attempt: errors surface as TemporaryError/PermanentError and
`autoscaler.loop` retries. Writes are guarded by resourceVersion (409 → retry re-reads).
"""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Mapping
from typing import Any

from autoscaler.connectors.kubernetes_api import (
    KSERVE_GROUP,
    KSERVE_PLURAL,
    KSERVE_VERSION,
    LWS_GROUP,
    LWS_PLURAL,
    LWS_VERSION,
    KubernetesApi,
    ResourceRef,
)
from autoscaler.eppconfig import EppConfigError, edit_weights, read_weights
from autoscaler.loop import Controller, Mode, RetryPolicy, SystemClock
from autoscaler.ports import ActuationError, AuditSink, ObservationSource, PermanentError, TemporaryError
from autoscaler.settings import AutoscalerSettings, PoolSettings, TargetSettings
from autoscaler.types import RoleStatus
from observer import conventions as c

KSERVE_KIND = "LLMInferenceService"


def micro_time(t: float) -> str:
    """RFC 3339 MicroTime, as Lease fields carry it."""
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: Any) -> float | None:
    if isinstance(value, dt.datetime):
        return value.timestamp()
    if isinstance(value, str) and value:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return None


def resource_ref(target: TargetSettings, namespace: str) -> ResourceRef:
    ns = target.namespace or namespace
    if target.kind in ("Deployment", "StatefulSet"):
        return ResourceRef(target.kind, ns, target.name)
    if target.kind == "LeaderWorkerSet":
        return ResourceRef(target.kind, ns, target.name, LWS_GROUP, LWS_VERSION, LWS_PLURAL)
    if target.kind == KSERVE_KIND:
        return ResourceRef(target.kind, ns, target.name, KSERVE_GROUP, KSERVE_VERSION, KSERVE_PLURAL)
    return ResourceRef(
        target.kind, ns, target.name, target.group or "", target.version or "", target.plural or ""
    )


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float | str) and str(value).strip() != "" else 0


def _kserve_replicas(spec: Mapping[str, Any], role: str) -> int:
    if role == c.ROLE_PREFILL:
        return _int((spec.get("prefill") or {}).get("replicas"))
    return _int(spec.get("replicas"))


class KubernetesScaleTarget:
    """ScaleTarget over Deployments, StatefulSets, LeaderWorkerSets, CRs with /scale and
    KServe LLMInferenceService (owner fields `spec.replicas` = decode, `spec.prefill.replicas`)."""

    def __init__(self, api: KubernetesApi, settings: AutoscalerSettings) -> None:
        self._api = api
        self._settings = settings

    def _pool(self, pool: str) -> PoolSettings:
        try:
            return self._settings.pool(pool)
        except KeyError:
            raise PermanentError(f"pool {pool!r} not configured") from None

    def ref(self, pool: str, role: str) -> ResourceRef:
        p = self._pool(pool)
        return resource_ref(p.role(role).target, p.namespace)

    def status(self, pool: str, role: str) -> RoleStatus:
        ref = self.ref(pool, role)
        obj = self._api.get_object(ref)
        meta, spec, st = obj.get("metadata", {}), obj.get("spec", {}), obj.get("status") or {}
        gen = meta.get("generation")
        observed = st.get("observedGeneration")
        generation_current = gen is None or observed is None or _int(observed) >= _int(gen)
        if ref.kind == KSERVE_KIND:
            replicas = _int(
                (spec.get("prefill") or {}).get("replicas")
                if role == c.ROLE_PREFILL
                else spec.get("replicas")
            )
            conds = {
                x.get("type"): x.get("status") for x in st.get("conditions") or [] if isinstance(x, dict)
            }
            ready = replicas if conds.get("Ready") == "True" else 0
            return RoleStatus(replicas, ready, generation_current and observed is not None, False)
        if ref.kind in ("Deployment", "StatefulSet"):
            replicas = _int(spec.get("replicas", 1))
            ready = _int(st.get("readyReplicas"))
            updated = _int(st.get("updatedReplicas", replicas))
            rollout = updated < replicas or _int(st.get("replicas", replicas)) > replicas
            return RoleStatus(replicas, ready, generation_current, rollout)
        scale = self._api.get_scale(ref)
        ready = _int(st["readyReplicas"]) if "readyReplicas" in st else scale.status_replicas
        rollout = "updatedReplicas" in st and _int(st["updatedReplicas"]) < scale.replicas
        return RoleStatus(scale.replicas, ready, generation_current, rollout)

    def scale(self, pool: str, role: str, replicas: int, *, dry_run: bool) -> str:
        ref = self.ref(pool, role)
        suffix = " (dry-run)" if dry_run else ""
        if ref.kind == KSERVE_KIND:
            obj = self._api.get_object(ref)
            rv = str(obj.get("metadata", {}).get("resourceVersion", ""))
            spec = obj.get("spec", {})
            old = _int(
                (spec.get("prefill") or {}).get("replicas")
                if role == c.ROLE_PREFILL
                else spec.get("replicas")
            )
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


class EppWeightTarget:
    """WeightTarget: scorer weights in the EndpointPickerConfig held in a ConfigMap key; the
    EPP reads it only at start, so a change is followed by a rollout restart of its Deployment
    (pod-template annotation `kubectl.kubernetes.io/restartedAt`)."""

    def __init__(self, api: KubernetesApi, settings: AutoscalerSettings) -> None:
        self._api = api
        self._settings = settings

    def _epp(self, pool: str) -> tuple[PoolSettings, Any]:
        try:
            p = self._settings.pool(pool)
        except KeyError:
            raise PermanentError(f"pool {pool!r} not configured") from None
        if p.epp is None:
            raise PermanentError(f"pool {pool!r} has no epp section")
        return p, p.epp

    def weights(self, pool: str) -> Mapping[str, float]:
        p, epp = self._epp(pool)
        data, _ = self._api.get_config_map(p.namespace, epp.config_map)
        if epp.key not in data:
            raise PermanentError(f"ConfigMap {p.namespace}/{epp.config_map} has no key {epp.key!r}")
        try:
            return read_weights(data[epp.key], epp.profile)
        except EppConfigError as exc:
            raise PermanentError(f"ConfigMap {p.namespace}/{epp.config_map}: {exc}") from exc

    def set_weights(self, pool: str, weights: Mapping[str, float], *, now: float, dry_run: bool) -> str:
        p, epp = self._epp(pool)
        data, rv = self._api.get_config_map(p.namespace, epp.config_map)
        text = data.get(epp.key)
        if text is None:
            raise PermanentError(f"ConfigMap {p.namespace}/{epp.config_map} has no key {epp.key!r}")
        try:
            new_text = edit_weights(text, weights, epp.profile)
        except EppConfigError as exc:
            raise PermanentError(f"ConfigMap {p.namespace}/{epp.config_map}: {exc}") from exc
        suffix = " (dry-run)" if dry_run else ""
        if new_text == text:
            return f"ConfigMap {p.namespace}/{epp.config_map}: weights already {dict(weights)}"
        self._api.replace_config_map_data(
            p.namespace, epp.config_map, {**data, epp.key: new_text}, rv, dry_run=dry_run
        )
        restart = {
            "spec": {"template": {"metadata": {"annotations": {c.K8S_RESTART_ANNOTATION: micro_time(now)}}}}
        }
        self._api.patch_deployment(p.namespace, epp.deployment, restart, dry_run=dry_run)
        return (
            f"ConfigMap {p.namespace}/{epp.config_map}: weights {dict(weights)}; "
            f"restarted Deployment {p.namespace}/{epp.deployment}{suffix}"
        )


class KubernetesLease:
    """LeaseLock on a coordination.k8s.io/v1 Lease, acquire/renew with resourceVersion.

    Expiry is judged like client-go: by how long the record has gone unchanged on *our*
    clock (no cross-node clock comparison). Losing a write race (409) means not the leader.
    """

    def __init__(
        self, api: KubernetesApi, *, namespace: str, name: str, identity: str, duration_seconds: float
    ) -> None:
        self._api = api
        self._ns = namespace
        self._name = name
        self._identity = identity
        self._duration = duration_seconds
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0

    @property
    def identity(self) -> str:
        return self._identity

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
            except TemporaryError:  # 409: someone else created it first
                return False
            return True
        spec = lease.get("spec") or {}
        meta = lease.get("metadata") or {}
        holder = spec.get("holderIdentity") or ""
        key = (holder, str(spec.get("renewTime")), meta.get("resourceVersion"))
        if key != self._observed:
            self._observed, self._observed_at = key, now
        duration = _int(spec.get("leaseDurationSeconds")) or self._duration
        if holder and holder != self._identity and now - self._observed_at < duration:
            return False
        mine = holder == self._identity
        acquire = parse_time(spec.get("acquireTime")) if mine else now
        transitions = _int(spec.get("leaseTransitions")) + (0 if mine else 1)
        try:
            self._api.replace_lease(
                self._ns,
                self._name,
                self._spec(now, acquire if acquire is not None else now, transitions),
                str(meta.get("resourceVersion", "")),
            )
        except TemporaryError:  # 409: lost the race
            return False
        return True

    def release(self, now: float) -> None:
        """Give the lease up (holder cleared) so a standby takes over without waiting."""
        try:
            lease = self._api.get_lease(self._ns, self._name)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self._identity:
                return
            spec = {**(lease.get("spec") or {}), "holderIdentity": None, "leaseDurationSeconds": 1}
            self._api.replace_lease(
                self._ns, self._name, spec, str((lease.get("metadata") or {}).get("resourceVersion", ""))
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
) -> tuple[Controller, KubernetesApi]:
    """Wire a Controller to the Kubernetes API (in-cluster, kubeconfig, or `host`).

    `mode` overrides settings.mode (e.g. `--dry-run`); the Lease identity defaults to the
    hostname (the pod name), read here at runtime. Close the returned API when done.
    """
    api = KubernetesApi.connect(
        field_manager=settings.field_manager,
        request_timeout_seconds=settings.retry.request_timeout_seconds,
        host=host,
        kubeconfig=kubeconfig,
    )
    lease = None
    if settings.lease.enabled:
        ns = settings.lease.namespace or (settings.pools[0].namespace if settings.pools else "default")
        lease = KubernetesLease(
            api,
            namespace=ns,
            name=settings.lease.name,
            identity=identity or settings.lease.identity or socket.gethostname(),
            duration_seconds=settings.lease.duration_seconds,
        )
    has_epp = any(p.epp is not None for p in settings.pools)
    clock = SystemClock()
    ctl = Controller(
        config=settings.policy_config(),
        mode=Mode(mode or settings.mode),
        scale=KubernetesScaleTarget(api, settings),
        weights=EppWeightTarget(api, settings) if has_epp else None,
        source=source,
        clock=clock,
        sleeper=clock,
        audit=audit,
        lease=lease,
        retry=RetryPolicy(settings.retry.backoff_seconds),
        interval_seconds=settings.interval_seconds,
    )
    return ctl, api
