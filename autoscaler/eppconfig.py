"""Reading and editing scorer weights inside an EndpointPickerConfig YAML text. Pure.

The edit is surgical: PyYAML's composer gives the exact character span of each `weight`
scalar under `schedulingProfiles[*].plugins[*]` whose `pluginRef` is the scorer; only those
spans are rewritten, so comments, ordering, quoting and everything else stay byte-for-byte.
The result is re-parsed and compared with the intended document before it is returned.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode


class EppConfigError(ValueError):
    """The text is not an EndpointPickerConfig we can edit safely."""


def _get(node: Node, key: str) -> Node | None:
    if not isinstance(node, MappingNode):
        return None
    for k, v in node.value:
        if isinstance(k, ScalarNode) and k.value == key and isinstance(v, Node):
            return v
    return None


def _weight_nodes(root: Node, profile: str | None) -> Iterator[tuple[str, str, ScalarNode | None]]:
    """(profile name, scorer, weight node or None) for every plugin entry with a pluginRef."""
    profiles = _get(root, "schedulingProfiles")
    if not isinstance(profiles, SequenceNode):
        raise EppConfigError("no schedulingProfiles list")
    for prof in profiles.value:
        name_node = _get(prof, "name")
        name = name_node.value if isinstance(name_node, ScalarNode) else ""
        if profile is not None and name != profile:
            continue
        plugins = _get(prof, "plugins")
        if not isinstance(plugins, SequenceNode):
            continue
        for entry in plugins.value:
            ref = _get(entry, "pluginRef")
            if not isinstance(ref, ScalarNode):
                continue
            weight = _get(entry, "weight")
            yield name, str(ref.value), weight if isinstance(weight, ScalarNode) else None


def _compose(text: str) -> Node:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise EppConfigError(f"not valid YAML: {exc}") from exc
    if root is None:
        raise EppConfigError("empty config")
    return root


def read_weights(text: str, profile: str | None = None) -> dict[str, float]:
    """Scorer -> weight (first occurrence). Entries with a `weight`, and `*-scorer` entries
    without one (the EPP default weight is 1); filters and pickers are left out."""
    out: dict[str, float] = {}
    for _, scorer, node in _weight_nodes(_compose(text), profile):
        if scorer in out or (node is None and not scorer.endswith("-scorer")):
            continue
        try:
            out[scorer] = float(node.value) if node is not None else 1.0
        except ValueError as exc:
            raise EppConfigError(f"weight of {scorer} is not a number: {node.value!r}") from exc  # type: ignore[union-attr]
    return out


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _expected(doc: Any, weights: Mapping[str, float], profile: str | None) -> Any:
    for prof in doc.get("schedulingProfiles") or []:
        if profile is not None and prof.get("name") != profile:
            continue
        for entry in prof.get("plugins") or []:
            if isinstance(entry, dict) and entry.get("pluginRef") in weights:
                w = weights[entry["pluginRef"]]
                entry["weight"] = int(w) if float(w).is_integer() else float(w)
    return doc


def edit_weights(text: str, weights: Mapping[str, float], profile: str | None = None) -> str:
    """Return `text` with the given scorers' weights replaced, nothing else changed."""
    spans: list[tuple[int, int, str]] = []
    seen: set[str] = set()
    for _, scorer, node in _weight_nodes(_compose(text), profile):
        if scorer not in weights:
            continue
        if node is None:
            raise EppConfigError(f"{scorer} has no explicit weight to edit")
        seen.add(scorer)
        spans.append((node.start_mark.index, node.end_mark.index, _fmt(weights[scorer])))
    missing = sorted(set(weights) - seen)
    if missing:
        raise EppConfigError(f"scorers not in the config: {', '.join(missing)}")
    out = text
    for start, end, value in sorted(spans, reverse=True):
        out = out[:start] + value + out[end:]
    if yaml.safe_load(out) != _expected(yaml.safe_load(text), weights, profile):
        raise EppConfigError("edit did not round-trip")  # pragma: no cover - defensive
    return out
