"""Untrusted strings from spans, made safe for records, the store and labels. Pure.

Every string a resolved span carries into a record — tenant, model, pod, request id, on
`EngineSpan`s and `TraceHints` — goes through `clean_value` (docs/ingest.md, "Untrusted
strings"): NUL and lone surrogates become `conventions.VALUE_REPLACEMENT` (PostgreSQL text cannot
hold NUL; a lone surrogate, which OTLP/JSON's `\\ud800` escape gives, cannot be encoded as UTF-8
for SQLite or the Prometheus exposition), and a value longer than `conventions.MAX_VALUE_CHARS`
is cut to that length, ending with `VALUE_TRUNCATION_MARK` and a hash of the whole original
value, so two distinct long values stay distinct (up to a 64-bit hash collision).

`sanitize` applies it to one resolved batch; both decode paths (the Python resolver and the
native fast path) call it on their result, so the rule lives here only. Clean values (the normal
case) are returned as they are, and a clean batch comes back unchanged and uncopied. The metric
sources apply the same `clean_value` to the strings they read (observer/sources/untrusted.py).

Client text quoted back in an answer (reject reasons, partial_success.error_message, error
statuses) is message text, not a value: `excerpt` quotes at most `conventions.REASON_VALUE_CHARS`
characters of a client value, and `clip` cuts a whole message with an ellipsis (no hash: a
message is read, never matched) and replaces NUL and lone surrogates as `clean_value` does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import reprlib
from collections.abc import Mapping, Sequence

from observer import conventions as c
from observer.model import EngineSpan, TraceHints

__all__ = ["clean_value", "clip", "excerpt", "sanitize"]

_MAX = c.MAX_VALUE_CHARS
_KEEP = _MAX - len(c.VALUE_TRUNCATION_MARK) - c.VALUE_HASH_CHARS  # characters kept of a long value
_BAD = re.compile("[\x00\ud800-\udfff]")  # in a str every surrogate code point is a lone one

if _KEEP < 1 or c.VALUE_HASH_CHARS % 2:  # pragma: no cover - a conventions edit gone wrong
    raise ImportError("MAX_VALUE_CHARS must leave room for the truncation mark and an even-length hash")


def clean_value(s: str) -> str:
    """`s` itself (the same object) when it is clean, else its safe form (see the module
    docstring). Idempotent: a cleaned value is clean."""
    if s.isascii():  # O(1) in CPython; an ASCII string holds no surrogate
        if len(s) <= _MAX and "\x00" not in s:
            return s
        out = s.replace("\x00", c.VALUE_REPLACEMENT)
    elif _BAD.search(s) is None:
        if len(s) <= _MAX:
            return s
        out = s
    else:
        out = _BAD.sub(c.VALUE_REPLACEMENT, s)
    if len(out) <= _MAX:
        return out
    digest = hashlib.blake2b(s.encode("utf-8", "surrogatepass"), digest_size=c.VALUE_HASH_CHARS // 2)
    return out[:_KEEP] + c.VALUE_TRUNCATION_MARK + digest.hexdigest()


_QUOTE = c.REASON_VALUE_CHARS
_ELLIPSIS = c.MESSAGE_ELLIPSIS
_REPR = reprlib.Repr()  # bounded repr of a non-string client value (JSON arrays/objects, tuples)
_REPR.maxlevel = 2
_REPR.maxstring = _REPR.maxlong = _REPR.maxother = _QUOTE


def clip(text: str, limit: int) -> str:
    """Message text made safe to answer with: NUL and lone surrogates replaced (as `clean_value`
    does), cut to `limit` characters ending with `conventions.MESSAGE_ELLIPSIS` when longer.
    `text` itself (the same object) when it needs neither."""
    if len(text) > limit:
        text = text[: max(0, limit - len(_ELLIPSIS))] + _ELLIPSIS
    if (text.isascii() and "\x00" not in text) or _BAD.search(text) is None:
        return text
    return _BAD.sub(c.VALUE_REPLACEMENT, text)


def excerpt(v: object) -> str:
    """A client value quoted in a reject reason: the `repr` of at most `REASON_VALUE_CHARS`
    characters of a string, followed by `MESSAGE_ELLIPSIS` when it was longer; a bounded repr of
    any other value. Costs O(REASON_VALUE_CHARS) however large `v` is; a repr escapes NUL and
    surrogates, so the result is clean."""
    if isinstance(v, str):
        return repr(v) if len(v) <= _QUOTE else repr(v[:_QUOTE]) + _ELLIPSIS
    try:
        text = _REPR.repr(v)
    except ValueError:  # an int past sys.get_int_max_str_digits
        text = f"<{type(v).__name__}>"
    return clip(text, _QUOTE + len(_ELLIPSIS))


def _all_clean(engine: Sequence[EngineSpan], hints: Mapping[str, TraceHints]) -> bool:
    """Whether no string of the batch needs rewriting. Hot path (every batch, both decode paths):
    the common ASCII case is checked inline, and tenant / model / pod, which repeat across spans,
    once per distinct value."""
    ok: set[str] = set()
    add = ok.add
    limit = _MAX
    clean = clean_value
    for e in engine:
        s = e.tenant
        if s is not None and s not in ok:
            if not (s.isascii() and len(s) <= limit and "\x00" not in s) and clean(s) is not s:
                return False
            add(s)
        s = e.model
        if s not in ok:
            if not (s.isascii() and len(s) <= limit and "\x00" not in s) and clean(s) is not s:
                return False
            add(s)
        s = e.pod
        if s not in ok:
            if not (s.isascii() and len(s) <= limit and "\x00" not in s) and clean(s) is not s:
                return False
            add(s)
        s = e.request_id  # unique per span: not memoised
        if not (s.isascii() and len(s) <= limit and "\x00" not in s) and clean(s) is not s:
            return False
    for h in hints.values():
        s = h.tenant
        if s is not None and s not in ok:
            if clean(s) is not s:
                return False
            add(s)
        s = h.model
        if s is not None and s not in ok:
            if clean(s) is not s:
                return False
            add(s)
    return True


class _Rewriter:
    """`clean_value` over the fields of one batch, counting the values it changed."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, s: str) -> str:
        out = clean_value(s)
        if out is not s:
            self.count += 1
        return out

    def optional(self, s: str | None) -> str | None:
        return None if s is None else self(s)


def sanitize(
    engine: tuple[EngineSpan, ...], hints: dict[str, TraceHints]
) -> tuple[tuple[EngineSpan, ...], dict[str, TraceHints], int]:
    """The batch with every string field made safe by `clean_value`, and how many values were
    rewritten (each occurrence on an engine span or a trace's hints counts). A clean batch is
    returned as it is (same objects)."""
    if _all_clean(engine, hints):
        return engine, hints, 0
    fix = _Rewriter()
    new_engine: list[EngineSpan] = []
    for e in engine:
        before = fix.count
        tenant, model, pod, rid = fix.optional(e.tenant), fix(e.model), fix(e.pod), fix(e.request_id)
        same = fix.count == before
        new_engine.append(
            e if same else dataclasses.replace(e, tenant=tenant, model=model, pod=pod, request_id=rid)
        )
    new_hints: dict[str, TraceHints] = {}
    for trace_id, h in hints.items():
        before = fix.count
        h_tenant, h_model = fix.optional(h.tenant), fix.optional(h.model)
        same = fix.count == before
        new_hints[trace_id] = h if same else dataclasses.replace(h, tenant=h_tenant, model=h_model)
    return tuple(new_engine), new_hints, fix.count
