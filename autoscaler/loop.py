"""The control loop: the only place that sleeps or retries.

Each tick: renew leadership → read targets (status, weights) → observe → `policy.decide`
→ apply effects per mode (observe: nothing; dry-run: server-side dry run; apply: for real),
scale-downs first → audit. Retries are data (`RetryPolicy.backoff_seconds`): a
`TemporaryError` is retried after each delay in turn, a `PermanentError` is not.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TypeVar

from autoscaler.policy import decide
from autoscaler.ports import (
    TARGET_DECIDER,
    TARGET_WEIGHTS,
    ActuationError,
    AuditEntry,
    AuditSink,
    Clock,
    Interruptible,
    LeaseLock,
    LeverMemory,
    ObservationSource,
    Outcome,
    PermanentError,
    ScaleTarget,
    Sleeper,
    TemporaryError,
    WeightTarget,
)
from autoscaler.types import Config, Effects, PolicyState, PoolObservation, PoolState, RoleStatus, TickInput
from observer import conventions as c

log = logging.getLogger(__name__)
T = TypeVar("T")


class Mode(StrEnum):
    OBSERVE = "observe"
    DRY_RUN = "dry-run"
    APPLY = "apply"


# Elapsed time for leadership: CLOCK_BOOTTIME where there is one (Linux), which also counts
# time the machine was suspended: a leader resumed after its lease ran out sees that it did,
# where CLOCK_MONOTONIC (and client-go's clock) would not. Elsewhere `time.monotonic`.
ELAPSED_CLOCK_ID: int | None = getattr(time, "CLOCK_BOOTTIME", None)


def elapsed_seconds() -> float:
    """Seconds on a clock that never jumps and counts suspend where the OS offers one."""
    if ELAPSED_CLOCK_ID is not None:
        return time.clock_gettime(ELAPSED_CLOCK_ID)
    return time.monotonic()


class SystemClock:
    """The real Clock and Sleeper (the wall clock, `elapsed_seconds` as the monotonic one, real
    sleeps): used only by the running loop. `interrupt()` (from another thread: the loop is
    stopping) ends the sleep in progress and every later one at once."""

    def __init__(self) -> None:
        self._interrupted = threading.Event()

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return elapsed_seconds()

    def sleep(self, seconds: float) -> None:
        self._interrupted.wait(seconds)

    def interrupt(self) -> None:
        self._interrupted.set()


class LeadershipLost(Exception):
    """This instance was the leader and no longer is: the process must exit."""


# A leader that has not renewed its Lease for this share of the lease duration stops: it
# exits before a standby may take over (client-go's renew deadline, 10 s of a 15 s lease).
RENEW_DEADLINE_SHARE = 2 / 3
# A leader renews again before writing when its last renewal is older than this share of the
# lease duration (a tick slowed by retries must not act on a lease about to expire).
RENEW_BEFORE_ACT_SHARE = 1 / 3


# The outcome of an action a stopping loop did not send (SIGTERM arrived during its tick).
NOT_SENT_STOPPING = "not sent: the loop is stopping"


class NotRetried(TemporaryError):
    """A temporary error a stopping loop did not retry, after `attempts` attempts."""

    def __init__(self, message: str, *, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    backoff_seconds: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)  # attempts = len + 1
    # a server's Retry-After lengthens a delay up to this (never shortens it)
    max_retry_after_seconds: float = 30.0

    @property
    def attempts(self) -> int:
        return len(self.backoff_seconds) + 1


def call_with_retries(
    op: Callable[[], T],
    policy: RetryPolicy,
    sleeper: Sleeper,
    *,
    stopping: Callable[[], bool] | None = None,
) -> tuple[T, int]:
    """Run `op`; on TemporaryError sleep the next backoff (or the server's Retry-After, up to
    `max_retry_after_seconds`, when longer) and retry. Returns (result, attempts). Raises the
    last TemporaryError when the sequence is exhausted, PermanentError at once, and a
    TemporaryError saying so instead of retrying once `stopping()` is true."""
    delays = iter(policy.backoff_seconds)
    attempt = 0
    while True:
        attempt += 1
        try:
            return op(), attempt
        except TemporaryError as exc:
            delay = next(delays, None)
            if delay is None:
                raise
            if exc.retry_after_seconds is not None:
                delay = max(delay, min(exc.retry_after_seconds, policy.max_retry_after_seconds))
            if stopping is None or not stopping():
                log.info("temporary error (attempt %d), retrying in %.2fs: %s", attempt, delay, exc)
                sleeper.sleep(delay)
            if stopping is not None and stopping():
                raise NotRetried(f"not retried, the loop is stopping: {exc}", attempts=attempt) from exc


@dataclass(frozen=True, slots=True)
class TickReport:
    at: float
    leader: bool
    effects: Effects | None
    outcomes: tuple[Outcome, ...]
    # not the leader because the lease could not be read or written (API unreachable, RBAC):
    # the error, as opposed to another instance holding the lease (None)
    lease_error: str | None = None


def _keep_applied(
    before: PolicyState, effects: Effects, outcomes: Sequence[Outcome], *, applied: bool
) -> PolicyState:
    """The policy's new state, minus the action times of actions that did not happen (observe
    and dry-run modes, failed calls), so cooldowns only follow real changes."""
    ok = {(o.pool, o.target) for o in outcomes if o.ok and applied}
    pools = dict(effects.state.pools)
    for pool, st in effects.state.pools.items():
        old = before.pools.get(pool)
        ups, downs = dict(st.last_scale_up), dict(st.last_scale_down)
        for role in c.ROLES:
            if (pool, role) not in ok:
                for now_map, old_map in (
                    (ups, old.last_scale_up if old else {}),
                    (downs, old.last_scale_down if old else {}),
                ):
                    if role in old_map:
                        now_map[role] = old_map[role]
                    else:
                        now_map.pop(role, None)
        last_w = (
            st.last_weight_change
            if (pool, TARGET_WEIGHTS) in ok
            else (old.last_weight_change if old else None)
        )
        last_d = (
            st.last_decider_change
            if (pool, TARGET_DECIDER) in ok
            else (old.last_decider_change if old else None)
        )
        pools[pool] = replace(
            st,
            last_scale_up=ups,
            last_scale_down=downs,
            last_weight_change=last_w,
            last_decider_change=last_d,
        )
    return PolicyState(pools)


class Controller:
    """Wires the ports to the policy. One instance per process."""

    def __init__(
        self,
        *,
        config: Config,
        mode: Mode,
        scale: ScaleTarget,
        source: ObservationSource,
        clock: Clock,
        sleeper: Sleeper,
        audit: AuditSink,
        weights: WeightTarget | None = None,
        lease: LeaseLock | None = None,
        retry: RetryPolicy = RetryPolicy(),
        interval_seconds: float = 15.0,
        memory: LeverMemory | None = None,
    ) -> None:
        self.config = config
        self.mode = mode
        self._scale = scale
        self._weights = weights
        self._source = source
        self._clock = clock
        self._sleeper = sleeper
        self._audit = audit
        self._lease = lease
        self._retry = retry
        self.interval_seconds = interval_seconds
        self.state = PolicyState()
        self._memory = memory
        self._recalled = False  # since this instance (re)took the lead
        self._was_leader = False
        self._renewed_at = 0.0  # monotonic time of the last successful renewal (when the leader)
        self._stop = threading.Event()

    # -- helpers ---------------------------------------------------------------------------
    def _retrying(self, op: Callable[[], T]) -> tuple[T, int]:
        return call_with_retries(op, self._retry, self._sleeper, stopping=self._stop.is_set)

    def _observe(self, pool: str, now: float) -> PoolObservation:
        obs = self._source.observe(pool, now)
        roles: dict[str, RoleStatus] = {}
        for role in c.ROLES:
            try:
                roles[role], _ = self._retrying(lambda r=role: self._scale.status(pool, r))  # type: ignore[misc]
            except ActuationError as exc:
                log.warning("cannot read %s/%s: %s", pool, role, exc)
        weights: Mapping[str, float] | None = None
        decider: int | None = None
        rolled_out: bool | None = None
        if self._weights is not None:
            wt = self._weights
            read = False  # each lever on its own: an unreadable one does not take the other
            try:
                weights, _ = self._retrying(lambda: wt.weights(pool))
                read = True
            except ActuationError as exc:
                log.warning("cannot read the scorer weights of %s: %s", pool, exc)
            try:
                decider, _ = self._retrying(lambda: wt.decider_threshold(pool))
                read = True
            except ActuationError as exc:
                log.warning("cannot read the P/D decider of %s: %s", pool, exc)
            if read:  # the rollout matters only where there is a config to write
                try:
                    rolled_out, _ = self._retrying(lambda: wt.epp_rolled_out(pool))
                except ActuationError as exc:
                    log.warning("cannot read the EPP rollout of %s: %s", pool, exc)
        return replace(
            obs, roles=roles, weights=weights, decider_threshold=decider, epp_rolled_out=rolled_out
        )

    def _call(self, pool: str, target: str, op: Callable[[], str], dry: bool) -> Outcome:
        """One actuation with retries, as an Outcome (never raises ActuationError)."""
        outcome, _ = self._attempt(pool, target, op, dry)
        return outcome

    def _attempt(
        self, pool: str, target: str, op: Callable[[], str], dry: bool
    ) -> tuple[Outcome, PermanentError | None]:
        """`_call`, also giving the permanent error when that is how it failed. Once the loop
        is stopping, an action not sent yet is not sent (its outcome says so)."""
        if self._stop.is_set():
            return Outcome(pool, target, False, NOT_SENT_STOPPING, 0, dry), None
        try:
            detail, n = self._retrying(op)
            return Outcome(pool, target, True, detail, n, dry), None
        except TemporaryError as exc:
            attempts = exc.attempts if isinstance(exc, NotRetried) else self._retry.attempts
            return Outcome(pool, target, False, f"gave up: {exc}", attempts, dry), None
        except PermanentError as exc:
            return Outcome(pool, target, False, f"permanent: {exc}", 1, dry), exc

    def _write_epp(
        self,
        wt: WeightTarget,
        pool: str,
        w: Mapping[str, float] | None,
        d: int | None,
        *,
        now: float,
        dry: bool,
    ) -> list[Outcome]:
        """A pool's EPP levers in one write (one EPP restart and rollout), that write being both
        levers' outcome; when it fails for good, each lever on its own, so one lever's
        permanent error (its plugin gone from the config) does not hold the other."""
        if w is not None and d is not None:
            both, permanent = self._attempt(
                pool,
                TARGET_WEIGHTS,
                lambda: wt.set_epp(pool, weights=w, decider=d, now=now, dry_run=dry),
                dry,
            )
            if permanent is None:
                return [both, replace(both, target=TARGET_DECIDER, shared=True)]
            log.warning("%s: the EPP write of both levers failed (%s): each on its own", pool, permanent)
        out = []
        if w is not None:
            write_w = lambda: wt.set_epp(pool, weights=w, now=now, dry_run=dry)  # noqa: E731
            out.append(self._call(pool, TARGET_WEIGHTS, write_w, dry))
        if d is not None:
            write_d = lambda: wt.set_epp(pool, decider=d, now=now, dry_run=dry)  # noqa: E731
            out.append(self._call(pool, TARGET_DECIDER, write_d, dry))
        return out

    def _apply(self, effects: Effects, now: float) -> list[Outcome]:
        if self.mode == Mode.OBSERVE:
            return []
        dry = self.mode == Mode.DRY_RUN
        outcomes: list[Outcome] = []
        for d in effects.scale_actions:  # scale-downs first
            outcomes.append(
                self._call(
                    d.pool,
                    d.role,
                    lambda d=d: self._scale.scale(d.pool, d.role, d.desired, dry_run=dry),  # type: ignore[misc]
                    dry,
                )
            )
        weights: dict[str, dict[str, float]] = {}
        for w in effects.weight_changes:
            weights.setdefault(w.pool, {})[w.scorer] = w.desired
        deciders = {x.pool: x.desired for x in effects.decider_changes}
        if self._weights is not None:
            for pool in dict.fromkeys([*weights, *deciders]):
                outcomes += self._write_epp(
                    self._weights, pool, weights.get(pool), deciders.get(pool), now=now, dry=dry
                )
        return outcomes

    def _lead(self, lease: LeaseLock) -> tuple[bool, str | None]:
        """Acquire or renew the lease, retrying API errors: (leader, the error when the lease
        could not be read or written). Raises LeadershipLost when this leader must stop:
        another instance holds the lease, or it could not renew it for `RENEW_DEADLINE_SHARE`
        of the lease duration (so it stops before a standby can take over)."""
        error: str | None = None
        try:
            leader, _ = self._retrying(lambda: lease.try_acquire_or_renew(self._clock.now()))
        except ActuationError as exc:
            leader, error = False, f"lease renewal failed: {exc}"
        now = self._clock.monotonic()  # elapsed times only: a wall-clock step must not move them
        if leader:
            self._was_leader, self._renewed_at = True, now
        elif self._was_leader:
            if error is None:
                self._was_leader = False  # a standby from now on (`serve` goes on ticking as one)
                raise LeadershipLost(f"{lease.identity} lost the lease")
            deadline = lease.duration_seconds * RENEW_DEADLINE_SHARE
            if now - self._renewed_at >= deadline:
                self._was_leader = False
                raise LeadershipLost(
                    f"{lease.identity} could not renew the lease for {now - self._renewed_at:.0f} s "
                    f"(renew deadline {deadline:.0f} s): {error}"
                )
            log.warning("%s; still the leader on record, not acting this tick", error)
        elif error is not None:
            log.warning("%s", error)
        return leader, error

    def _recall(self) -> None:
        """On taking the lead: each pool's last EPP lever changes, by whichever instance, so a
        threshold or a weight its predecessor raised is brought back to the operator's value,
        not kept as theirs (`policy._operators`)."""
        if self._memory is None:
            return
        pools = dict(self.state.pools)
        for pool in self.config.pools:
            try:
                got = self._memory.recall(pool)
            except Exception as exc:  # the database: the policy then takes the first reading
                log.warning("cannot recall the EPP lever changes of %s: %s", pool, exc)
                continue
            st = pools.get(pool, PoolState())
            if got.decider is not None:
                x = got.decider
                st = replace(st, decider_baseline=x.baseline, decider_written=(x.current, x.desired))
            base = {s: w.baseline for s, w in got.weights.items() if w.baseline is not None}
            if base:  # (`Recalled` keeps only changes with a baseline)
                written = {s: (w.current, w.desired) for s, w in got.weights.items() if s in base}
                st = replace(
                    st,
                    weight_baseline={**st.weight_baseline, **base},
                    weight_written={**st.weight_written, **written},
                )
            pools[pool] = st
        self.state = PolicyState(pools)

    # -- public ----------------------------------------------------------------------------
    def tick(self) -> TickReport:
        """One tick. Raises LeadershipLost when this leader lost its lease."""
        now = self._clock.now()
        if self._lease is not None:
            leader, error = self._lead(self._lease)
            if not leader:
                self._recalled = False  # another instance may act meanwhile
                return TickReport(now, False, None, (), lease_error=error)
            now = self._clock.now()  # after any retries
        if not self._recalled:
            self._recall()
            self._recalled = True
        observations = tuple(self._observe(p, now) for p in self.config.pools)
        before = self.state
        effects = decide(TickInput(now, observations, before), self.config)
        lease = self._lease
        if (
            lease is not None
            and self.mode != Mode.OBSERVE
            and not self._stop.is_set()  # stopping: nothing will be sent, the lease is given up
            and self._clock.monotonic() - self._renewed_at > lease.duration_seconds * RENEW_BEFORE_ACT_SHARE
        ):
            leader, error = self._lead(lease)  # a slow tick: renew again before writing
            if not leader:
                return TickReport(now, False, None, (), lease_error=error)
        outcomes = self._apply(effects, now)
        self.state = _keep_applied(before, effects, outcomes, applied=self.mode == Mode.APPLY)
        for o in observations:
            self._audit.record(
                AuditEntry(
                    at=now,
                    pool=o.pool,
                    mode=self.mode.value,
                    observation=o,
                    decisions=tuple(d for d in effects.decisions if d.pool == o.pool),
                    weight_changes=tuple(w for w in effects.weight_changes if w.pool == o.pool),
                    holds=tuple(h for h in effects.holds if h.pool == o.pool),
                    outcomes=tuple(x for x in outcomes if x.pool == o.pool),
                    decider_changes=tuple(x for x in effects.decider_changes if x.pool == o.pool),
                )
            )
        return TickReport(now, True, effects, tuple(outcomes))

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Ask the loop to stop; from any thread (not a signal handler: it takes a lock). The
        tick in flight finishes without retrying and without sending an action it has not sent
        yet (audited as `not sent`), the sleep in progress ends, and `run` releases the lease
        and returns. The request in flight, if any, is not cut: the API server may have applied
        it already, and its outcome is audited."""
        self._stop.set()
        if isinstance(self._sleeper, Interruptible):
            self._sleeper.interrupt()

    def release(self) -> None:
        """Give the lease up if this instance leads (a clean stop: a standby takes over at
        once instead of waiting the lease out). Never raises."""
        if self._lease is not None and self._was_leader:
            self._was_leader = False
            self._lease.release(self._clock.now())

    def run(self, *, max_ticks: int | None = None) -> Sequence[TickReport]:
        """Tick every `interval_seconds` until `max_ticks` (forever when None) or `stop()`.
        Releases the lease on the way out; LeadershipLost propagates (the CLI exits non-zero)."""
        reports: collections.deque[TickReport] = collections.deque(maxlen=max_ticks or 100)
        ticks = 0
        try:
            while (max_ticks is None or ticks < max_ticks) and not self._stop.is_set():
                reports.append(self.tick())
                ticks += 1
                if (max_ticks is not None and ticks >= max_ticks) or self._stop.is_set():
                    break
                self._sleeper.sleep(self.interval_seconds)
        except LeadershipLost:
            raise
        except BaseException:
            self.release()
            raise
        self.release()
        return tuple(reports)
