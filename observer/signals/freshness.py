"""Data freshness per source ("observer blind"). Pure."""

from __future__ import annotations

from observer.signals.types import Freshness, FreshnessConfig, SourceStatus


def freshness(s: SourceStatus, now: float, cfg: FreshnessConfig) -> Freshness:
    age = None if s.last_success is None else max(0.0, now - s.last_success)
    up = s.last_success is not None and (s.last_attempt is None or s.last_success >= s.last_attempt)
    blind = age is None or age > cfg.stale_after_seconds
    return Freshness(source=s.source, up=up, age_seconds=age, blind=blind, error=s.error)
