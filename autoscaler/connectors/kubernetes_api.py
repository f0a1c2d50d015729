"""The only module that imports `kubernetes`: a thin, typed facade over the official client.

It speaks plain dicts and our error classes: every `ApiException`/transport error is
classified as `TemporaryError` (409 conflict, 429, 5xx, timeouts, connection errors) or
`PermanentError` (`NotFoundError` for 404; 400/401/403/422...). It never retries (urllib3
retries are disabled): `autoscaler.loop` does, with the backoff from settings. Every write
carries `fieldManager` and, when asked, `dryRun=All`. The objects written back whole are read
raw (no client model in between), and Lease times go out only in patch bodies, which the client
sends as they are: its models re-format times with `datetime.isoformat()`, which leaves out a
zero fraction that a Lease's MicroTime must carry.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from autoscaler.ports import ConflictError, NotFoundError, PermanentError, TemporaryError

T = TypeVar("T")
MERGE_PATCH = "application/merge-patch+json"
DRY_RUN_ALL = "All"
TEMPORARY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})

APPS_KINDS = ("Deployment", "StatefulSet")
LWS_GROUP, LWS_VERSION, LWS_PLURAL = "leaderworkerset.x-k8s.io", "v1", "leaderworkersets"
KSERVE_GROUP, KSERVE_PLURAL = "serving.kserve.io", "llminferenceservices"
# the LLMInferenceService versions whose replica and scheduler-config fields we know, newest
# first: v1alpha2 is its storage version where it is served, v1alpha1 the first release's. (Not
# the group's discovery `preferredVersion`: that is v1beta1, InferenceService's.)
KSERVE_VERSIONS = ("v1alpha2", "v1alpha1")
LEASE_TIMES = frozenset({"acquireTime", "renewTime"})  # MicroTime: RFC 3339 with six fraction digits


@dataclass(frozen=True, slots=True)
class ResourceRef:
    """A namespaced object: apps kinds by kind, anything else by group/version/plural."""

    kind: str  # Deployment | StatefulSet | custom (any other string)
    namespace: str
    name: str
    group: str = ""
    version: str = ""
    plural: str = ""

    def __str__(self) -> str:
        what = self.kind if self.kind in APPS_KINDS else f"{self.plural}.{self.group}"
        return f"{what} {self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class ScaleView:
    replicas: int  # spec.replicas of the Scale
    status_replicas: int  # status.replicas of the Scale
    resource_version: str


def _one_line(exc: BaseException) -> str:
    """A YAML error (an invalid kubeconfig) as `not valid YAML (line N)`; else the first line."""
    if isinstance(exc, yaml.YAMLError):
        mark = getattr(exc, "problem_mark", None)
        return "not valid YAML" + (f" (line {mark.line + 1})" if mark is not None else "")
    return " ".join((str(exc).splitlines() or [type(exc).__name__])[0].split())


def classify(exc: BaseException, what: str) -> Exception:
    """Map a client/transport exception to TemporaryError / PermanentError / NotFoundError."""
    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        reason = f"{what}: HTTP {status} {exc.reason or ''}".strip()
        if status == 404:
            return NotFoundError(reason)
        if status == 409:
            return ConflictError(reason)
        if status in TEMPORARY_STATUSES or status >= 500:
            return TemporaryError(reason, retry_after_seconds=retry_after(exc.headers))
        return PermanentError(reason)
    if isinstance(exc, urllib3.exceptions.HTTPError | TimeoutError | ConnectionError):
        return TemporaryError(f"{what}: {type(exc).__name__}: {exc}")
    return PermanentError(f"{what}: {type(exc).__name__}: {exc}")


def retry_after(headers: Any) -> float | None:
    """A response's `Retry-After` in seconds (the delta-seconds form the API server sends);
    None when absent or not a number."""
    value = headers.get("Retry-After") if headers is not None and hasattr(headers, "get") else None
    try:
        seconds = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return seconds if seconds is not None and seconds >= 0 else None


class KubernetesApi:
    """Facade over AppsV1Api, CoreV1Api, CustomObjectsApi (and its discovery) and CoordinationV1Api."""

    def __init__(
        self, api_client: k8s.ApiClient, *, field_manager: str, request_timeout_seconds: float = 10.0
    ) -> None:
        self._client = api_client
        self._apps = k8s.AppsV1Api(api_client)
        self._core = k8s.CoreV1Api(api_client)
        self._custom = k8s.CustomObjectsApi(api_client)
        self._coord = k8s.CoordinationV1Api(api_client)
        self.field_manager = field_manager
        self.timeout = request_timeout_seconds

    @classmethod
    def connect(
        cls,
        *,
        field_manager: str,
        request_timeout_seconds: float = 10.0,
        host: str | None = None,
        token: str | None = None,
        kubeconfig: str | None = None,
    ) -> KubernetesApi:
        """`host` (e.g. an emulator or `kubectl proxy`), else in-cluster, else kubeconfig."""
        conf = k8s.Configuration()
        if host is not None:
            conf.host = host
            if token:
                conf.api_key = {"authorization": f"Bearer {token}"}
        else:
            try:
                k8s_config.load_incluster_config(client_configuration=conf)  # type: ignore[no-untyped-call]
            except k8s_config.ConfigException:
                try:
                    k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                        config_file=kubeconfig, client_configuration=conf
                    )
                except (k8s_config.ConfigException, OSError, yaml.YAMLError) as exc:
                    where = kubeconfig or "~/.kube/config (or $KUBECONFIG)"
                    raise PermanentError(
                        f"no Kubernetes API to talk to: not in a cluster, and the kubeconfig {where} "
                        f"could not be loaded ({_one_line(exc)}); give --kubeconfig FILE or --server URL"
                    ) from exc
        conf.retries = False  # our loop retries, with backoff as data
        return cls(
            k8s.ApiClient(conf), field_manager=field_manager, request_timeout_seconds=request_timeout_seconds
        )

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]

    # -- plumbing --------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (ApiException, urllib3.exceptions.HTTPError, TimeoutError, ConnectionError) as exc:
            raise classify(exc, what) from exc
        except ValueError as exc:  # a 2xx whose body the client cannot decode (not JSON, not the model)
            raise PermanentError(f"{what}: the response is not a valid object: {_one_line(exc)}") from exc

    def _raw(self, what: str, fn: Callable[..., Any]) -> dict[str, Any]:
        """A read as the server sent it (`_preload_content=False`): for objects written back
        whole (ConfigMaps, Leases), so no client model drops a field or re-formats a time."""
        resp = self._call(what, lambda: fn(_preload_content=False, _request_timeout=self.timeout))
        try:
            out = json.loads(resp.data)
        except (ValueError, AttributeError) as exc:
            raise PermanentError(f"{what}: the response is not JSON: {exc}") from exc
        return _object(out, what)

    def _plain(self, obj: Any, what: str) -> dict[str, Any]:
        if isinstance(obj, dict):
            return obj
        return _object(self._client.sanitize_for_serialization(obj), what)  # type: ignore[no-untyped-call]

    def _write_opts(self, dry_run: bool) -> dict[str, Any]:
        opts: dict[str, Any] = {"field_manager": self.field_manager, "_request_timeout": self.timeout}
        if dry_run:
            opts["dry_run"] = DRY_RUN_ALL
        return opts

    # -- discovery -------------------------------------------------------------------------
    def serves(self, group: str, version: str, plural: str) -> bool:
        """Whether `group/version` serves `plural`, from discovery (`GET /apis/<group>/<version>`,
        which the built-in system:discovery role lets every authenticated client read)."""
        try:
            listing = self._raw(
                f"discover {group}/{version}",
                lambda **kw: self._custom.get_api_resources(group, version, **kw),
            )
        except NotFoundError:
            return False
        resources = listing.get("resources") or []
        return any(isinstance(r, dict) and r.get("name") == plural for r in resources)

    # -- objects and /scale ----------------------------------------------------------------
    def get_object(self, ref: ResourceRef) -> dict[str, Any]:
        t = self.timeout
        if ref.kind == "Deployment":
            fn: Callable[[], Any] = lambda: self._apps.read_namespaced_deployment(  # noqa: E731
                ref.name, ref.namespace, _request_timeout=t
            )
        elif ref.kind == "StatefulSet":
            fn = lambda: self._apps.read_namespaced_stateful_set(ref.name, ref.namespace, _request_timeout=t)  # noqa: E731
        else:
            fn = lambda: self._custom.get_namespaced_custom_object(  # noqa: E731
                ref.group, ref.version, ref.namespace, ref.plural, ref.name, _request_timeout=t
            )
        return self._plain(self._call(f"get {ref}", fn), f"get {ref}")

    def get_scale(self, ref: ResourceRef) -> ScaleView:
        t = self.timeout
        if ref.kind == "Deployment":
            fn: Callable[[], Any] = lambda: self._apps.read_namespaced_deployment_scale(  # noqa: E731
                ref.name, ref.namespace, _request_timeout=t
            )
        elif ref.kind == "StatefulSet":
            fn = lambda: self._apps.read_namespaced_stateful_set_scale(  # noqa: E731
                ref.name, ref.namespace, _request_timeout=t
            )
        else:
            fn = lambda: self._custom.get_namespaced_custom_object_scale(  # noqa: E731
                ref.group, ref.version, ref.namespace, ref.plural, ref.name, _request_timeout=t
            )
        what = f"get {ref}/scale"
        scale = self._plain(self._call(what, fn), what)
        return ScaleView(
            replicas=_replicas(scale, "spec", what),
            status_replicas=_replicas(scale, "status", what),
            resource_version=str((scale.get("metadata") or {}).get("resourceVersion", "")),
        )

    def patch_scale(self, ref: ResourceRef, replicas: int, resource_version: str, *, dry_run: bool) -> None:
        """Merge-patch `spec.replicas` of the /scale subresource, guarded by resourceVersion."""
        body = {"metadata": {"resourceVersion": resource_version}, "spec": {"replicas": replicas}}
        opts = {**self._write_opts(dry_run), "_content_type": MERGE_PATCH}
        if ref.kind == "Deployment":
            fn: Callable[[], Any] = lambda: self._apps.patch_namespaced_deployment_scale(  # noqa: E731
                ref.name, ref.namespace, body, **opts
            )
        elif ref.kind == "StatefulSet":
            fn = lambda: self._apps.patch_namespaced_stateful_set_scale(  # noqa: E731
                ref.name, ref.namespace, body, **opts
            )
        else:
            fn = lambda: self._custom.patch_namespaced_custom_object_scale(  # noqa: E731
                ref.group, ref.version, ref.namespace, ref.plural, ref.name, body, **opts
            )
        self._call(f"patch {ref}/scale", fn)

    def merge_patch_custom(
        self, ref: ResourceRef, patch: Mapping[str, Any], *, dry_run: bool
    ) -> dict[str, Any]:
        """Merge patch of a custom object (include metadata.resourceVersion to guard it)."""
        opts = {**self._write_opts(dry_run), "_content_type": MERGE_PATCH}
        return self._plain(
            self._call(
                f"patch {ref}",
                lambda: self._custom.patch_namespaced_custom_object(
                    ref.group, ref.version, ref.namespace, ref.plural, ref.name, dict(patch), **opts
                ),
            ),
            f"patch {ref}",
        )

    def patch_deployment(self, namespace: str, name: str, patch: Mapping[str, Any], *, dry_run: bool) -> None:
        opts = {**self._write_opts(dry_run), "_content_type": MERGE_PATCH}
        self._call(
            f"patch Deployment {namespace}/{name}",
            lambda: self._apps.patch_namespaced_deployment(name, namespace, dict(patch), **opts),
        )

    # -- ConfigMaps ------------------------------------------------------------------------
    def get_config_map(self, namespace: str, name: str) -> tuple[dict[str, str], str]:
        """(data, resourceVersion)."""
        cm = self._raw(
            f"get ConfigMap {namespace}/{name}",
            lambda **kw: self._core.read_namespaced_config_map(name, namespace, **kw),
        )
        data, meta = cm.get("data") or {}, cm.get("metadata") or {}
        if not isinstance(data, dict) or not isinstance(meta, dict):
            raise PermanentError(f"get ConfigMap {namespace}/{name}: data or metadata is not an object")
        return dict(data), str(meta.get("resourceVersion", ""))

    def replace_config_map_data(
        self, namespace: str, name: str, data: Mapping[str, str], resource_version: str, *, dry_run: bool
    ) -> None:
        """PUT the ConfigMap with new data; 409 if it changed since `resource_version`."""
        cm = self._raw(
            f"get ConfigMap {namespace}/{name}",
            lambda **kw: self._core.read_namespaced_config_map(name, namespace, **kw),
        )
        cm["data"] = dict(data)
        cm.setdefault("metadata", {})["resourceVersion"] = resource_version
        self._call(
            f"replace ConfigMap {namespace}/{name}",
            lambda: self._core.replace_namespaced_config_map(
                name, namespace, _model(k8s.V1ConfigMap, cm), **self._write_opts(dry_run)
            ),
        )

    # -- Leases ----------------------------------------------------------------------------
    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._raw(
                f"get Lease {namespace}/{name}",
                lambda **kw: self._coord.read_namespaced_lease(name, namespace, **kw),
            )
        except NotFoundError:
            return None

    def create_lease(self, namespace: str, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        """POST the Lease (409 when it exists). Its MicroTime fields follow in a merge patch:
        the client validates a create body into its `V1Lease` model, whose times are sent as
        `isoformat()` (no fraction when it is zero, which the API server rejects), while a
        patch body goes out as it is."""
        times = {k: v for k, v in spec.items() if k in LEASE_TIMES}
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {k: v for k, v in spec.items() if k not in LEASE_TIMES},
        }
        created = self._plain(
            self._call(
                f"create Lease {namespace}/{name}",
                lambda: self._coord.create_namespaced_lease(
                    namespace, _model(k8s.V1Lease, body), **self._write_opts(False)
                ),
            ),
            f"create Lease {namespace}/{name}",
        )
        if not times:
            return created
        rv = str((created.get("metadata") or {}).get("resourceVersion", ""))
        return self.patch_lease(namespace, name, times, rv)

    def patch_lease(
        self, namespace: str, name: str, spec: Mapping[str, Any], resource_version: str
    ) -> dict[str, Any]:
        """Merge patch of the Lease's spec, guarded by `resource_version` (409 when the Lease
        has moved on); a None value clears its field."""
        body = {"metadata": {"resourceVersion": resource_version}, "spec": dict(spec)}
        opts = {**self._write_opts(False), "_content_type": MERGE_PATCH}
        return self._plain(
            self._call(
                f"patch Lease {namespace}/{name}",
                lambda: self._coord.patch_namespaced_lease(name, namespace, body, **opts),
            ),
            f"patch Lease {namespace}/{name}",
        )


def _object(out: Any, what: str) -> dict[str, Any]:
    """A response body that must be a JSON object (a `null` or a list is not an empty object)."""
    if not isinstance(out, dict):
        raise PermanentError(f"{what}: the response is not a JSON object but {type(out).__name__}")
    return out


def _replicas(scale: Mapping[str, Any], part: str, what: str) -> int:
    """`spec.replicas` / `status.replicas` of a Scale: absent (omitempty) is 0."""
    section = scale.get(part) or {}
    value = section.get("replicas") if isinstance(section, dict) else None
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PermanentError(f"{what}: {part}.replicas is not a non-negative integer: {value!r}")
    return value


M = TypeVar("M")


def _model(cls: type[M], data: Mapping[str, Any]) -> M:
    """Build a client model from a camelCase dict (as the API server would send it), for the
    methods whose body is typed as a model (no MicroTime in it: see `create_lease`)."""
    obj = cls.from_dict(dict(data))  # type: ignore[attr-defined]
    if obj is None:
        raise PermanentError(f"cannot build {cls.__name__} from {sorted(data)}")
    return obj  # type: ignore[no-any-return]


def dumps(obj: Any) -> str:
    """Stable JSON (for audit details)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))
