"""The control loop's Prometheus metrics: a `collect()`-time collector fed by the audit entries
(it is an `AuditSink`; put it in a `FanoutAudit` next to the store), registered on the service
registry (`registry.register(AutoscalerCollector())`).

- `M_DESIRED_REPLICAS{pool,role}`, `M_CURRENT_REPLICAS{pool,role}` — the last decision's after/before;
- `M_DECISIONS_total{pool,reason}` — reason codes seen (per role decision, weight change, hold);
- `M_SCORER_WEIGHT{pool,scorer}` — the configured weights (after an applied change: the new value);
- `M_DECIDER_THRESHOLD{pool}` — the P/D decider's `nonCachedTokens` (likewise), pools with a decider;
- `M_ACTUATION_ERRORS_total{pool}` — API calls that failed after retries (or permanently);
- `M_AUTOSCALER_LAST_ACTION{pool}` — time of the last applied change (not dry-run, not observe);
- `M_AUTOSCALER_LEADER` — 1 while this instance leads (its last tick held the lease), 0 as a
  standby; set by the loop (`set_leader`), absent before its first tick.

State is bounded by the configured pools, roles, scorers and reason codes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from autoscaler.audit import reasons_of
from autoscaler.ports import TARGET_DECIDER, TARGET_WEIGHTS, AuditEntry
from observer import conventions as c


class AutoscalerCollector:
    """`AuditSink` and Prometheus collector."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._desired: dict[tuple[str, str], int] = {}
        self._current: dict[tuple[str, str], int] = {}
        self._reasons: dict[tuple[str, str], int] = {}
        self._weights: dict[tuple[str, str], float] = {}
        self._decider: dict[str, int] = {}
        self._errors: dict[str, int] = {}
        self._last_action: dict[str, float] = {}
        self._leader: bool | None = None

    def set_leader(self, leader: bool) -> None:
        """The loop's last tick: whether this instance held the lease."""
        with self._lock:
            self._leader = leader

    def record(self, entry: AuditEntry) -> None:
        pool = entry.pool
        with self._lock:
            self._errors.setdefault(pool, 0)
            for d in entry.decisions:
                self._desired[(pool, d.role)] = d.desired
                self._current[(pool, d.role)] = d.current
            for r in entry.observation.roles:
                if (pool, r) not in self._current:
                    self._current[(pool, r)] = entry.observation.roles[r].replicas
            for reason in reasons_of(entry):
                self._reasons[(pool, reason)] = self._reasons.get((pool, reason), 0) + 1
            if entry.observation.weights is not None:
                for s, v in entry.observation.weights.items():
                    self._weights[(pool, s)] = v
            if entry.observation.decider_threshold is not None:
                self._decider[pool] = entry.observation.decider_threshold
            applied = {o.target for o in entry.outcomes if o.ok and not o.dry_run}
            if TARGET_WEIGHTS in applied:
                for w in entry.weight_changes:
                    self._weights[(pool, w.scorer)] = w.desired
            if TARGET_DECIDER in applied:
                for x in entry.decider_changes:
                    self._decider[pool] = x.desired
            for o in entry.outcomes:
                if not o.ok and not o.shared:  # a shared outcome's call is counted once
                    self._errors[pool] += 1
            if applied:
                self._last_action[pool] = entry.at

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            desired = dict(self._desired)
            current = dict(self._current)
            reasons = dict(self._reasons)
            weights = dict(self._weights)
            decider = dict(self._decider)
            errors = dict(self._errors)
            last = dict(self._last_action)
            leader = self._leader
        pr = [c.LABEL_POOL, c.LABEL_ROLE]
        g = GaugeMetricFamily(
            c.M_DESIRED_REPLICAS, "Replicas the autoscaler decided, per pool and role", labels=pr
        )
        for (p, r), v in sorted(desired.items()):
            g.add_metric([p, r], v)
        yield g
        g = GaugeMetricFamily(c.M_CURRENT_REPLICAS, "Replicas of the target when last read", labels=pr)
        for (p, r), v in sorted(current.items()):
            g.add_metric([p, r], v)
        yield g
        k = CounterMetricFamily(
            c.M_DECISIONS, "Autoscaler decisions by reason code", labels=[c.LABEL_POOL, c.LABEL_REASON]
        )
        for (p, reason), n in sorted(reasons.items()):
            k.add_metric([p, reason], n)
        yield k
        g = GaugeMetricFamily(
            c.M_SCORER_WEIGHT, "EPP scorer weights as configured", labels=[c.LABEL_POOL, c.LABEL_SCORER]
        )
        for (p, scorer), w in sorted(weights.items()):
            g.add_metric([p, scorer], w)
        yield g
        g = GaugeMetricFamily(
            c.M_DECIDER_THRESHOLD,
            "P/D decider nonCachedTokens as configured (prefill on the decode pod below it)",
            labels=[c.LABEL_POOL],
        )
        for p, v in sorted(decider.items()):
            g.add_metric([p], v)
        yield g
        k = CounterMetricFamily(
            c.M_ACTUATION_ERRORS, "Autoscaler API calls that failed", labels=[c.LABEL_POOL]
        )
        for p, n in sorted(errors.items()):
            k.add_metric([p], n)
        yield k
        g = GaugeMetricFamily(
            c.M_AUTOSCALER_LAST_ACTION, "Time of the last applied autoscaler change", labels=[c.LABEL_POOL]
        )
        for p, t in sorted(last.items()):
            g.add_metric([p], t)
        yield g
        if leader is not None:
            g = GaugeMetricFamily(
                c.M_AUTOSCALER_LEADER,
                "1 while this instance holds the autoscaler lease and acts, 0 standing by",
            )
            g.add_metric([], 1.0 if leader else 0.0)
            yield g
