"""Untrusted strings read by the metric sources, made safe where they enter (docs/sources.md,
"Untrusted strings").

Label values of Prometheus answers (`prometheus.clean_rows`) and of scraped expositions
(`scrape.parse_exposition`), KV-event topics (`kvevents.parse_topic`) and discovered pod names
and labels (`discovery.pod_target`) go through ingest's `clean_value` (observer/ingest/sanitize.py),
the one rule: NUL and lone surrogates replaced, values past `conventions.MAX_VALUE_CHARS` cut with
a hash suffix. Every source gives a pod name the same form a span gives it, so joins by pod name
(records, metric samples, KV events) hold whatever the name.

Each boundary takes a `Clean` function; the sources pass a `ValueCleaner`, which counts the values
it rewrote for `pd_observer_source_values_rewritten_total{source}`.

The size of the HTTP answers they come in is capped where they are read (observer/sources/capped.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from observer.ingest.sanitize import clean_value

__all__ = ["Clean", "ValueCleaner", "clean_value", "text_or_none"]

Clean = Callable[[str], str]


class ValueCleaner:
    """`clean_value` that counts the values it rewrote (`count`), for one source. Thread-safe
    (the scrape source parses in a thread pool); a clean value takes no lock and comes back as
    the same object."""

    __slots__ = ("_count", "_lock", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self._count = 0
        self._lock = threading.Lock()

    def __call__(self, s: str) -> str:
        out = clean_value(s)
        if out is not s:
            with self._lock:
                self._count += 1
        return out

    @property
    def count(self) -> int:
        return self._count


def text_or_none(v: object, clean: Clean = clean_value) -> str | None:
    """A decoded JSON value that must be a string: cleaned, or None when it is not a string
    (a number, a list, null: treated as absent, never `str()`-ed into a name)."""
    return clean(v) if isinstance(v, str) else None
