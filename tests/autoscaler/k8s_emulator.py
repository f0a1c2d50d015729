"""A small stateful Kubernetes API emulator on loopback (stdlib http.server), implementing
exactly the endpoints the autoscaler uses, with real HTTP semantics for the real client:

- GET/PATCH (merge) of Deployments, StatefulSets and custom objects, and of their `/scale`
  subresource (autoscaling/v1 Scale built from `spec.replicas` / `status.replicas`);
- GET/PUT ConfigMaps; GET/POST/PUT Leases;
- GET of a collection (a List, filtered by `labelSelector`: `k=v`, `k==v`, `k!=v`, `k`, `!k`),
  as the observer's pod discovery lists pods;
- optimistic concurrency: a PATCH carrying `metadata.resourceVersion` or a PUT whose
  resourceVersion is not current gets 409; every write bumps a global resourceVersion and,
  on spec changes, `metadata.generation`;
- `dryRun=All` validates and answers but does not persist;
- discovery of a group version (`GET /apis/<group>/<version>`: the APIResourceList of the
  plurals it holds objects of), and multi-version groups (`served`): their objects are stored
  once, at the first (storage) version, and read and written through any served version (as a
  CRD with a conversion webhook); an unserved version is 404;
- per-version schemas where versions differ (`VERSION_STATUS_FIELDS`): an object answered at a
  version shows only the status fields that version has (KServe's LLMInferenceService
  v1alpha1 has no `status.workloads`, `router` or `appliedConfigs`), as the conversion webhook
  and the CRD's schema pruning leave it; the stored object keeps them;
- injectable faults (status code or delay, optionally a `Retry-After`, optionally a raw body
  sent as it is, e.g. a 200 that is not JSON) matched by method and path substring;
- what the real server rejects: a PATCH whose Content-Type is not a merge patch (415), and a
  Lease whose `acquireTime`/`renewTime` is not a MicroTime with its six fraction digits (400:
  apimachinery parses them with the layout `2006-01-02T15:04:05.000000Z07:00`).

kmock 0.8's KubernetesEmulator merges dicts without resourceVersion preconditions or Scale
semantics, so the conflict/scale cases need this one.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

_MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(?:Z|[+-]\d\d:\d\d)$")
_PATCH_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json")
_GROUP_VERSION = re.compile(r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)/?$")
# The status fields of a resource at a version whose schema lacks some of its storage version's
# (from KServe's source, `pkg/apis/serving/v1alpha1/llm_inference_service_conversion.go`: a
# v1alpha1 status is `URL` + knative `duckv1.Status` (observedGeneration, conditions,
# annotations) + `duckv1.AddressStatus` (address, addresses); v1alpha2 adds `router`,
# `workloads` and `appliedConfigs`, which a v1alpha1 view drops).
VERSION_STATUS_FIELDS: dict[tuple[str, str, str], frozenset[str]] = {
    ("serving.kserve.io", "v1alpha1", "llminferenceservices"): frozenset(
        {"url", "observedGeneration", "conditions", "annotations", "address", "addresses"}
    ),
}
_PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"/namespaces/(?P<ns>[^/]+)/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>scale|status))?$"
)


@dataclass
class Fault:
    method: str  # GET | PATCH | PUT | POST | * (any)
    path_contains: str
    status: int = 500  # 0: no error (only the delay)
    delay: float = 0.0
    times: int = 1
    retry_after: int | None = None  # seconds, sent as the Retry-After header
    body: bytes | None = None  # sent as it is (with `status`, e.g. 200) instead of a Status object


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    status: int


@dataclass
class Emulator:
    objects: dict[tuple[str, str, str, str], dict[str, Any]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    rv: int = 100
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""
    # group -> served versions, the first the storage and preferred one (multi-version CRDs)
    served: dict[str, tuple[str, ...]] = field(default_factory=dict)

    # -- seeding / inspection --------------------------------------------------------------
    def put(self, api: str, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Store an object (api = 'apps/v1', 'v1', 'group/version'; a `served` group's at its
        storage version, whatever version it is given at)."""
        api = self._storage(api)
        with self.lock:
            o = copy.deepcopy(obj)
            meta = o.setdefault("metadata", {})
            self.rv += 1
            meta["resourceVersion"] = str(self.rv)
            meta.setdefault("generation", 1)
            self.objects[(api, plural, meta["namespace"], meta["name"])] = o
            return o

    def get(self, api: str, plural: str, ns: str, name: str) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self.objects[(self._storage(api), plural, ns, name)])

    def _storage(self, api: str) -> str:
        group = api.split("/", 1)[0] if "/" in api else ""
        versions = self.served.get(group)
        return f"{group}/{versions[0]}" if versions else api

    def set_status(self, api: str, plural: str, ns: str, name: str, status: dict[str, Any]) -> None:
        with self.lock:
            self.objects[(self._storage(api), plural, ns, name)].setdefault("status", {}).update(status)

    def writes(self, method: str | None = None, contains: str = "") -> list[Recorded]:
        return [
            r
            for r in self.requests
            if r.method in ({method} if method else {"PATCH", "PUT", "POST"}) and contains in r.path
        ]

    # -- request handling ------------------------------------------------------------------
    def handle(
        self, method: str, raw_path: str, body: Any, content_type: str = ""
    ) -> tuple[int, Any, dict[str, str]]:
        """(status, body, extra response headers) of one request."""
        parts = urlsplit(raw_path)
        path, query = parts.path, parse_qs(parts.query)
        for f in self.faults:
            if f.times > 0 and f.method in (method, "*") and f.path_contains in path:
                f.times -= 1
                if f.delay:
                    time.sleep(f.delay)
                if f.status:
                    answer: Any = _status(f.status, "injected") if f.body is None else RawBody(f.body)
                    code, out = self._record(method, path, query, body, f.status, answer)
                    return (
                        code,
                        out,
                        ({"Retry-After": str(f.retry_after)} if f.retry_after is not None else {}),
                    )
                break
        listing = _GROUP_VERSION.match(path)
        if method == "GET" and listing:
            code, out = self._resources(listing["group"], listing["version"])
            return (*self._record(method, path, query, body, code, out), {})
        m = _PATH.match(path)
        if not m:
            return (*self._record(method, path, query, body, 404, _status(404, "no such path")), {})
        if method == "PATCH" and content_type.split(";", maxsplit=1)[0].strip() not in _PATCH_TYPES:
            return (*self._record(method, path, query, body, 415, _status(415, "UnsupportedMediaType")), {})
        if m["plural"] == "leases" and method in ("POST", "PUT"):
            spec = body.get("spec") or {}
            bad = [k for k in ("acquireTime", "renewTime") if k in spec and spec[k] is not None]
            bad = [k for k in bad if not (isinstance(spec[k], str) and _MICRO_TIME.match(spec[k]))]
            if bad:
                return (*self._record(method, path, query, body, 400, _status(400, f"BadRequest {bad}")), {})
        api = m["core"] or f"{m['group']}/{m['version']}"
        versions = self.served.get(m["group"] or "")
        if versions:  # stored at the storage version, answered at the requested one
            if m["version"] not in versions:
                return (*self._record(method, path, query, body, 404, _status(404, "NotFound")), {})
            api = f"{m['group']}/{versions[0]}"
        view = (m["group"] or "", m["version"] or m["core"] or "", m["plural"])
        if method == "GET" and not m["name"]:
            selector = (query.get("labelSelector") or [""])[0]
            with self.lock:
                out = self._list(api, m["plural"], m["ns"], selector)
            out["items"] = [_as_version(item, view) for item in out["items"]]
            return (*self._record(method, path, query, body, 200, out), {})
        key = (api, m["plural"], m["ns"], m["name"] or "")
        dry = query.get("dryRun") == ["All"]
        with self.lock:
            code, out = self._dispatch(method, key, m["sub"], body, dry)
        if isinstance(out, dict) and out.get("kind") not in ("Status", "Scale"):
            if versions:
                out = {**out, "apiVersion": f"{m['group']}/{m['version']}"}
            out = _as_version(out, view)
        return (*self._record(method, path, query, body, code, out), {})

    def _resources(self, group: str, version: str) -> tuple[int, Any]:
        """APIResourceList of a group version: the plurals held there (404: none, or a version
        a `served` group does not serve)."""
        versions = self.served.get(group)
        if versions is not None and version not in versions:
            return 404, _status(404, "NotFound")
        api = self._storage(f"{group}/{version}")
        with self.lock:
            plurals = sorted({plural for a, plural, *_ in self.objects if a == api})
        if not plurals:
            return 404, _status(404, "NotFound")
        resources = [{"name": p, "namespaced": True, "kind": "", "verbs": ["get", "patch"]} for p in plurals]
        return 200, {"kind": "APIResourceList", "groupVersion": f"{group}/{version}", "resources": resources}

    def _list(self, api: str, plural: str, ns: str, selector: str) -> dict[str, Any]:
        """A collection GET: the objects of `plural` in `ns` whose labels match `selector`."""
        items = [
            copy.deepcopy(o)
            for (a, p, n, _), o in sorted(self.objects.items())
            if (a, p, n) == (api, plural, ns)
            and _selects(selector, (o.get("metadata") or {}).get("labels") or {})
        ]
        return {
            "kind": "List",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(self.rv)},
            "items": items,
        }

    def _record(self, method: str, path: str, query: Any, body: Any, code: int, out: Any) -> tuple[int, Any]:
        self.requests.append(Recorded(method, path, query, body, code))
        return code, out

    def _dispatch(
        self, method: str, key: tuple[str, str, str, str], sub: str | None, body: Any, dry: bool
    ) -> tuple[int, Any]:
        api, plural, ns, name = key
        if method == "POST":
            name = (body.get("metadata") or {}).get("name", "")
            key = (api, plural, ns, name)
            if key in self.objects:
                return 409, _status(409, "AlreadyExists")
            obj = copy.deepcopy(body)
            obj["metadata"]["namespace"] = ns
            if not dry:
                self.rv += 1
                obj["metadata"]["resourceVersion"] = str(self.rv)
                self.objects[key] = obj
            return 201, obj
        obj = self.objects.get(key)
        if obj is None:
            return 404, _status(404, "NotFound")
        if method == "GET":
            return 200, (_scale_of(obj) if sub == "scale" else copy.deepcopy(obj))
        current_rv = obj["metadata"]["resourceVersion"]
        want_rv = (body.get("metadata") or {}).get("resourceVersion")
        if method == "PUT":
            if want_rv != current_rv:
                return 409, _status(409, "Conflict")
            new = copy.deepcopy(body)
        elif method == "PATCH":
            if want_rv is not None and want_rv != current_rv:
                return 409, _status(409, "Conflict")
            patch = copy.deepcopy(body)
            if sub == "scale":
                patch = {"spec": {"replicas": (patch.get("spec") or {}).get("replicas")}}
            new = _merge(copy.deepcopy(obj), patch)
        else:
            return 405, _status(405, "MethodNotAllowed")
        new.setdefault("metadata", {})
        for k in ("name", "namespace", "generation", "creationTimestamp"):
            if k in obj["metadata"]:
                new["metadata"].setdefault(k, obj["metadata"][k])
        if "status" in obj and method == "PUT":
            new.setdefault("status", obj["status"])
        if new.get("spec") != obj.get("spec"):
            new["metadata"]["generation"] = int(obj["metadata"].get("generation", 1)) + 1
        if dry:
            new["metadata"]["resourceVersion"] = current_rv
            return 200, (_scale_of(new) if sub == "scale" else new)
        self.rv += 1
        new["metadata"]["resourceVersion"] = str(self.rv)
        self.objects[key] = new
        return 200, (_scale_of(new) if sub == "scale" else copy.deepcopy(new))


def _as_version(obj: dict[str, Any], view: tuple[str, str, str]) -> dict[str, Any]:
    """`obj` as `view` = (group, version, plural) shows it: without the status fields that
    version of the resource does not have (`VERSION_STATUS_FIELDS`); a copy, the stored object
    is untouched."""
    fields = VERSION_STATUS_FIELDS.get(view)
    status = obj.get("status")
    if fields is None or not isinstance(status, dict):
        return obj
    return {**obj, "status": {k: v for k, v in status.items() if k in fields}}


def _selects(selector: str, labels: dict[str, str]) -> bool:
    """Whether `labels` match an equality-based label selector (comma = and)."""
    for term in (t.strip() for t in selector.split(",") if t.strip()):
        if "!=" in term:
            k, v = (s.strip() for s in term.split("!=", 1))
            ok = labels.get(k) != v
        elif "=" in term:
            k, v = (s.strip() for s in term.replace("==", "=").split("=", 1))
            ok = labels.get(k) == v
        elif term.startswith("!"):
            ok = term[1:].strip() not in labels
        else:
            ok = term in labels
        if not ok:
            return False
    return True


def _merge(base: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    if not isinstance(base, dict):
        base = {}
    for k, v in patch.items():
        if v is None:
            base.pop(k, None)
        else:
            base[k] = _merge(base.get(k), v)
    return base


def _scale_of(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    return {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "resourceVersion": meta["resourceVersion"],
        },
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
        "status": {"replicas": (obj.get("status") or {}).get("replicas", 0), "selector": "app=x"},
    }


@dataclass(frozen=True)
class RawBody:
    """A response body sent byte for byte (an injected malformed answer)."""

    data: bytes


def _status(code: int, reason: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": reason, "code": code}


class _Handler(BaseHTTPRequestHandler):
    emulator: Emulator

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else {}
        code, out, headers = self.emulator.handle(
            self.command, self.path, body, self.headers.get("Content-Type") or ""
        )
        data = out.data if isinstance(out, RawBody) else json.dumps(out).encode()
        try:
            self.send_response(code)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
            return

    do_GET = do_PATCH = do_PUT = do_POST = _serve


class RunningEmulator:
    def __init__(self) -> None:
        self.emulator = Emulator()
        handler = type("H", (_Handler,), {"emulator": self.emulator})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.emulator.url = self.url
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
