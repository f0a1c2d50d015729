"""Reading and editing an EndpointPickerConfig YAML text: scorer weights and the P/D
decider's `nonCachedTokens` threshold. Pure.

The edit is surgical: PyYAML's composer gives the exact character span of each `weight`
scalar under `schedulingProfiles[*].plugins[*]` whose `pluginRef` is the scorer (and of
`parameters.nonCachedTokens` of the top-level `prefix-based-pd-decider` plugin); only those
spans are rewritten, so comments, ordering, quoting and everything else stay byte-for-byte.
The result is re-parsed and compared with the intended document before it is returned.
A config held as a mapping (KServe's inline scheduler config) goes through the same code as
JSON text (`edit_mapping`).

A `pluginRef` names a plugin of the top-level `plugins:` list (its `name`, which defaults to its
`type`): scorers are keyed by that plugin's type, so `{type: prefix-cache-scorer, name: prefix}`
referenced as `pluginRef: prefix` is the `prefix-cache-scorer`.

Refused as EppConfigError rather than guessed at: a key twice in one mapping on the path read
(the EPP's Go decoder refuses it, PyYAML would keep the last), a merge key `<<` there (the
value would come from elsewhere), an edited scalar carrying an anchor (`&w 2`: rewriting it
would drop the anchor its aliases need), recursive aliases, nesting deeper than Python's
recursion limit, and a document larger than `MAX_EXPANDED_NODES` nodes once its aliases are
expanded (a "billion laughs" config would otherwise take the verification hours).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from observer import conventions as c

# the most nodes a config may have with its aliases expanded (each alias counted as a copy of
# what it names); an EndpointPickerConfig has a few hundred
MAX_EXPANDED_NODES = 1_000_000
_MERGE_TAG = "tag:yaml.org,2002:merge"
_ANCHORED = re.compile(r"(?:![^\s]*\s+)?&")  # a scalar's text starting with an anchor (after a tag)


class EppConfigError(ValueError):
    """The text is not an EndpointPickerConfig we can edit safely."""


def _get(node: Node | None, key: str) -> Node | None:
    if not isinstance(node, MappingNode):
        return None
    found: Node | None = None
    for k, v in node.value:
        if k.tag == _MERGE_TAG:
            raise EppConfigError(
                f"merge key << at line {k.start_mark.line + 1} is not supported: write the keys out"
            )
        if isinstance(k, ScalarNode) and k.value == key and isinstance(v, Node):
            if found is not None:
                raise EppConfigError(f"duplicate key {key!r} at line {k.start_mark.line + 1}")
            found = v
    return found


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_size(root: Node) -> None:
    """Refuse recursive aliases and more than MAX_EXPANDED_NODES nodes with aliases expanded
    (linear in the composed graph: each node's expanded size is computed once)."""
    sizes: dict[int, int] = {}
    path: set[int] = set()  # the nodes being expanded: the current node's ancestors
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            path.discard(id(node))
            size = sizes[id(node)] = 1 + sum(sizes[id(n)] for n in _children(node))
            if size > MAX_EXPANDED_NODES:
                raise EppConfigError(f"more than {MAX_EXPANDED_NODES} nodes once its aliases are expanded")
            continue
        if id(node) in sizes:
            continue
        if id(node) in path:
            raise EppConfigError(f"recursive alias at line {node.start_mark.line + 1}")
        path.add(id(node))
        stack.append((node, True))
        stack.extend((n, False) for n in _children(node) if id(n) not in sizes)


def _load(text: str) -> Any:
    """The document as PyYAML loads it (after `_compose` accepted the text)."""
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as exc:
        raise EppConfigError(f"not valid YAML: {exc}") from exc


def _span(text: str, node: ScalarNode, what: str) -> tuple[int, int]:
    """The character span of a scalar to rewrite; refused when it carries an anchor."""
    start, end = node.start_mark.index, node.end_mark.index
    if _ANCHORED.match(text, start, end):
        raise EppConfigError(
            f"{what} at line {node.start_mark.line + 1} carries a YAML anchor (&): write the number there"
        )
    return start, end


def _plugin_types(root: Node) -> dict[str, str]:
    """Plugin name -> type, from the top-level `plugins:` list (a name defaults to the type)."""
    plugins = _get(root, "plugins")
    out: dict[str, str] = {}
    for entry in plugins.value if isinstance(plugins, SequenceNode) else ():
        kind, name = _get(entry, "type"), _get(entry, "name")
        if isinstance(kind, ScalarNode):
            out[str(name.value if isinstance(name, ScalarNode) else kind.value)] = str(kind.value)
    return out


def _weight_nodes(root: Node, profile: str | None) -> Iterator[tuple[str, str, ScalarNode | None]]:
    """(profile name, scorer type, weight node or None) for every plugin entry with a pluginRef."""
    types = _plugin_types(root)
    profiles = _get(root, "schedulingProfiles")
    if not isinstance(profiles, SequenceNode):
        raise EppConfigError("no schedulingProfiles list")
    if profile is not None:
        names = [n.value for p in profiles.value if isinstance(n := _get(p, "name"), ScalarNode)]
        if profile not in names:
            raise EppConfigError(
                f"no scheduling profile {profile!r} (profiles: {', '.join(names) or 'none'})"
            )
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
            scorer = types.get(str(ref.value), str(ref.value))
            yield name, scorer, weight if isinstance(weight, ScalarNode) else None


def _compose(text: str) -> Node:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise EppConfigError(f"not valid YAML: {exc}") from exc
    except RecursionError:
        raise EppConfigError("nested too deeply") from None
    if root is None:
        raise EppConfigError("empty config")
    _check_size(root)
    return root


def read_weights(text: str, profile: str | None = None) -> dict[str, float]:
    """Scorer -> weight, in `profile` or else in every profile. Entries with a `weight`, and
    `*-scorer` entries without one (the EPP default weight is 1); filters and pickers are
    left out. A scorer whose weight differs between the profiles read is an error (a P/D
    config's prefill and decode profiles often differ: name the one to tune)."""
    out: dict[str, float] = {}
    where: dict[str, str] = {}
    for name, scorer, node in _weight_nodes(_compose(text), profile):
        if node is None and not scorer.endswith("-scorer"):
            continue
        try:
            value = float(node.value) if node is not None else 1.0
        except ValueError as exc:
            raise EppConfigError(f"weight of {scorer} is not a number: {node.value!r}") from exc  # type: ignore[union-attr]
        if not (math.isfinite(value) and value >= 0):
            raise EppConfigError(f"weight of {scorer} is not a finite number >= 0: {value!r}")
        if scorer in out and out[scorer] != value:
            raise EppConfigError(
                f"{scorer} has different weights in profiles {where[scorer]!r} ({out[scorer]:g}) and "
                f"{name!r} ({value:g}): set the pool's epp.profile to the profile to tune"
            )
        out.setdefault(scorer, value)
        where.setdefault(scorer, name)
    return out


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _expected(doc: Any, weights: Mapping[str, float], profile: str | None) -> Any:
    types = {
        str(p.get("name") or p["type"]): str(p["type"])
        for p in doc.get("plugins") or []
        if isinstance(p, dict) and p.get("type") is not None
    }
    for prof in doc.get("schedulingProfiles") or []:
        if profile is not None and prof.get("name") != profile:
            continue
        for entry in prof.get("plugins") or []:
            if not isinstance(entry, dict) or "pluginRef" not in entry:
                continue
            scorer = types.get(str(entry["pluginRef"]), str(entry["pluginRef"]))
            if scorer in weights:
                w = weights[scorer]
                entry["weight"] = int(w) if float(w).is_integer() else float(w)
    return doc


def edit_weights(text: str, weights: Mapping[str, float], profile: str | None = None) -> str:
    """Return `text` with the given scorers' weights replaced, nothing else changed (in
    `profile`, or in every profile when they agree: see `read_weights`)."""
    bad = {k: v for k, v in weights.items() if not (math.isfinite(v) and v >= 0)}
    if bad:
        raise EppConfigError(f"weights must be finite numbers >= 0: {bad}")
    read_weights(text, profile)  # the same checks as the read the decision came from
    spans: list[tuple[int, int, str]] = []
    seen: set[str] = set()
    for _, scorer, node in _weight_nodes(_compose(text), profile):
        if scorer not in weights:
            continue
        if node is None:
            raise EppConfigError(f"{scorer} has no explicit weight to edit")
        seen.add(scorer)
        spans.append((*_span(text, node, f"weight of {scorer}"), _fmt(weights[scorer])))
    missing = sorted(set(weights) - seen)
    if missing:
        raise EppConfigError(f"scorers not in the config: {', '.join(missing)}")
    out = text
    for start, end, value in sorted(spans, reverse=True):
        out = out[:start] + value + out[end:]
    if _load(out) != _expected(_load(text), weights, profile):
        raise EppConfigError("edit did not round-trip")  # pragma: no cover - defensive
    return out


# ---------------------------------------------------------------------------------------------
# The P/D decider's threshold: `nonCachedTokens` of the `prefix-based-pd-decider` plugin
# ---------------------------------------------------------------------------------------------
def _decider(root: Node, doc: Any) -> tuple[ScalarNode | None, Any] | None:
    """(the `nonCachedTokens` scalar node or None, its loaded value or None) of the one decider
    in the top-level `plugins:` list; None when there is no decider."""
    plugins = _get(root, "plugins")
    if plugins is None:
        return None
    if not isinstance(plugins, SequenceNode):
        raise EppConfigError("plugins is not a list")
    found: list[tuple[ScalarNode | None, Any]] = []
    loaded = doc.get("plugins") if isinstance(doc, dict) else None
    for i, entry in enumerate(plugins.value):
        kind = _get(entry, "type")
        if not (isinstance(kind, ScalarNode) and kind.value == c.PD_DECIDER_PLUGIN):
            continue
        params = _get(entry, "parameters")
        node = _get(params, c.PD_DECIDER_THRESHOLD_PARAM) if params is not None else None
        if node is not None and not isinstance(node, ScalarNode):
            raise EppConfigError(f"{c.PD_DECIDER_PLUGIN}: {c.PD_DECIDER_THRESHOLD_PARAM} is not a scalar")
        value = None
        if node is not None and isinstance(loaded, list) and isinstance(loaded[i], dict):
            value = (loaded[i].get("parameters") or {}).get(c.PD_DECIDER_THRESHOLD_PARAM)
        found.append((node, value))
    if len(found) > 1:
        raise EppConfigError(f"{len(found)} {c.PD_DECIDER_PLUGIN} plugins; expected at most one")
    return found[0] if found else None


def _check_tokens(value: Any) -> int:
    # The EPP decodes the parameter into a Go int: a quoted or fractional value fails there too.
    if isinstance(value, bool) or not isinstance(value, int):
        raise EppConfigError(f"{c.PD_DECIDER_THRESHOLD_PARAM} is not an integer: {value!r}")
    if value < 0:
        raise EppConfigError(f"{c.PD_DECIDER_THRESHOLD_PARAM} is negative: {value}")
    return value


def read_decider_threshold(text: str) -> int | None:
    """`nonCachedTokens` of the `prefix-based-pd-decider` plugin; None when the config has no
    such plugin. A decider without the parameter reads as 0, the EPP's default (which turns
    disaggregation off)."""
    root = _compose(text)
    found = _decider(root, _load(text))
    if found is None:
        return None
    node, value = found
    return 0 if node is None else _check_tokens(value)


def edit_decider_threshold(text: str, tokens: int) -> str:
    """Return `text` with the decider's `nonCachedTokens` scalar replaced, nothing else changed.

    Refused (EppConfigError): no decider; a decider without an explicit
    `parameters.nonCachedTokens` (add it to the config once: it is not inserted, so the
    author's layout is never guessed at); `tokens` < 1 (0 turns P/D disaggregation off in
    llm-d, it is not a threshold).
    """
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise EppConfigError(
            f"{c.PD_DECIDER_THRESHOLD_PARAM} must be an integer >= 1 (0 turns disaggregation off): {tokens!r}"
        )
    root = _compose(text)
    doc = _load(text)
    found = _decider(root, doc)
    if found is None:
        raise EppConfigError(f"no {c.PD_DECIDER_PLUGIN} plugin in the config")
    node, value = found
    if node is None:
        raise EppConfigError(
            f"{c.PD_DECIDER_PLUGIN} has no explicit parameters.{c.PD_DECIDER_THRESHOLD_PARAM} to edit "
            f"(add `{c.PD_DECIDER_THRESHOLD_PARAM}: N` under its parameters once)"
        )
    _check_tokens(value)
    start, end = _span(text, node, c.PD_DECIDER_THRESHOLD_PARAM)
    out = text[:start] + str(tokens) + text[end:]
    for entry in doc["plugins"]:
        if isinstance(entry, dict) and entry.get("type") == c.PD_DECIDER_PLUGIN:
            entry["parameters"][c.PD_DECIDER_THRESHOLD_PARAM] = tokens
    if _load(out) != doc:
        raise EppConfigError("edit did not round-trip")  # pragma: no cover - defensive
    return out


# ---------------------------------------------------------------------------------------------
# The same edits on a config held as a mapping (KServe LLMInferenceService
# `spec.router.scheduler.config.inline`, a runtime.RawExtension: a JSON object in the API)
# ---------------------------------------------------------------------------------------------
def mapping_text(doc: Mapping[str, Any]) -> str:
    """The mapping as JSON text (JSON is YAML): the text functions above read and edit it."""
    return json.dumps(doc, indent=2)


def edit_mapping(doc: Mapping[str, Any], edit: Callable[[str], str]) -> dict[str, Any]:
    """Apply a text edit (`edit_weights`, `edit_decider_threshold`, bound to their arguments)
    to a config held as a mapping; returns the new mapping. The edit rewrites number scalars
    with number literals, so the result is JSON again."""
    if not isinstance(doc, Mapping):
        raise EppConfigError(f"inline config is a {type(doc).__name__}, not a mapping")
    out = edit(mapping_text(doc))
    try:
        new = json.loads(out)
    except ValueError as exc:  # pragma: no cover - defensive
        raise EppConfigError(f"edit did not give JSON back: {exc}") from exc
    if not isinstance(new, dict):  # pragma: no cover - defensive
        raise EppConfigError("edit did not give a mapping back")
    return new
