"""YAML text for the generated artifacts (alert rules, Alertmanager routing, dashboard
provisioning and ConfigMaps): deterministic (insertion order, unicode kept, no line folding),
multi-line text (PromQL, JSON) as literal blocks, and every string read back exactly as written.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

# Line breaks to YAML besides "\n". PyYAML wrote a NEL raw into a literal block or a
# single-quoted scalar, and a YAML reader took it for a "\n" (a dashboard JSON in a ConfigMap no
# longer parsed): text holding one is double-quoted, with escapes.
YAML_BREAKS = "\r\x85\u2028\u2029"


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    if any(ch in data for ch in YAML_BREAKS):
        style: str | None = '"'
    else:
        style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str)


def dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=10_000)


def dump_all(docs: Iterable[Any]) -> str:
    return yaml.dump_all(list(docs), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=10_000)
