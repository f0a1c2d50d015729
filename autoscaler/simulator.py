"""The twin's actuator: `ScaleTarget` and `WeightTarget` adapters over the simulator's
`SimActuator` (DESIGN §3), for the demo, `pd-observer replay` and the control benchmarks.

Same semantics as the Kubernetes adapters: `status` reports the desired count as `replicas`,
ready pods as `ready` (pods still starting: ready < desired, a scale-up in progress), and a
role with pods still draining as a rollout in progress (so the policy's gating works on the
twin too); a dry run validates without acting; an unknown pool is a `NotFoundError`, an
invalid request a `PermanentError`. Weights are read as the EPP's *configured* weights
(pending ones once requested, like the edited ConfigMap before the restart completes), and a
change merges into them (scorers not named keep their weight).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from autoscaler.loop import Controller, TickReport
from autoscaler.ports import NotFoundError, PermanentError
from autoscaler.types import RoleStatus
from observer import conventions as c
from observer.model import RequestRecord, TierTokens
from simulator.actuation import FleetState
from simulator.events import ArrivedRequest, CompletedRequest, FleetEvent, KvEvent, PodSnapshot


class Actuator(Protocol):
    """What `simulator.actuation.SimActuator` offers (structural, so tests may fake it)."""

    def set_replicas(self, pool: str, role: str, n: int) -> None: ...

    def set_scorer_weights(self, pool: str, weights: Mapping[str, float]) -> float: ...

    def set_decider_threshold(self, pool: str, tokens: int) -> float: ...

    def get_state(self) -> FleetState: ...


class SimScaleTarget:
    """`ScaleTarget` + `WeightTarget` over the twin (one object: the twin owns both)."""

    def __init__(self, actuator: Actuator) -> None:
        self._act = actuator
        self.actions = 0  # applied replica changes (for the benchmarks)
        self.weight_changes = 0
        self.decider_changes = 0

    # -- ScaleTarget -----------------------------------------------------------------------
    def status(self, pool: str, role: str) -> RoleStatus:
        p = self._act.get_state().pools.get(pool)
        if p is None:
            raise NotFoundError(f"{pool}: no such pool in the twin")
        r = p.replicas.get(role)
        if r is None:
            raise NotFoundError(f"{pool}/{role}: no such role in the twin")
        return RoleStatus(
            replicas=r.desired,
            ready=r.ready,
            generation_current=True,
            # like a Deployment being scaled up: starting pods are not ready, but no template
            # rollout; draining pods are surplus old pods (a scale-down still in progress)
            rollout_in_progress=r.draining > 0,
        )

    def scale(self, pool: str, role: str, replicas: int, *, dry_run: bool) -> str:
        before = self.status(pool, role).replicas
        if role not in c.ROLES:
            raise PermanentError(f"{pool}: unknown role {role!r}")
        if replicas < 0 or (role == c.ROLE_DECODE and replicas < 1):
            raise PermanentError(f"{pool}/{role}: invalid replica count {replicas}")
        if dry_run:
            return f"{pool}/{role}: {before} -> {replicas} (dry run)"
        try:
            self._act.set_replicas(pool, role, replicas)
        except ValueError as exc:
            raise PermanentError(f"{pool}/{role}: {exc}") from exc
        self.actions += 1
        return f"{pool}/{role}: {before} -> {replicas}"

    # -- WeightTarget ----------------------------------------------------------------------
    def weights(self, pool: str) -> Mapping[str, float]:
        p = self._act.get_state().pools.get(pool)
        if p is None:
            raise NotFoundError(f"{pool}: no such pool in the twin")
        return dict(p.weights_pending if p.weights_pending is not None else p.weights_active)

    def set_weights(self, pool: str, weights: Mapping[str, float], *, now: float, dry_run: bool) -> str:
        current = dict(self.weights(pool))
        merged = {**current, **{k: float(v) for k, v in weights.items()}}
        if any(v < 0 for v in merged.values()):
            raise PermanentError(f"{pool}: scorer weights must be >= 0")
        if dry_run:
            return f"{pool}: weights {merged} (dry run)"
        try:
            at = self._act.set_scorer_weights(pool, merged)
        except ValueError as exc:
            raise PermanentError(f"{pool}: {exc}") from exc
        self.weight_changes += 1
        return f"{pool}: weights {merged}, effective at {at:.0f} (EPP restart)"

    def decider_threshold(self, pool: str) -> int | None:
        p = self._act.get_state().pools.get(pool)
        if p is None:
            raise NotFoundError(f"{pool}: no such pool in the twin")
        return p.decider_pending if p.decider_pending is not None else p.decider_active

    def set_decider_threshold(self, pool: str, tokens: int, *, now: float, dry_run: bool) -> str:
        before = self.decider_threshold(pool)
        if tokens < 0:
            raise PermanentError(f"{pool}: nonCachedTokens must be >= 0")
        if dry_run:
            return f"{pool}: nonCachedTokens {before} -> {tokens} (dry run)"
        at = self._act.set_decider_threshold(pool, tokens)
        self.decider_changes += 1
        return f"{pool}: nonCachedTokens {before} -> {tokens}, effective at {at:.0f} (EPP restart)"

    def set_epp(
        self,
        pool: str,
        *,
        weights: Mapping[str, float] | None = None,
        decider: int | None = None,
        now: float,
        dry_run: bool,
    ) -> str:
        """Both levers: the twin restarts its EPP once for changes made at the same time."""
        done = []
        if weights is not None:
            done.append(self.set_weights(pool, weights, now=now, dry_run=dry_run))
        if decider is not None:
            done.append(self.set_decider_threshold(pool, decider, now=now, dry_run=dry_run))
        return "; ".join(done)

    def epp_rolled_out(self, pool: str) -> bool | None:
        """True unless a weight or decider change waits for the twin's EPP restart."""
        p = self._act.get_state().pools.get(pool)
        if p is None:
            raise NotFoundError(f"{pool}: no such pool in the twin")
        return p.weights_pending is None and p.decider_pending is None


# ---------------------------------------------------------------------------------------------
# Ground-truth records of the twin, and the controller as a twin policy
# ---------------------------------------------------------------------------------------------
def _tiers(cached: Mapping[str, int]) -> TierTokens:
    return TierTokens(
        hbm=cached.get(c.TIER_HBM, 0),
        dram=cached.get(c.TIER_DRAM, 0),
        disk=cached.get(c.TIER_DISK, 0),
        remote=cached.get(c.TIER_REMOTE, 0),
        unknown=cached.get(c.TIER_UNKNOWN, 0),
    )


def record_of(req: CompletedRequest) -> RequestRecord:
    """The `RequestRecord` the observer would stitch from the twin's spans of `req` (times as the
    vLLM spans show them: from the first engine's arrival; see `observer.ingest.assemble`)."""
    d, p = req.decode, req.prefill
    first = p if p is not None else d
    out = req.output_tokens
    decode_s = d.finished - d.first_token
    return RequestRecord(
        request_id=req.request_id,
        trace_id=f"{req.trace_seed:032x}"[-32:],
        tenant=req.tenant,
        model=req.model,
        start_time=first.arrival,
        end_time=d.finished,
        prompt_tokens=req.prompt_tokens,
        output_tokens=out,
        cached=_tiers(req.cached_by_tier),
        ttft=d.first_token - first.arrival,
        itl=decode_s / (out - 1) if out > 1 else None,
        e2e=d.finished - first.arrival,
        queue=(first.scheduled - first.arrival) + ((d.scheduled - d.arrival) if p is not None else 0.0),
        prefill=first.first_token - first.scheduled,
        kv_transfer=(
            max(0.0, d.arrival - p.first_token) + (d.first_token - d.scheduled) if p is not None else 0.0
        ),
        decode=decode_s,
        error=req.error,
        disaggregated=p is not None,
        prefill_pod=p.pod if p is not None else d.pod,
        decode_pod=d.pod,
    )


class TwinRecordSink:
    """A `FleetSink` handing each completed request, as a `RequestRecord`, to a listener
    (e.g. `RecordWindow.add_records`): the twin's ground truth without the OTLP round trip
    (fast benchmarks); `pd-observer replay` and the closed-loop tests use the real pipeline."""

    def __init__(self, listener: Callable[[Sequence[RequestRecord], float], None]) -> None:
        self._listener = listener

    def request_arrived(self, arrival: ArrivedRequest) -> None:
        return None

    def request_completed(self, request: CompletedRequest) -> None:
        self._listener((record_of(request),), request.decode.finished)

    def pods_sampled(self, now: float, pods: tuple[PodSnapshot, ...]) -> None:
        return None

    def kv_events(self, events: tuple[KvEvent, ...]) -> None:
        return None

    def fleet_event(self, event: FleetEvent) -> None:
        return None


class TwinClock:
    """Clock + Sleeper on simulated time: `now` is set by the driver; sleeping (retry backoff)
    only records the delay (the twin never answers a temporary error)."""

    def __init__(self, now: float = 0.0) -> None:
        self.t = now
        self.slept = 0.0

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept += seconds


class TwinPolicy:
    """The controller as a `observer.wiring.twin.Policy`: `policy(twin, now)` runs one tick at
    simulated `now` every `interval_seconds` (calls in between are ignored)."""

    def __init__(self, controller: Controller, clock: TwinClock, *, interval_seconds: float) -> None:
        self.controller = controller
        self.clock = clock
        self.interval_seconds = interval_seconds
        self._next: float | None = None
        self.reports: list[TickReport] = []
        self.max_reports = 10_000

    def __call__(self, twin: object, now: float) -> None:
        if self._next is not None and now < self._next:
            return
        self._next = now + self.interval_seconds
        self.clock.t = now
        rep = self.controller.tick()
        if len(self.reports) < self.max_reports:
            self.reports.append(rep)
