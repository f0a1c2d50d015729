"""Ports of the control loop: every external system behind a Protocol, each with an
in-memory adapter (tests, demo) next to the real one (autoscaler.kubernetes, the twin).

Adapters raise `TemporaryError` (worth retrying: 409 conflict, 429, 5xx, timeouts) or
`PermanentError` (not: 404 target missing, 403, 422, bad config); only `loop` retries.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

from autoscaler.types import (
    DeciderChange,
    Demand,
    Hold,
    PoolObservation,
    RoleDecision,
    RoleStatus,
    Signals,
    WeightChange,
)


class ActuationError(Exception):
    """Base of what adapters raise."""


class TemporaryError(ActuationError):
    """Retry with backoff: conflict, throttling, server error, timeout, connection reset.
    `retry_after_seconds`: the server's `Retry-After` (e.g. a 429 from API Priority and
    Fairness), the least the next attempt waits (capped by the loop)."""

    def __init__(self, message: str, *, retry_after_seconds: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class ConflictError(TemporaryError):
    """409: the object moved on since it was read (a fresh read and a retry may succeed; for
    a Lease, another instance won the write)."""


class PermanentError(ActuationError):
    """Do not retry: the request itself is wrong or the target is missing."""


class NotFoundError(PermanentError):
    """The target does not exist (404): reported, never retried."""


class ScaleTarget(Protocol):
    """Where a pool role's replica count lives (Deployment, LWS, CR with /scale, KServe, twin)."""

    def status(self, pool: str, role: str) -> RoleStatus: ...

    def scale(self, pool: str, role: str, replicas: int, *, dry_run: bool) -> str:
        """Set the replica count; returns a one-line description of what was done."""
        ...


class WeightTarget(Protocol):
    """Where a pool's EPP configuration lives (EndpointPickerConfig in a ConfigMap, the KServe
    LLMInferenceService inline scheduler config, twin): the scorer weights and the P/D decider's
    `nonCachedTokens` threshold. The EPP reads it only at start: every write restarts it."""

    def weights(self, pool: str) -> Mapping[str, float]: ...

    def decider_threshold(self, pool: str) -> int | None:
        """`nonCachedTokens` of the `prefix-based-pd-decider` plugin; None when the config has no
        such decider (the lever is then absent, not unknown: the policy never touches it)."""
        ...

    def set_epp(
        self,
        pool: str,
        *,
        weights: Mapping[str, float] | None = None,
        decider: int | None = None,
        now: float,
        dry_run: bool,
    ) -> str:
        """Write new scorer weights and/or a new decider threshold, both in one config write
        (so one EPP restart and rollout); the detail of what was done."""
        ...

    def epp_rolled_out(self, pool: str) -> bool | None:
        """Whether the EPP runs the config as it is now: True once its last restart has rolled
        out, False while it is rolling out (no further write then), None when this route cannot
        tell (e.g. KServe renders and rolls the EPP itself)."""
        ...


class LeaseLock(Protocol):
    """Leader election. `try_acquire_or_renew` is called every tick: True = the leader, False =
    another instance holds the lease (or won the write); an ActuationError = it could not be
    read or written (the loop retries, and a leader keeps its role until the renew deadline)."""

    @property
    def identity(self) -> str: ...

    @property
    def duration_seconds(self) -> float: ...

    def try_acquire_or_renew(self, now: float) -> bool: ...

    def release(self, now: float) -> None: ...


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock seconds since the epoch: the time of data and of what is written."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps (NTP steps, a set clock) and, where the OS
        offers one, counts suspend: for elapsed times, such as how long ago the lease was
        renewed."""
        ...


class Sleeper(Protocol):
    def sleep(self, seconds: float) -> None: ...


@runtime_checkable
class Interruptible(Protocol):
    """A Sleeper whose sleeps a stopping loop can end early (the real clock; a manual clock's
    sleeps end at once anyway)."""

    def interrupt(self) -> None: ...


class ObservationSource(Protocol):
    """Demand, signals and capacity samples for a pool (roles and weights are filled in by the
    loop from the targets)."""

    def observe(self, pool: str, now: float) -> PoolObservation: ...


TARGET_WEIGHTS = "weights"  # Outcome.target of a scorer-weight write
TARGET_DECIDER = "decider"  # Outcome.target of a P/D decider threshold write


@dataclass(frozen=True, slots=True)
class Outcome:
    """Result of one actuation (after retries)."""

    pool: str
    target: str  # role name, "weights" or "decider"
    ok: bool
    detail: str
    attempts: int
    dry_run: bool
    # the API call of the outcome before it (one EPP write carried both levers): the same
    # call, not another one (metrics count its error once)
    shared: bool = False


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: float
    pool: str
    mode: str
    observation: PoolObservation
    decisions: tuple[RoleDecision, ...]
    weight_changes: tuple[WeightChange, ...]
    holds: tuple[Hold, ...]
    outcomes: tuple[Outcome, ...]
    decider_changes: tuple[DeciderChange, ...] = ()


class AuditSink(Protocol):
    def record(self, entry: AuditEntry) -> None: ...


@dataclass(frozen=True, slots=True)
class Recalled:
    """A pool's newest EPP lever changes (by any instance, in any mode), each with the
    operator's value it was relative to (`baseline`); changes audited before that field
    existed are left out."""

    decider: DeciderChange | None = None
    weights: Mapping[str, WeightChange] = field(default_factory=dict)  # scorer -> its newest


@runtime_checkable
class LeverMemory(Protocol):
    """What outlives a controller: a controller that takes the lead recalls the levers'
    last changes, so a threshold or a weight its predecessor raised is brought back to the
    operator's value, not taken for it."""

    def recall(self, pool: str) -> Recalled: ...


LeverChanges = tuple[Sequence[DeciderChange], Sequence[WeightChange]]


def recall_from(ticks: Iterable[LeverChanges]) -> Recalled:
    """`Recalled` from one pool's audited ticks, newest first. Pure."""
    decider: DeciderChange | None = None
    weights: dict[str, WeightChange] = {}
    found_decider = False
    for deciders, weight_changes in ticks:
        if deciders and not found_decider:
            found_decider, x = True, deciders[-1]
            decider = x if x.baseline is not None else None
        for w in reversed(weight_changes):
            weights.setdefault(w.scorer, w)
    return Recalled(decider, {k: w for k, w in weights.items() if w.baseline is not None})


# ---------------------------------------------------------------------------------------------
# In-memory adapters
# ---------------------------------------------------------------------------------------------
class ManualClock:
    """A clock that only moves when told to (or when something sleeps on it)."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self.slept: list[float] = []

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self._now += seconds


class InMemoryScaleTarget:
    """Replica counts in a dict; `faults` is a queue of errors raised by the next calls."""

    def __init__(self, statuses: Mapping[tuple[str, str], RoleStatus]) -> None:
        self.statuses: dict[tuple[str, str], RoleStatus] = dict(statuses)
        self.faults: collections.deque[ActuationError] = collections.deque()
        self.calls: list[tuple[str, str, int, bool]] = []

    def status(self, pool: str, role: str) -> RoleStatus:
        try:
            return self.statuses[(pool, role)]
        except KeyError:
            raise NotFoundError(f"{pool}/{role}: no such target") from None

    def scale(self, pool: str, role: str, replicas: int, *, dry_run: bool) -> str:
        self.calls.append((pool, role, replicas, dry_run))
        if self.faults:
            raise self.faults.popleft()
        cur = self.status(pool, role)
        if not dry_run:
            self.statuses[(pool, role)] = replace(cur, replicas=replicas, ready=replicas)
        return f"{pool}/{role}: {cur.replicas} -> {replicas}"


class InMemoryWeightTarget:
    def __init__(
        self, weights: Mapping[str, Mapping[str, float]], deciders: Mapping[str, int] | None = None
    ) -> None:
        self.data: dict[str, dict[str, float]] = {p: dict(w) for p, w in weights.items()}
        self.deciders: dict[str, int] = dict(deciders or {})
        self.calls: list[tuple[str, dict[str, float], bool]] = []
        self.decider_calls: list[tuple[str, int, bool]] = []
        self.rolled_out: dict[str, bool] = {}  # EPP rollout state per pool; absent = unknown

    def weights(self, pool: str) -> Mapping[str, float]:
        if pool not in self.data:
            raise NotFoundError(f"{pool}: no scorer config")
        return dict(self.data[pool])

    def set_epp(
        self,
        pool: str,
        *,
        weights: Mapping[str, float] | None = None,
        decider: int | None = None,
        now: float,
        dry_run: bool,
    ) -> str:
        done = []
        if decider is not None and pool not in self.deciders:
            self.decider_calls.append((pool, decider, dry_run))
            raise PermanentError(f"{pool}: no prefix-based-pd-decider in the config")
        if weights is not None:
            self.calls.append((pool, dict(weights), dry_run))
            if not dry_run:
                self.data.setdefault(pool, {}).update(weights)
            done.append(f"weights {dict(weights)}")
        if decider is not None:
            self.decider_calls.append((pool, decider, dry_run))
            done.append(f"nonCachedTokens {self.deciders[pool]} -> {decider}")
            if not dry_run:
                self.deciders[pool] = decider
        return f"{pool}: {', '.join(done)}"

    def decider_threshold(self, pool: str) -> int | None:
        if pool not in self.data:
            raise NotFoundError(f"{pool}: no scorer config")
        return self.deciders.get(pool)

    def epp_rolled_out(self, pool: str) -> bool | None:
        return self.rolled_out.get(pool)


@dataclass
class LeaseRecordStore:
    """A shared 'API server' for InMemoryLease instances: holder, renew time, version."""

    holder: str | None = None
    renewed: float = 0.0
    version: int = 0


@dataclass
class InMemoryLease:
    store: LeaseRecordStore
    name: str
    duration_seconds: float = 15.0

    @property
    def identity(self) -> str:
        return self.name

    def try_acquire_or_renew(self, now: float) -> bool:
        s = self.store
        if s.holder in (None, self.name) or now - s.renewed > self.duration_seconds:
            s.holder, s.renewed, s.version = self.name, now, s.version + 1
            return True
        return False

    def release(self, now: float) -> None:
        if self.store.holder == self.name:
            self.store.holder = None


@dataclass
class StaticObservations:
    """Per-pool demand/signals set by the test or demo; `None` demand = unknown."""

    demand: dict[str, Demand | None] = field(default_factory=dict)
    signals: dict[str, Signals] = field(default_factory=dict)

    def observe(self, pool: str, now: float) -> PoolObservation:
        return PoolObservation(pool, {}, self.demand.get(pool), self.signals.get(pool, Signals()))


class MemoryAuditSink:
    """The last `capacity` audit entries."""

    def __init__(self, capacity: int = 1000) -> None:
        self.entries: collections.deque[AuditEntry] = collections.deque(maxlen=capacity)

    def record(self, entry: AuditEntry) -> None:
        self.entries.append(entry)

    def recall(self, pool: str) -> Recalled:
        return recall_from(
            (e.decider_changes, e.weight_changes) for e in reversed(self.entries) if e.pool == pool
        )
