"""PromQL query building. Every label value from outside goes through `quote` (one function).

Only exact-equality matchers are built from outside values; there is no regex matcher on them,
so a value cannot widen a selector.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

_NAMED = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
LABEL_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"  # also what config validation checks label names with
_LABEL_NAME = re.compile(LABEL_NAME_PATTERN)
_METRIC_NAME = re.compile(r"^[A-Za-z_:][A-Za-z0-9_:]*$")
# Prometheus' duration grammar (model.ParseDuration): units largest first, each at most once, so
# `1h30m` is one and `5m5m` or `1s1m` is none (Prometheus and Alertmanager refuse those). Whole
# seconds only (no `ms`): what rules, ranges and windows are written in.
DURATION_UNITS = (("y", 365 * 86400), ("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
_DURATION = re.compile("".join(rf"(?:([0-9]+){u})?" for u, _ in DURATION_UNITS))


def quote(value: str) -> str:
    """The PromQL double-quoted string literal holding exactly `value`.

    Escapes backslash, double quote, newline/CR/tab and every other control character
    (C0, DEL and C1 as `\\uXXXX`), so the literal cannot end early or span lines.
    """
    out = ['"']
    for ch in value:
        named = _NAMED.get(ch)
        if named is not None:
            out.append(named)
        elif ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F or ch in "\u2028\u2029":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def label_name(name: str) -> str:
    """A label name, checked (label names are ours, never from outside, but check anyway)."""
    if not _LABEL_NAME.fullmatch(name):
        raise ValueError(f"invalid label name {name!r}")
    return name


def metric_name(name: str) -> str:
    if not _METRIC_NAME.fullmatch(name):
        raise ValueError(f"invalid metric name {name!r}")
    return name


def selector(metric: str, matchers: Mapping[str, str] | None = None) -> str:
    """`metric{l1="v1",...}` with every value quoted; `metric` alone when no matchers."""
    name = metric_name(metric)
    if not matchers:
        return name
    inner = ",".join(f"{label_name(k)}={quote(v)}" for k, v in sorted(matchers.items()))
    return f"{name}{{{inner}}}"


def by(labels: Iterable[str]) -> str:
    """`by (a, b)` clause."""
    return "by (" + ", ".join(label_name(x) for x in labels) + ")"


def names_present_query(names: Iterable[str], matchers: Mapping[str, str] | None = None) -> str:
    """`count by (__name__) ({__name__=~"a|b",k="v"})`: which of our candidate names exist.

    The names are ours (conventions), checked as metric names and regex-escaped; matcher values
    are quoted like every other value.
    """
    alts = "|".join(re.escape(metric_name(n)) for n in names)
    extra = "".join(f",{label_name(k)}={quote(v)}" for k, v in sorted((matchers or {}).items()))
    return f"count by (__name__) ({{__name__=~{quote(alts)}{extra}}})"


def duration_seconds(text: str) -> int:
    """'5m' -> 300, '1h30m' -> 5400: a Prometheus duration in whole seconds (y w d h m s);
    ValueError for anything else (surrounding whitespace included)."""
    m = _DURATION.fullmatch(text)
    if not text or m is None:
        raise ValueError(f"{text!r} is not a duration (units y w d h m s, largest first, e.g. 1h30m)")
    return sum(int(n) * size for n, (_, size) in zip(m.groups(), DURATION_UNITS, strict=True) if n)
