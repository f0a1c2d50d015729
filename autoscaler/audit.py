"""The audit log of the control loop: every decision — inputs, reason codes, before/after and
the outcome of each API call — stored in the `decisions` table (migration 0002) and served at
`GET /api/v1/decisions`.

- `entry_json(entry)` — the JSON form of one `AuditEntry` (what the API returns);
- `SqlAuditLog(engine)` — an `AuditSink` that inserts one row per entry (SQLAlchemy Core, same
  engine URL as the observer's store, SQLite or PostgreSQL) and reads them back; retention by
  age and by row count, applied every `prune_every` writes;
- `MemoryAuditLog` — the same over a bounded deque (tests, replays);
- `FanoutAudit(*sinks)` — records to several sinks (e.g. the store and the metrics collector);
  a failing sink is logged, never raised into the loop.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from autoscaler.ports import AuditEntry, AuditSink, LeverChanges, Recalled, recall_from
from autoscaler.types import DeciderChange, Demand, PoolObservation, ReasonCode, Signals, WeightChange
from observer.store.schema import decisions as T

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
RECALL_ROWS = 200  # rows `SqlAuditLog.recall` reads: the lever changes of days (each is rate-limited)
T_ = TypeVar("T_")


def _num(x: float | None) -> float | None:
    if x is None or math.isnan(x) or math.isinf(x):
        return None
    return x


def _demand(d: Demand | None) -> dict[str, Any] | None:
    if d is None:
        return None
    return {
        "prompt_tokens_per_s": _num(d.prompt_tokens_per_s),
        "output_tokens_per_s": _num(d.output_tokens_per_s),
        "hit_rate": _num(d.hit_rate),
        "dram_hit_share": _num(d.dram_hit_share),
        "disk_hit_share": _num(d.disk_hit_share),
        "ttft_p90_seconds": None if d.ttft_p90_seconds is None else _num(d.ttft_p90_seconds),
        "requests_per_s": _num(d.requests_per_s),
        "age_seconds": _num(d.age_seconds),
        "arrivals_per_s": None if d.arrivals_per_s is None else _num(d.arrivals_per_s),
        "waiting_requests": d.waiting_requests,
        "uncached_tokens_per_s_by_size": [[b, _num(v)] for b, v in d.uncached_by_size],
        "prompt_moments": None
        if d.prompt_moments is None
        else {k: _num(v) for k, v in asdict(d.prompt_moments).items()},
    }


def _signals(s: Signals) -> dict[str, Any]:
    return {
        "starvation": s.starvation,
        "decode_pressure": s.decode_pressure,
        "cascade_tenants": None if s.cascade_tenants is None else list(s.cascade_tenants),
        "load_imbalance": s.load_imbalance,
        "age_seconds": _num(s.age_seconds),
        "decode_kv_peak": None if s.decode_kv_peak is None else _num(s.decode_kv_peak),
    }


def inputs_json(o: PoolObservation) -> dict[str, Any]:
    return {
        "demand": _demand(o.demand),
        "signals": _signals(o.signals),
        "roles": {
            r: {
                "replicas": s.replicas,
                "ready": s.ready,
                "generation_current": s.generation_current,
                "rollout_in_progress": s.rollout_in_progress,
            }
            for r, s in sorted(o.roles.items())
        },
        "weights": None if o.weights is None else dict(sorted(o.weights.items())),
        "decider_threshold": o.decider_threshold,
        "epp_rolled_out": o.epp_rolled_out,
        "capacity_samples": {"prefill": len(o.samples.prefill), "decode": len(o.samples.decode)},
    }


def reasons_of(e: AuditEntry) -> list[str]:
    """Every reason code of the entry, in order of first appearance."""
    out: dict[str, None] = {}
    for d in e.decisions:
        out.update(dict.fromkeys(r.value for r in d.reasons))
    for w in e.weight_changes:
        out.update(dict.fromkeys(r.value for r in w.reasons))
    for x in e.decider_changes:
        out.update(dict.fromkeys(r.value for r in x.reasons))
    for h in e.holds:
        out[h.reason.value] = None
    return list(out)


def changes_json(e: AuditEntry) -> dict[str, Any]:
    return {
        "replicas": [
            {"role": d.role, "before": d.current, "after": d.desired, "reasons": [r.value for r in d.reasons]}
            for d in e.decisions
        ],
        "weights": [
            {
                "scorer": w.scorer,
                "before": w.current,
                "after": w.desired,
                "baseline": w.baseline,
                "reasons": [r.value for r in w.reasons],
            }
            for w in e.weight_changes
        ],
        "decider": [
            {
                "before": x.current,
                "after": x.desired,
                "baseline": x.baseline,
                "reasons": [r.value for r in x.reasons],
            }
            for x in e.decider_changes
        ],
        "holds": [{"role": h.role, "reason": h.reason.value, "detail": h.detail} for h in e.holds],
    }


def outcomes_json(e: AuditEntry) -> list[dict[str, Any]]:
    return [
        {
            "target": o.target,
            "ok": o.ok,
            "detail": o.detail,
            "attempts": o.attempts,
            "dry_run": o.dry_run,
            "shared": o.shared,
        }
        for o in e.outcomes
    ]


def changed(e: AuditEntry) -> bool:
    return any(d.changed for d in e.decisions) or bool(e.weight_changes) or bool(e.decider_changes)


def outcome_ok(e: AuditEntry) -> bool | None:
    return None if not e.outcomes else all(o.ok for o in e.outcomes)


def entry_json(e: AuditEntry, entry_id: int | None = None) -> dict[str, Any]:
    """One decision as `GET /api/v1/decisions` returns it."""
    out: dict[str, Any] = {} if entry_id is None else {"id": entry_id}
    out.update(
        {
            "time": e.at,
            "pool": e.pool,
            "mode": e.mode,
            "reasons": reasons_of(e),
            "changed": changed(e),
            "ok": outcome_ok(e),
            "inputs": inputs_json(e.observation),
            **changes_json(e),
            "outcomes": outcomes_json(e),
        }
    )
    return out


class DecisionLog(Protocol):
    """What the decisions API reads: newest first."""

    def decisions(
        self, *, pool: str | None = None, since: float | None = None, limit: int = DEFAULT_LIMIT
    ) -> list[dict[str, Any]]: ...


class SqlAuditLog:
    """`AuditSink` + `DecisionLog` over the `decisions` table (run `pd-observer db upgrade`)."""

    def __init__(
        self,
        engine: Engine,
        *,
        retention_seconds: float = 30 * 86400.0,
        max_rows: int = 1_000_000,
        prune_every: int = 500,
    ) -> None:
        self.engine = engine
        self.retention_seconds = retention_seconds
        self.max_rows = max_rows
        self.prune_every = prune_every
        self._writes = 0
        self._lock = threading.Lock()

    @classmethod
    def open(cls, url: str, **kwargs: Any) -> SqlAuditLog:
        from observer.store.repository import open_engine

        return cls(open_engine(url), **kwargs)

    def record(self, entry: AuditEntry) -> None:
        row = {
            "at": entry.at,
            "pool": entry.pool,
            "mode": entry.mode,
            "reasons": ",".join(reasons_of(entry)),
            "changed": changed(entry),
            "ok": outcome_ok(entry),
            "inputs": json.dumps(inputs_json(entry.observation), sort_keys=True),
            "changes": json.dumps(changes_json(entry), sort_keys=True),
            "outcomes": json.dumps(outcomes_json(entry), sort_keys=True),
        }
        with self.engine.begin() as conn:
            conn.execute(T.insert().values(**row))
        with self._lock:
            self._writes += 1
            due = self._writes % self.prune_every == 0
        if due:
            self.prune(entry.at)

    def prune(self, now: float) -> int:
        """Delete rows older than the retention, then the oldest past `max_rows`."""
        with self.engine.begin() as conn:
            n = conn.execute(T.delete().where(T.c.at < now - self.retention_seconds)).rowcount or 0
            count = conn.execute(sa.select(sa.func.count()).select_from(T)).scalar_one()
            if count > self.max_rows:
                cutoff = conn.execute(
                    sa.select(T.c.id).order_by(T.c.id.desc()).offset(self.max_rows).limit(1)
                ).scalar()
                if cutoff is not None:
                    n += conn.execute(T.delete().where(T.c.id <= cutoff)).rowcount or 0
        return n

    def decisions(
        self, *, pool: str | None = None, since: float | None = None, limit: int = DEFAULT_LIMIT
    ) -> list[dict[str, Any]]:
        q = sa.select(T).order_by(T.c.at.desc(), T.c.id.desc()).limit(max(1, min(limit, MAX_LIMIT)))
        if pool is not None:
            q = q.where(T.c.pool == pool)
        if since is not None:
            q = q.where(T.c.at >= since)
        with self.engine.connect() as conn:
            rows = conn.execute(q).mappings().all()
        out = []
        for r in rows:
            changes = json.loads(r["changes"])
            out.append(
                {
                    "id": r["id"],
                    "time": r["at"],
                    "pool": r["pool"],
                    "mode": r["mode"],
                    "reasons": [x for x in r["reasons"].split(",") if x],
                    "changed": bool(r["changed"]),
                    "ok": None if r["ok"] is None else bool(r["ok"]),
                    "inputs": json.loads(r["inputs"]),
                    **changes,
                    "outcomes": json.loads(r["outcomes"]),
                }
            )
        return out

    def recall(self, pool: str, *, rows: int = RECALL_ROWS) -> Recalled:
        """`LeverMemory`: from the newest `rows` of `pool` that changed an EPP lever."""
        levers = sa.or_(T.c.changes.like('%"decider": [{%'), T.c.changes.like('%"weights": [{%'))
        q = (
            sa.select(T.c.changes)
            .where(T.c.pool == pool, levers)
            .order_by(T.c.at.desc(), T.c.id.desc())
            .limit(rows)
        )
        with self.engine.connect() as conn:
            found = conn.execute(q).scalars().all()
        return recall_from(lever_changes_of(pool, json.loads(text)) for text in found)

    def close(self) -> None:
        self.engine.dispose()


class MemoryAuditLog:
    """`AuditSink` + `DecisionLog` keeping the last `capacity` entries."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.entries: collections.deque[tuple[int, AuditEntry]] = collections.deque(maxlen=capacity)
        self._next = 1
        self._lock = threading.Lock()

    def record(self, entry: AuditEntry) -> None:
        with self._lock:
            self.entries.append((self._next, entry))
            self._next += 1

    def decisions(
        self, *, pool: str | None = None, since: float | None = None, limit: int = DEFAULT_LIMIT
    ) -> list[dict[str, Any]]:
        with self._lock:
            items = list(self.entries)
        picked = [
            (i, e)
            for i, e in reversed(items)
            if (pool is None or e.pool == pool) and (since is None or e.at >= since)
        ]
        picked.sort(key=lambda x: (-x[1].at, -x[0]))
        return [entry_json(e, i) for i, e in picked[: max(1, min(limit, MAX_LIMIT))]]


class FanoutAudit:
    """Record to every sink; a failing sink is logged and does not stop the others."""

    def __init__(self, *sinks: AuditSink) -> None:
        self.sinks: Sequence[AuditSink] = sinks

    def record(self, entry: AuditEntry) -> None:
        for s in self.sinks:
            try:
                s.record(entry)
            except Exception:
                log.exception("audit sink %s failed", type(s).__name__)


def lever_changes_of(pool: str, changes: Mapping[str, Any]) -> LeverChanges:
    """The decider and weight changes of an audited `changes` object (`changes_json`); an
    item that does not parse is left out."""
    deciders: list[DeciderChange] = []
    weights: list[WeightChange] = []
    for x in changes.get("decider") or ():
        with contextlib.suppress(KeyError, TypeError, ValueError):
            before, after, baseline = int(x["before"]), int(x["after"]), _opt(int, x.get("baseline"))
            deciders.append(DeciderChange(pool, before, after, _reasons(x), baseline))
    for x in changes.get("weights") or ():
        with contextlib.suppress(KeyError, TypeError, ValueError):
            weights.append(
                WeightChange(
                    pool,
                    str(x["scorer"]),
                    float(x["before"]),
                    float(x["after"]),
                    _reasons(x),
                    _opt(float, x.get("baseline")),
                )
            )
    return deciders, weights


def _reasons(x: Mapping[str, Any]) -> tuple[ReasonCode, ...]:
    return tuple(ReasonCode(r) for r in x.get("reasons", ()))


def _opt(kind: Callable[[Any], T_], v: Any) -> T_ | None:
    return None if v is None else kind(v)


def summary(entries: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Reason code -> count over decision JSON entries (for tables and reports)."""
    out: dict[str, int] = {}
    for e in entries:
        for r in e.get("reasons", ()):
            out[r] = out.get(r, 0) + 1
    return out
