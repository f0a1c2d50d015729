"""Control-loop replay harness: one scenario on the twin under one scaling policy.

Policies (each called every `interval` simulated seconds with the twin):
- `static`     — a fixed P:D, no control (the benchmark searches the best split at equal GPUs);
- `saturation` — WVA-like: per role, independently (not P/D-aware), +1 replica when the role's
                 mean KV usage ≥ 0.8 or mean queue ≥ 5 per pod, −1 once it has been below half of
                 both for the HPA scale-down stabilization window (300 s); 15 s sync;
- `dynamo`     — Dynamo-like throughput planner (field notes §6): every 180 s (the first one 180 s
                 after start, as its loop does),
                 prefill = ⌈req/s × ISL × (1 − hit) / prefill capacity⌉,
                 decode = ⌈req/s × OSL / decode capacity⌉ over the last interval, clamped to
                 [1, max], scaled down proportionally to the GPU budget;
- `pd-observer`— `autoscaler.loop.Controller` in apply mode with `autoscaler.observe` (record
                 window + record-based signals) and `autoscaler.simulator.SimScaleTarget`.

All policies see the same profiled capacities (the config's bootstrap) and the same budget.
Measured from the twin's ground truth: TTFT and ITL SLO attainment over every request that
arrived during the run (TTFT from the first engine's arrival, as the spans show it; ITL = decode
time / (output − 1)) — requests in flight at the end are followed to completion with no further
arrivals or control and no GPU time counted (up to `DRAIN_SECONDS`; any still unfinished then
is a TTFT miss) — GPU-hours (every pod holding a GPU: ready, starting, draining), scaling actions
(replica changes applied), scorer-weight changes and P/D decider threshold changes (each an EPP
restart).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from autoscaler.loop import Controller, Mode
from autoscaler.observe import (
    DecodeGauges,
    ObserverSource,
    QueueReading,
    RecordSignals,
    RecordWindow,
    pool_by_pod_prefix,
)
from autoscaler.ports import AuditEntry, MemoryAuditSink
from autoscaler.service import warm_start
from autoscaler.settings import WARM_START_HOLD_SECONDS
from autoscaler.simulator import SimScaleTarget, TwinClock, TwinRecordSink
from autoscaler.types import Config, DeciderConfig, PoolConfig, RoleConfig, WeightConfig
from observer import conventions as c
from observer.wiring.twin import build_twin
from simulator.emit.fanout import Fanout
from simulator.events import ArrivedRequest, CompletedRequest, FleetEvent, KvEvent, PodSnapshot
from simulator.scenarios import Twin

POOL = "llama-8b"  # the twin's pool (simulator/profiles/default.yaml)
TTFT_SLO = 2.0
ITL_SLO = 0.1
PREFILL_CAPACITY = 30_000.0  # uncached prompt tok/s per prefill replica at the TTFT target (profiled)
DECODE_CAPACITY = 3_000.0  # output tok/s per decode replica at the ITL target (profiled)
MAX_PER_ROLE = 10
MAX_STEP = 3
GPU_BUDGET = 14
DRAIN_SECONDS = 1800.0  # how long requests in flight at the end are followed (see `run`)
START = 1_700_000_000.0
POLICIES = ("static", "saturation", "dynamo", "pd-observer")


def pool_config(*, budget: int | None = GPU_BUDGET, decider: DeciderConfig | None = None) -> PoolConfig:
    return PoolConfig(
        name=POOL,
        roles={
            c.ROLE_PREFILL: RoleConfig(1, MAX_PER_ROLE, MAX_STEP, 1, PREFILL_CAPACITY),
            c.ROLE_DECODE: RoleConfig(1, MAX_PER_ROLE, MAX_STEP, 1, DECODE_CAPACITY),
        },
        gpu_budget=budget,
        ttft_target_seconds=TTFT_SLO,
        itl_target_seconds=ITL_SLO,
        scale_up_cooldown_seconds=30.0,
        scale_down_cooldown_seconds=120.0,
        weights=WeightConfig(min_interval_seconds=300.0),
        decider=decider if decider is not None else DeciderConfig(),
    )


@dataclass
class Meter:
    """A FleetSink measuring SLO attainment and keeping the latest pod snapshot."""

    ttft_good: int = 0
    itl_good: int = 0
    itl_total: int = 0
    total: int = 0
    pods: tuple[PodSnapshot, ...] = ()
    by_tenant: dict[str, list[int]] = field(default_factory=dict)  # tenant -> [good ttft, total]
    listeners: list[Callable[[CompletedRequest], None]] = field(default_factory=list)

    def request_arrived(self, arrival: ArrivedRequest) -> None:
        return None

    def request_completed(self, request: CompletedRequest) -> None:
        first = request.prefill if request.prefill is not None else request.decode
        ttft = request.decode.first_token - first.arrival
        self.total += 1
        good = ttft <= TTFT_SLO
        self.ttft_good += good
        t = self.by_tenant.setdefault(request.tenant, [0, 0])
        t[0] += good
        t[1] += 1
        if request.output_tokens > 1:
            itl = (request.decode.finished - request.decode.first_token) / (request.output_tokens - 1)
            self.itl_total += 1
            self.itl_good += itl <= ITL_SLO
        for f in self.listeners:
            f(request)

    def pods_sampled(self, now: float, pods: tuple[PodSnapshot, ...]) -> None:
        self.pods = pods

    def kv_events(self, events: tuple[KvEvent, ...]) -> None:
        return None

    def fleet_event(self, event: FleetEvent) -> None:
        return None


@dataclass(frozen=True, slots=True)
class RunResult:
    scenario: str
    policy: str
    requests: int
    ttft_attainment: float
    itl_attainment: float
    gpu_hours: float
    scaling_actions: int
    weight_changes: int
    decider_changes: int
    final_replicas: dict[str, int]
    wall_seconds: float
    detail: str = ""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


Policy = Callable[[Twin, float], None]


def _gpus(twin: Twin) -> int:
    st = twin.actuator.get_state().pools[POOL]
    return sum(r.ready + r.starting + r.draining for r in st.replicas.values())


class SaturationPolicy:
    """WVA-like saturation thresholds per role (KV 0.8, queue 5), HPA-style stabilization."""

    def __init__(self, target: SimScaleTarget, *, kv: float = 0.8, queue: float = 5.0) -> None:
        self.target = target
        self.kv, self.queue = kv, queue
        self.meter: Meter | None = None
        self.calm_since: dict[str, float | None] = dict.fromkeys(c.ROLES)
        self.window = 300.0

    def __call__(self, twin: Twin, now: float) -> None:
        assert self.meter is not None
        budget_used = _gpus(twin)
        for role in c.ROLES:
            pods = [p for p in self.meter.pods if p.role == role and p.ready]
            if not pods:
                continue
            kv = sum(p.kv_usage for p in pods) / len(pods)
            q = sum(p.waiting for p in pods) / len(pods)
            cur = self.target.status(POOL, role).replicas
            if kv >= self.kv or q >= self.queue:
                self.calm_since[role] = None
                if (
                    cur < MAX_PER_ROLE
                    and budget_used < GPU_BUDGET
                    and self.target.status(POOL, role).ready == cur
                ):
                    self.target.scale(POOL, role, cur + 1, dry_run=False)
                    budget_used += 1
            elif kv < self.kv / 2 and q < self.queue / 2:
                since = self.calm_since[role]
                if since is None:
                    self.calm_since[role] = now
                elif now - since >= self.window and cur > 1:
                    self.target.scale(POOL, role, cur - 1, dry_run=False)
                    self.calm_since[role] = now
            else:
                self.calm_since[role] = None


class DynamoPlanner:
    """Dynamo-like throughput planner (field notes §6) on the same profiled capacities."""

    def __init__(self, target: SimScaleTarget, *, start: float, interval: float = 180.0) -> None:
        self.target = target
        self.interval = interval
        # like Dynamo's planner loop, the first adjustment comes one full interval after start
        # (it observes that interval's metrics), not at the first tick
        self.last = start
        self.reqs: deque[CompletedRequest] = deque(maxlen=200_000)

    def observe(self, req: CompletedRequest) -> None:
        self.reqs.append(req)

    def __call__(self, twin: Twin, now: float) -> None:
        if now - self.last < self.interval:
            return
        start = now - self.interval
        window = [r for r in self.reqs if r.decode.finished > start]
        self.last = now
        if not window:
            return  # missing metrics = unknown: hold (it never scales down at zero traffic)
        span = self.interval
        rate = len(window) / span
        isl = sum(r.prompt_tokens for r in window) / len(window)
        osl = sum(r.output_tokens for r in window) / len(window)
        prompt = sum(r.prompt_tokens for r in window)
        hit = sum(r.cached_tokens for r in window) / prompt if prompt else 0.0
        p = max(1, min(MAX_PER_ROLE, math.ceil(rate * isl * (1 - hit) / PREFILL_CAPACITY)))
        d = max(1, min(MAX_PER_ROLE, math.ceil(rate * osl / DECODE_CAPACITY)))
        if p + d > GPU_BUDGET:
            f = GPU_BUDGET / (p + d)
            p, d = max(1, math.floor(p * f)), max(1, math.floor(d * f))
        for role, n in ((c.ROLE_PREFILL, p), (c.ROLE_DECODE, d)):
            if self.target.status(POOL, role).replicas != n:
                self.target.scale(POOL, role, n, dry_run=False)


def run(
    scenario: str,
    policy: str,
    *,
    duration: float | None = None,
    seed: int = 0,
    static: tuple[int, int] | None = None,
    interval: float = 15.0,
    arrival_side: bool = True,
    probe: Callable[[Twin, float, Meter, AuditEntry | None], None] | None = None,
    scorer_weights: bool = True,
    warm_hold: float | None = None,
    decider: DeciderConfig | None = None,
    listen: Callable[[CompletedRequest], None] | None = None,
    tune: Mapping[str, Any] | None = None,
) -> RunResult:
    """One scenario (or Mooncake .jsonl trace) under one policy; see the module doc.
    `probe` is called after every tick; `listen` with every completed request, from the start;
    `tune` replaces fields of pd-observer's `PoolConfig` (an A/B, e.g.
    `tune={"decode_kv_target": None}`)."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; one of {', '.join(POLICIES)}")
    wall0 = time.monotonic()
    meter = Meter()
    if listen is not None:
        meter.listeners.append(listen)
    window = RecordWindow(pool_by_pod_prefix([POOL], POOL), window_seconds=60.0)
    rec_sink = TwinRecordSink(window.add_records)
    sinks: list[Any] = [meter]
    if policy == "pd-observer":
        sinks.append(rec_sink)
    twin = build_twin(scenario, sink=Fanout(sinks), seed=seed, duration=duration, start=START)
    target = SimScaleTarget(twin.actuator)
    if static is not None:
        twin.actuator.set_replicas(POOL, c.ROLE_PREFILL, static[0])
        twin.actuator.set_replicas(POOL, c.ROLE_DECODE, static[1])
        twin.run_until(twin.now)  # pods added by set_replicas start cold; make them ready now
        for pods in twin.fleet.pods.values():
            for pod in pods:
                if not pod.draining:
                    pod.ready = True
    act: Policy | None = None
    audit: MemoryAuditSink | None = None
    detail = ""
    if policy == "saturation":
        sat = SaturationPolicy(target)
        sat.meter = meter
        act = sat
    elif policy == "dynamo":
        dyn = DynamoPlanner(target, start=twin.now)
        meter.listeners.append(dyn.observe)
        act = dyn
    elif policy == "pd-observer":
        cfg = replace(pool_config(decider=decider), **(tune or {}))
        clock = TwinClock(twin.now)

        def decode_gauges(pool: str, now: float) -> DecodeGauges:
            # what a deployment scrapes from the decode pods: vLLM kv_cache_usage_perc and
            # num_preemptions_total
            pods = [p for p in meter.pods if p.pool == pool and p.role == c.ROLE_DECODE]
            if not pods:
                return DecodeGauges()
            return DecodeGauges(
                {p.pod: p.kv_usage for p in pods}, {p.pod: float(p.preemptions) for p in pods}
            )

        signals = RecordSignals(
            decode_tokens_per_s_per_replica=DECODE_CAPACITY,
            ttft_min_seconds=TTFT_SLO,
            window_seconds=60.0,
            decode_gauges=decode_gauges if arrival_side else None,
        )

        def decode_replicas(pool: str) -> int | None:
            return target.status(pool, c.ROLE_DECODE).ready

        window.start(twin.now)

        def queue(pool: str, now: float) -> QueueReading:
            # what a real deployment scrapes: vLLM num_requests_waiting of the prefill pods and
            # the EPP's arrival counter (llm_d_epp_request_total) — no oracle information
            waiting = sum(p.waiting for p in meter.pods if p.pool == pool and p.role == c.ROLE_PREFILL)
            return QueueReading(waiting=waiting, arrived_total=float(twin.fleet.arrived))

        source = ObserverSource(
            window,
            signals,
            decode_replicas=decode_replicas,
            learn_capacity=False,
            queue=queue if arrival_side else None,
        )
        audit = MemoryAuditSink(100)
        ctl = Controller(
            config=Config({POOL: cfg}),
            mode=Mode.APPLY,
            scale=target,
            weights=target if scorer_weights else None,
            source=source,
            clock=clock,
            sleeper=clock,
            audit=audit,
            interval_seconds=interval,
        )

        hold = WARM_START_HOLD_SECONDS if warm_hold is None else warm_hold
        warm_start(ctl, target, twin.now, hold_seconds=hold)

        def tick(tw: Twin, now: float) -> None:
            clock.t = now
            ctl.tick()

        act = tick
    gpu_seconds = 0.0
    t = twin.now
    while t < twin.end:
        gpus = _gpus(twin)
        nxt = min(twin.end, t + interval)
        twin.run_until(nxt)
        gpu_seconds += gpus * (nxt - t)
        t = nxt
        if act is not None:
            act(twin, t)
        if probe is not None:
            probe(twin, t, meter, audit.entries[-1] if audit is not None and audit.entries else None)
    # requests in flight at the end are followed to completion — no arrivals after the end (the
    # workload stops there), no control action, no GPU time counted — so each is judged by its
    # own first token: one decoding at the end has met or missed the target already
    stop = twin.end + DRAIN_SECONDS
    while meter.total < twin.fleet.arrived and twin.now < stop:
        twin.run_until(min(stop, twin.now + interval))
    st = twin.actuator.get_state().pools[POOL]
    arrived = max(twin.fleet.arrived, meter.total)
    return RunResult(
        scenario=scenario,
        policy=policy if static is None else f"static {static[0]}:{static[1]}",
        requests=arrived,
        # requests still unfinished after the drain count as TTFT misses
        ttft_attainment=meter.ttft_good / arrived if arrived else 1.0,
        itl_attainment=meter.itl_good / meter.itl_total if meter.itl_total else 1.0,
        gpu_hours=gpu_seconds / 3600.0,
        scaling_actions=target.actions,
        weight_changes=target.weight_changes,
        decider_changes=target.decider_changes,
        final_replicas={r: st.replicas[r].desired for r in c.ROLES},
        wall_seconds=time.monotonic() - wall0,
        detail=detail,
    )
