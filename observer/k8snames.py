"""Kubernetes names as the API server validates them, for settings that name Kubernetes objects.

A name the API server would refuse (`Default`, `my_ns`, `a/b`) failed only when first used: a 404
or 422 in the autoscaler's loop, a manifest `kubectl apply` refused. These types refuse it when
the settings load, with one line naming the field.

- namespace: an RFC 1123 label (lowercase letters, digits, `-`; at most 63);
- object name (Deployment, ConfigMap, Lease, custom resources): an RFC 1123 subdomain (labels
  joined with `.`; at most 253);
- ConfigMap key: letters, digits, `-`, `_`, `.` (at most 253);
- label key: an optional subdomain prefix and `/`, then a name of at most 63 (letters, digits,
  `-`, `_`, `.`, starting and ending with a letter or digit); label value: empty, or such a name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated

from pydantic import AfterValidator

_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_LABEL = re.compile(_LABEL)
_DNS_SUBDOMAIN = re.compile(rf"{_LABEL}(\.{_LABEL})*")
_QUALIFIED = re.compile("([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_CONFIG_KEY = re.compile(r"[-._a-zA-Z0-9]+")


def namespace(v: str) -> str:
    if len(v) > 63 or not _DNS_LABEL.fullmatch(v):
        raise ValueError(f"{v!r} is not a Kubernetes namespace (lowercase letters, digits, '-'; at most 63)")
    return v


def object_name(v: str) -> str:
    if len(v) > 253 or not _DNS_SUBDOMAIN.fullmatch(v):
        raise ValueError(
            f"{v!r} is not a Kubernetes object name (lowercase letters, digits, '-', '.'; at most 253)"
        )
    return v


def config_key(v: str) -> str:
    if len(v) > 253 or not _CONFIG_KEY.fullmatch(v):
        raise ValueError(f"{v!r} is not a ConfigMap key (letters, digits, '-', '_', '.'; at most 253)")
    return v


def _label_key(k: str) -> None:
    prefix, _, name = k.rpartition("/")
    if (prefix or "/" in k) and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        raise ValueError(f"label key {k!r}: its prefix is not a DNS subdomain")
    if len(name) > 63 or not _QUALIFIED.fullmatch(name):
        raise ValueError(f"label key {k!r} is not a Kubernetes label name")


def labels(v: Mapping[str, str]) -> Mapping[str, str]:
    for k, value in v.items():
        _label_key(k)
        if value and (len(value) > 63 or not _QUALIFIED.fullmatch(value)):
            raise ValueError(f"label {k}: {value!r} is not a Kubernetes label value (at most 63)")
    return v


Namespace = Annotated[str, AfterValidator(namespace)]
ObjectName = Annotated[str, AfterValidator(object_name)]
ConfigKey = Annotated[str, AfterValidator(config_key)]
Labels = Annotated[dict[str, str], AfterValidator(labels)]
