"""The P/D fleet model: prefill and decode pods, tiered prefix caches, EPP routing, replicas.

Driven by `simulator.engine.Simulation` (simulated clock, no I/O): a request arrives at the
router, the EPP picks a decode pod, the P/D decider (`nonCachedTokens`) chooses local prefill
on that pod or a prefill pod; the prefill pod batches (time = a + b * uncached tokens + load
cost of hits from lower tiers), KV moves over NIXL (tokens * bytes / bandwidth), the decode pod
runs continuous batching (step = a + b * batch + c * resident KV tokens) with recompute
preemption when KV is full. Everything observable goes to a `FleetSink`.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from observer import conventions as c
from simulator import router
from simulator.cache import TIER_ORDER, TieredPrefixCache
from simulator.engine import Simulation
from simulator.events import (
    ArrivedRequest,
    CompletedRequest,
    EngineTiming,
    FleetEvent,
    FleetSink,
    KvEvent,
    PodSnapshot,
)
from simulator.profile import Profile
from simulator.workload import RequestSpec

# vLLM source label of prompt_tokens_cached_by_source per tier (inverse of conventions' map).
TIER_TO_CACHED_SOURCE: dict[str, str] = {c.TIER_HBM: "device", c.TIER_DRAM: "host", c.TIER_DISK: "disk"}

EVENT_SCALE = "scale"
EVENT_POD_READY = "pod_ready"
EVENT_POD_DRAINING = "pod_draining"
EVENT_POD_REMOVED = "pod_removed"
EVENT_WEIGHTS_REQUESTED = "weights_requested"
EVENT_WEIGHTS_APPLIED = "weights_applied"
EVENT_DECIDER_REQUESTED = "decider_requested"
EVENT_DECIDER_APPLIED = "decider_applied"
EVENT_PHASE = "phase"


class NullSink:
    """Discards everything (benchmarks)."""

    def request_arrived(self, arrival: ArrivedRequest) -> None:
        return None

    def request_completed(self, request: CompletedRequest) -> None:
        return None

    def pods_sampled(self, now: float, pods: tuple[PodSnapshot, ...]) -> None:
        return None

    def kv_events(self, events: tuple[KvEvent, ...]) -> None:
        return None

    def fleet_event(self, event: FleetEvent) -> None:
        return None


@dataclass
class MemorySink:
    """Keeps what the fleet emits, in memory (tests, in-process consumers). Bounded lists."""

    max_items: int = 2_000_000
    arrivals: list[ArrivedRequest] = field(default_factory=list)
    requests: list[CompletedRequest] = field(default_factory=list)
    samples: list[tuple[float, tuple[PodSnapshot, ...]]] = field(default_factory=list)
    kv: list[KvEvent] = field(default_factory=list)
    events: list[FleetEvent] = field(default_factory=list)
    dropped: int = 0

    def _keep(self, bucket: list[object], item: object) -> None:
        if len(bucket) < self.max_items:
            bucket.append(item)
        else:
            self.dropped += 1

    def request_arrived(self, arrival: ArrivedRequest) -> None:
        self._keep(self.arrivals, arrival)  # type: ignore[arg-type]

    def request_completed(self, request: CompletedRequest) -> None:
        self._keep(self.requests, request)  # type: ignore[arg-type]

    def pods_sampled(self, now: float, pods: tuple[PodSnapshot, ...]) -> None:
        self._keep(self.samples, (now, pods))  # type: ignore[arg-type]

    def kv_events(self, events: tuple[KvEvent, ...]) -> None:
        for e in events:
            self._keep(self.kv, e)  # type: ignore[arg-type]

    def fleet_event(self, event: FleetEvent) -> None:
        self._keep(self.events, event)  # type: ignore[arg-type]


class _Req:
    """Mutable per-request state inside the model (never leaves it)."""

    __slots__ = (
        "arrival",
        "blocks",
        "cached",
        "d_arrival",
        "d_first",
        "d_sched",
        "decode_pod",
        "epoch",
        "gen",
        "local",
        "needs_prefill",
        "output",
        "p_arrival",
        "p_first",
        "p_sched",
        "prefill_pod",
        "prompt",
        "spec",
        "start_step",
        "trace_seed",
        "xfer",
    )

    def __init__(self, spec: RequestSpec, arrival: float, trace_seed: int) -> None:
        self.spec = spec
        self.arrival = arrival
        self.trace_seed = trace_seed
        self.prompt = spec.prompt_tokens
        self.output = max(1, spec.output_tokens)
        self.blocks = spec.block_hashes
        self.local = False
        self.prefill_pod: PrefillPod | None = None
        self.decode_pod: DecodePod | None = None
        self.cached: dict[str, int] = {}
        self.p_arrival = self.p_sched = self.p_first = 0.0
        self.d_arrival = self.d_sched = self.d_first = -1.0
        self.xfer = 0.0
        self.gen = 0
        self.start_step = 0
        self.epoch = 0
        self.needs_prefill = 0


class Pod:
    """State and cumulative counters shared by both roles."""

    role: str = ""

    def __init__(self, fleet: Fleet, name: str, cache: TieredPrefixCache) -> None:
        self.fleet = fleet
        self.name = name
        self.cache = cache
        self.ready = False
        self.draining = False
        self.removed = False
        self.inbound = 0  # requests routed here that have not arrived yet
        self.prefix_queries = 0
        self.prefix_hits = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.cached_by_source = dict.fromkeys(TIER_TO_CACHED_SOURCE.values(), 0)
        self.prompt_by_source = {
            c.VLLM_SOURCE_LOCAL_COMPUTE: 0,
            c.VLLM_SOURCE_LOCAL_CACHE_HIT: 0,
            c.VLLM_SOURCE_EXTERNAL_KV: 0,
        }
        self.preemptions = 0
        self.busy_seconds = 0.0
        self.queue_area = 0.0  # integral of waiting count over time (Little's law)
        self.queue_arrivals = 0
        self._q_last = fleet.sim.now

    # router.Candidate
    @property
    def queue_len(self) -> int:
        raise NotImplementedError

    @property
    def load(self) -> int:
        raise NotImplementedError

    @property
    def kv_usage(self) -> float:
        raise NotImplementedError

    @property
    def running(self) -> int:
        raise NotImplementedError

    def idle(self) -> bool:
        raise NotImplementedError

    def _queue_tick(self, now: float) -> None:
        self.queue_area += self.queue_len * (now - self._q_last)
        self._q_last = now

    def lookup(self, req: _Req, now: float) -> tuple[dict[str, int], int, float]:
        """Prefix-cache lookup: cached tokens per tier, uncached tokens, tier load seconds."""
        prof = self.fleet.profile
        bt = prof.block_tokens
        tiers = self.cache.lookup(req.blocks, now)
        cached = [0, 0, 0]
        for i, idx in enumerate(tiers):
            cached[idx] += min(bt, req.prompt - i * bt)
        total = sum(cached)
        if total >= req.prompt and tiers:  # vLLM always computes at least the last token
            cached[tiers[-1]] -= total - req.prompt + 1
            total = req.prompt - 1
        total = max(0, total)
        by_tier = {TIER_ORDER[i]: cached[i] for i in range(3) if cached[i] > 0}
        bpt = prof.kv_bytes_per_token
        load = (
            cached[1] * bpt / prof.cache.dram_load_bytes_per_s
            + cached[2] * bpt / prof.cache.disk_load_bytes_per_s
        )
        self.prefix_queries += req.prompt
        self.prefix_hits += cached[0]
        self.prompt_tokens += req.prompt
        for i, tier in enumerate(TIER_ORDER):
            self.cached_by_source[TIER_TO_CACHED_SOURCE[tier]] += cached[i]
        uncached = req.prompt - total
        self.prompt_by_source[c.VLLM_SOURCE_LOCAL_COMPUTE] += uncached
        self.prompt_by_source[c.VLLM_SOURCE_LOCAL_CACHE_HIT] += cached[0]
        self.prompt_by_source[c.VLLM_SOURCE_EXTERNAL_KV] += cached[1] + cached[2]
        return by_tier, uncached, load

    def store_prompt(self, req: _Req, now: float) -> None:
        full = req.prompt // self.fleet.profile.block_tokens
        if full:
            self.cache.store(req.blocks[:full], now)

    def snapshot(self) -> PodSnapshot:
        prof = self.fleet.profile
        disk_bytes = float(self.cache.used(c.TIER_DISK) * prof.block_tokens * prof.kv_bytes_per_token)
        return PodSnapshot(
            pod=self.name,
            role=self.role,
            model=prof.model,
            pool=prof.pool,
            ready=self.ready and not self.draining,
            running=self.running,
            waiting=self.queue_len,
            kv_usage=min(1.0, self.kv_usage),
            cpu_offload_usage=self.cache.usage(c.TIER_DRAM),
            disk_usage_bytes=disk_bytes,
            prefix_queries=self.prefix_queries,
            prefix_hits=self.prefix_hits,
            prompt_tokens=self.prompt_tokens,
            generation_tokens=self.generation_tokens,
            cached_by_source=dict(self.cached_by_source),
            prompt_by_source=dict(self.prompt_by_source),
            preemptions=self.preemptions,
            evictions_by_tier=dict(self.cache.evictions),
            demotions_by_tier=dict(self.cache.demotions),
            busy_seconds=self.busy_seconds,
        )


class PrefillPod(Pod):
    """FIFO queue, batched prefill up to max_batched_tokens per step."""

    role = c.ROLE_PREFILL

    def __init__(self, fleet: Fleet, name: str, cache: TieredPrefixCache) -> None:
        super().__init__(fleet, name, cache)
        self.queue: deque[_Req] = deque()
        self.batch: list[_Req] = []
        self.held_tokens = 0  # KV held for the running batch

    @property
    def queue_len(self) -> int:
        return len(self.queue)

    @property
    def load(self) -> int:
        return len(self.queue) + len(self.batch)

    @property
    def running(self) -> int:
        return len(self.batch)

    @property
    def kv_usage(self) -> float:
        return self.held_tokens / self.fleet.profile.decode.kv_capacity_tokens

    def idle(self) -> bool:
        return not self.queue and not self.batch and self.inbound == 0

    def arrive(self, req: _Req) -> None:
        now = self.fleet.sim.now
        self.inbound -= 1
        self._queue_tick(now)
        req.p_arrival = now
        self.queue.append(req)
        self.queue_arrivals += 1
        if not self.batch:
            self._start(now)

    def _start(self, now: float) -> None:
        prof = self.fleet.profile
        budget = prof.prefill.max_batched_tokens
        bt = prof.block_tokens
        tokens = 0
        load = 0.0
        self._queue_tick(now)
        while self.queue:
            req = self.queue[0]
            if self.batch:
                est = req.prompt - min(req.prompt, self.cache.match_length(req.blocks) * bt)
                if tokens + est > budget:
                    break
            self.queue.popleft()
            req.p_sched = now
            req.cached, uncached, ld = self.lookup(req, now)
            tokens += uncached
            load += ld
            self.batch.append(req)
            self.held_tokens += req.prompt
        if not self.batch:
            return
        dt = prof.prefill.step_overhead_s + prof.prefill.seconds_per_token * tokens + load
        self.busy_seconds += dt
        self.fleet.sim.after(dt, self._finish)

    def _finish(self) -> None:
        fleet = self.fleet
        now = fleet.sim.now
        prof = fleet.profile
        batch, self.batch = self.batch, []
        for req in batch:
            req.p_first = now
            self.store_prompt(req, now)
            self.generation_tokens += 1
            req.xfer = req.prompt * prof.kv_bytes_per_token / prof.nixl_bytes_per_s
            self.held_tokens -= req.prompt
            decode = req.decode_pod
            assert decode is not None
            fleet.sim.after(req.xfer, lambda r=req, d=decode: d.arrive(r))  # type: ignore[misc]
        if self.queue:
            self._start(now)
        else:
            fleet.maybe_remove(self)


class DecodePod(Pod):
    """Continuous batching with KV capacity and recompute preemption; local prefill."""

    role = c.ROLE_DECODE

    def __init__(self, fleet: Fleet, name: str, cache: TieredPrefixCache) -> None:
        super().__init__(fleet, name, cache)
        self.waiting: deque[_Req] = deque()
        self.run_set: dict[int, _Req] = {}  # admission order; popitem() = most recent
        self.finish_heap: list[tuple[int, int, int, _Req]] = []
        self.kv_used = 0
        self.step_count = 0
        self.stepping = False
        self._seq = 0
        self._first_pending: list[_Req] = []

    @property
    def queue_len(self) -> int:
        return len(self.waiting)

    @property
    def load(self) -> int:
        return len(self.waiting) + len(self.run_set)

    @property
    def running(self) -> int:
        return len(self.run_set)

    @property
    def kv_usage(self) -> float:
        return self.kv_used / self.fleet.profile.decode.kv_capacity_tokens

    def idle(self) -> bool:
        return not self.waiting and not self.run_set and self.inbound == 0

    def arrive(self, req: _Req) -> None:
        now = self.fleet.sim.now
        self.inbound -= 1
        self._queue_tick(now)
        req.d_arrival = now
        if not req.local:
            self.prompt_tokens += req.prompt
            self.prompt_by_source[c.VLLM_SOURCE_EXTERNAL_KV] += req.prompt
        self.waiting.append(req)
        self.queue_arrivals += 1
        if not self.stepping:
            self._start(now)

    # `_start` and `_finish_step` run once per decode step (over a million times in a simulated
    # hour): attributes are read into locals and `_queue_tick` is inlined; same arithmetic, same order.
    def _start(self, now: float) -> None:
        dp = self.fleet.profile.decode
        cap = dp.kv_capacity_tokens
        prefill_tokens = 0
        load = 0.0
        waiting = self.waiting
        run_set = self.run_set
        self.queue_area += len(waiting) * (now - self._q_last)  # Pod._queue_tick
        self._q_last = now
        while waiting and len(run_set) < dp.max_num_seqs:
            req = waiting[0]
            need = req.prompt + req.gen
            if run_set and self.kv_used + need > cap:
                break
            waiting.popleft()
            if req.d_sched < 0:
                req.d_sched = now
            if req.needs_prefill:
                prefill_tokens += req.needs_prefill  # recompute after preemption
                req.needs_prefill = 0
            elif req.local and req.gen == 0:
                req.cached, uncached, ld = self.lookup(req, now)
                prefill_tokens += uncached
                load += ld
            self.kv_used += need
            req.start_step = self.step_count
            self._seq += 1
            run_set[self._seq] = req
            heapq.heappush(
                self.finish_heap, (self.step_count + req.output - req.gen, self._seq, req.epoch, req)
            )
            if req.d_first < 0:
                self._first_pending.append(req)
        # Grow KV by one token per running sequence; preempt (recompute) the newest when full.
        while len(run_set) > 1 and self.kv_used + len(run_set) > cap:
            _, victim = run_set.popitem()
            gen = victim.gen + (self.step_count - victim.start_step)
            self.kv_used -= victim.prompt + gen
            victim.gen = gen
            victim.epoch += 1
            victim.needs_prefill = victim.prompt + gen
            waiting.appendleft(victim)
            self.preemptions += 1
            if victim in self._first_pending:
                self._first_pending.remove(victim)
        n = len(run_set)
        if not n:
            self.stepping = False
            return
        self.stepping = True
        dt = (
            dp.step_overhead_s
            + dp.seconds_per_seq * n
            + dp.seconds_per_kv_token * self.kv_used
            + dp.local_prefill_seconds_per_token * prefill_tokens
            + load
        )
        self.busy_seconds += dt
        self.fleet.sim.after(dt, self._finish_step)

    def _finish_step(self) -> None:
        fleet = self.fleet
        now = fleet.sim.now
        run_set = self.run_set
        n = len(run_set)
        step = self.step_count = self.step_count + 1
        self.kv_used += n
        self.generation_tokens += n
        pending = self._first_pending
        if pending:
            for req in pending:
                req.d_first = now
                if req.local:
                    self.store_prompt(req, now)
            pending.clear()
        heap = self.finish_heap
        while heap and heap[0][0] <= step:
            _, seq, epoch, req = heapq.heappop(heap)
            if epoch != req.epoch or seq not in run_set:
                continue
            del run_set[seq]
            self.kv_used -= req.prompt + req.output
            fleet.complete(req, now)
        if run_set or self.waiting:
            self._start(now)
        else:
            self.stepping = False
            fleet.maybe_remove(self)


@dataclass(frozen=True, slots=True)
class RoleReplicas:
    """Replica counts of one role."""

    desired: int
    ready: int
    starting: int
    draining: int


@dataclass(frozen=True, slots=True)
class PoolState:
    """What the actuator reports about one pool."""

    pool: str
    replicas: Mapping[str, RoleReplicas]
    weights_active: Mapping[str, float]
    weights_pending: Mapping[str, float] | None
    weights_effective_at: float | None
    ready: bool
    decider_active: int = 0  # P/D decider nonCachedTokens routing uses now
    decider_pending: int | None = None  # requested, applies when the EPP restart completes


@dataclass(frozen=True, slots=True)
class FleetState:
    """Snapshot of every pool (one pool per fleet today)."""

    time: float
    pools: Mapping[str, PoolState]


class Fleet:
    """One model pool of prefill and decode pods behind an EPP, on a Simulation."""

    def __init__(
        self,
        sim: Simulation,
        profile: Profile,
        sink: FleetSink,
        *,
        seed: int = 0,
        prefill_replicas: int | None = None,
        decode_replicas: int | None = None,
        kv_events: bool | None = None,
    ) -> None:
        self.sim = sim
        self.profile = profile
        self.sink = sink
        self.seed = seed
        self.rng = random.Random(f"fleet:{seed}")
        self.kv_events_enabled = profile.kv_events if kv_events is None else kv_events
        self.pods: dict[str, list[Pod]] = {c.ROLE_PREFILL: [], c.ROLE_DECODE: []}
        self._serial = {c.ROLE_PREFILL: 0, c.ROLE_DECODE: 0}
        self.desired = {c.ROLE_PREFILL: 0, c.ROLE_DECODE: 0}
        self.weights: dict[str, float] = dict(profile.epp.weights)
        self.pending_weights: dict[str, float] | None = None
        self.weights_effective_at: float | None = None
        self._weights_token = 0
        self.non_cached_tokens = profile.epp.non_cached_tokens  # the P/D decider threshold in use
        self.pending_non_cached_tokens: int | None = None
        self._decider_token = 0
        self.backlog: deque[_Req] = deque()  # at the router while no pod is ready
        self.in_flight = 0
        self.in_flight_area = 0.0
        self._if_last = sim.now
        self.completed = 0
        self.arrived = 0
        self._workloads: list[Iterator[RequestSpec]] = []
        self._removed_events: list[KvEvent] = []
        n_pre = profile.prefill.replicas if prefill_replicas is None else prefill_replicas
        n_dec = profile.decode.replicas if decode_replicas is None else decode_replicas
        for role, n in ((c.ROLE_PREFILL, n_pre), (c.ROLE_DECODE, n_dec)):
            self.desired[role] = n
            for _ in range(n):
                self._add_pod(role, ready=True)
        self._sampling = False

    # -- pods ----------------------------------------------------------------------------
    def _add_pod(self, role: str, *, ready: bool) -> Pod:
        prof = self.profile
        self._serial[role] += 1
        name = f"{prof.pool}-{role}-{self._serial[role]}"
        cp = prof.cache
        caps = (
            (cp.hbm_blocks, cp.dram_blocks, cp.disk_blocks)
            if role == c.ROLE_PREFILL
            else (cp.decode_hbm_blocks, cp.decode_dram_blocks, cp.decode_disk_blocks)
        )
        cache = TieredPrefixCache(
            caps,
            pod=name,
            model=prof.model,
            block_tokens=prof.block_tokens,
            event_limit=prof.kv_event_buffer if self.kv_events_enabled else 0,
        )
        pod: Pod = PrefillPod(self, name, cache) if role == c.ROLE_PREFILL else DecodePod(self, name, cache)
        pod.ready = ready
        self.pods[role].append(pod)
        if not ready:
            self.sim.after(prof.cold_start_s, lambda: self._pod_ready(pod))
        return pod

    def _pod_ready(self, pod: Pod) -> None:
        if pod.removed or pod.draining:
            return
        pod.ready = True
        self.event(EVENT_POD_READY, pod=pod.name, role=pod.role)
        self._drain_backlog()

    def ready_pods(self, role: str) -> list[Pod]:
        return [p for p in self.pods[role] if p.ready and not p.draining]

    def maybe_remove(self, pod: Pod) -> None:
        if pod.draining and not pod.removed and pod.idle():
            pod.removed = True
            self.pods[pod.role].remove(pod)
            self._removed_events.extend(pod.cache.drain_events())
            self.event(EVENT_POD_REMOVED, pod=pod.name, role=pod.role)

    def set_replicas(self, role: str, n: int) -> None:
        """Scale a role: new pods become ready after cold start; removed pods drain first."""
        if role not in self.pods:
            raise ValueError(f"unknown role {role!r}; expected one of {sorted(self.pods)}")
        if n < 0:
            raise ValueError("replicas must be >= 0")
        if role == c.ROLE_DECODE and n < 1:
            raise ValueError("a pool needs at least one decode replica")
        active = [p for p in self.pods[role] if not p.draining]
        before = len(active)
        self.desired[role] = n
        if n > before:
            for _ in range(n - before):
                self._add_pod(role, ready=False)
        elif n < before:
            # Cancel pods still starting first (newest first), then drain ready ones.
            victims = sorted(active, key=lambda p: (p.ready, -self._serial_of(p)))[: before - n]
            for pod in victims:
                pod.draining = True
                self.event(EVENT_POD_DRAINING, pod=pod.name, role=role)
                self.maybe_remove(pod)
        self.event(EVENT_SCALE, pool=self.profile.pool, role=role, before=before, after=n)

    def replace_pod(self, role: str) -> str | None:
        """A pod replaced under a new name (node lost, rolling restart): the oldest ready pod of
        `role` drains and a new one starts (ready after the cold start); `desired` is unchanged.
        Returns the drained pod's name, None when the role has no ready pod."""
        ready = sorted(self.ready_pods(role), key=self._serial_of)
        if not ready:
            return None
        old = ready[0]
        self._add_pod(role, ready=False)
        old.draining = True
        self.event(EVENT_POD_DRAINING, pod=old.name, role=role)
        self.maybe_remove(old)
        return old.name

    @staticmethod
    def _serial_of(pod: Pod) -> int:
        return int(pod.name.rsplit("-", 1)[1])

    def set_weights(self, weights: Mapping[str, float]) -> float:
        """Request new scorer weights; they apply after the EPP restart delay. Returns when."""
        clean = {str(k): float(v) for k, v in weights.items()}
        if any(v < 0 or math.isnan(v) for v in clean.values()):
            raise ValueError("scorer weights must be >= 0")
        self._weights_token += 1
        token = self._weights_token
        at = self.sim.now + self.profile.epp.restart_delay_s
        self.pending_weights = clean
        self.weights_effective_at = at
        self.event(EVENT_WEIGHTS_REQUESTED, pool=self.profile.pool, weights=dict(clean), effective_at=at)

        def apply() -> None:
            if token != self._weights_token or self.pending_weights is None:
                return
            self.weights = self.pending_weights
            self.pending_weights = None
            self.weights_effective_at = None
            self.event(EVENT_WEIGHTS_APPLIED, pool=self.profile.pool, weights=dict(self.weights))

        self.sim.at(at, apply)
        return at

    def set_decider_threshold(self, tokens: int) -> float:
        """Request a new P/D decider `nonCachedTokens`; like weights, it applies after the EPP
        restart delay. Returns when."""
        if tokens < 0:
            raise ValueError("nonCachedTokens must be >= 0")
        self._decider_token += 1
        token = self._decider_token
        at = self.sim.now + self.profile.epp.restart_delay_s
        self.pending_non_cached_tokens = int(tokens)
        self.event(
            EVENT_DECIDER_REQUESTED, pool=self.profile.pool, non_cached_tokens=int(tokens), effective_at=at
        )

        def apply() -> None:
            if token != self._decider_token or self.pending_non_cached_tokens is None:
                return
            self.non_cached_tokens = self.pending_non_cached_tokens
            self.pending_non_cached_tokens = None
            self.event(
                EVENT_DECIDER_APPLIED, pool=self.profile.pool, non_cached_tokens=self.non_cached_tokens
            )

        self.sim.at(at, apply)
        return at

    def state(self) -> FleetState:
        reps = {}
        for role, pods in self.pods.items():
            reps[role] = RoleReplicas(
                desired=self.desired[role],
                ready=sum(1 for p in pods if p.ready and not p.draining),
                starting=sum(1 for p in pods if not p.ready and not p.draining),
                draining=sum(1 for p in pods if p.draining),
            )
        pool = PoolState(
            pool=self.profile.pool,
            replicas=reps,
            weights_active=dict(self.weights),
            weights_pending=None if self.pending_weights is None else dict(self.pending_weights),
            weights_effective_at=self.weights_effective_at,
            ready=reps[c.ROLE_DECODE].ready > 0,
            decider_active=self.non_cached_tokens,
            decider_pending=self.pending_non_cached_tokens,
        )
        return FleetState(time=self.sim.now, pools={pool.pool: pool})

    def event(self, kind: str, **detail: object) -> None:
        self.sink.fleet_event(FleetEvent(time=self.sim.now, kind=kind, detail=detail))

    # -- workload ------------------------------------------------------------------------
    def add_workload(self, requests: Iterator[RequestSpec]) -> None:
        """Feed a time-ordered stream (arrival = seconds after sim.start), pulled lazily."""
        self._workloads.append(requests)
        self._pull(requests)

    def _pull(self, stream: Iterator[RequestSpec]) -> None:
        spec = next(stream, None)
        if spec is None:
            return

        def fire() -> None:
            self.submit(spec)
            self._pull(stream)

        self.sim.at(self.sim.start + spec.arrival, fire)

    def submit(self, spec: RequestSpec) -> None:
        """A request arrives at the router now."""
        now = self.sim.now
        self._if_tick(now)
        self.in_flight += 1
        self.arrived += 1
        req = _Req(spec, now, self.rng.getrandbits(63))
        self.sink.request_arrived(
            ArrivedRequest(request_id=spec.request_id, tenant=spec.tenant, model=self.profile.model, at=now)
        )
        self.sim.after(self.profile.epp.routing_overhead_s, lambda: self._route(req))

    def _route(self, req: _Req) -> None:
        decoders = self.ready_pods(c.ROLE_DECODE)
        if not decoders:
            self.backlog.append(req)
            return
        prof = self.profile
        i, matched = router.pick(decoders, req.blocks, self.weights, self.rng)
        decode = decoders[i]
        assert isinstance(decode, DecodePod)
        req.decode_pod = decode
        decode.inbound += 1
        uncached = req.prompt - min(req.prompt, matched * prof.block_tokens)
        prefillers = self.ready_pods(c.ROLE_PREFILL)
        if uncached < self.non_cached_tokens or not prefillers:
            req.local = True
            decode.arrive(req)
            return
        j, _ = router.pick(prefillers, req.blocks, self.weights, self.rng)
        prefill = prefillers[j]
        assert isinstance(prefill, PrefillPod)
        req.prefill_pod = prefill
        prefill.inbound += 1
        prefill.arrive(req)

    def _drain_backlog(self) -> None:
        while self.backlog and self.ready_pods(c.ROLE_DECODE):
            self._route(self.backlog.popleft())

    def _if_tick(self, now: float) -> None:
        self.in_flight_area += self.in_flight * (now - self._if_last)
        self._if_last = now

    def complete(self, req: _Req, now: float) -> None:
        self._if_tick(now)
        self.in_flight -= 1
        self.completed += 1
        prof = self.profile
        decode = req.decode_pod
        assert decode is not None
        pre = req.prefill_pod
        prefill_timing = None
        if pre is not None:
            prefill_timing = EngineTiming(
                pod=pre.name,
                role=c.ROLE_PREFILL,
                arrival=req.p_arrival,
                scheduled=req.p_sched,
                first_token=req.p_first,
                finished=req.p_first,
                prompt_tokens=req.prompt,
                output_tokens=1,
                cached_by_tier=dict(req.cached),
            )
        decode_timing = EngineTiming(
            pod=decode.name,
            role=c.ROLE_DECODE,
            arrival=req.d_arrival,
            scheduled=req.d_sched,
            first_token=req.d_first,
            finished=now,
            prompt_tokens=req.prompt,
            output_tokens=req.output,
            cached_by_tier=dict(req.cached) if pre is None else {},
        )
        self.sink.request_completed(
            CompletedRequest(
                request_id=req.spec.request_id,
                trace_seed=req.trace_seed,
                tenant=req.spec.tenant,
                model=prof.model,
                arrival=req.arrival,
                prefill=prefill_timing,
                decode=decode_timing,
                prompt_tokens=req.prompt,
                output_tokens=req.output,
                cached_by_tier=dict(req.cached),
                kv_transfer_seconds=req.xfer,
            )
        )

    # -- sampling ------------------------------------------------------------------------
    def start_sampling(self) -> None:
        """Emit PodSnapshots (and buffered KV events) every sample_interval_s."""
        if self._sampling:
            return
        self._sampling = True
        self.sim.after(self.profile.sample_interval_s, self._sample)

    def _sample(self) -> None:
        self.sample_now()
        self.sim.after(self.profile.sample_interval_s, self._sample)

    def all_pods(self) -> list[Pod]:
        return [p for pods in self.pods.values() for p in pods]

    def sample_now(self) -> None:
        now = self.sim.now
        pods = self.all_pods()
        for p in pods:
            p._queue_tick(now)
        self._if_tick(now)
        self.sink.pods_sampled(now, tuple(p.snapshot() for p in pods))
        self.flush_kv_events()

    def flush_kv_events(self) -> None:
        events = self._removed_events
        self._removed_events = []
        for p in self.all_pods():
            events.extend(p.cache.drain_events())
        if events:
            self.sink.kv_events(tuple(events))
