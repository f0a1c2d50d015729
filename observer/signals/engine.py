"""The live fleet-signals engine: a stateful shell around the pure signal functions.

It is fed from two sides and ticked by the service (or a test) with `now` passed in:

- `add_records(records, now)` — the pipeline listener: new `RequestRecord`s after commit;
- `observe(snapshot)` / `observe_kv(snapshot)` — what a metric source / the KV-events index read;
- `tick(now) -> FleetSignals` — builds the per-window inputs (`TenantWindow`, `PoolWindow`,
  `PdDemand`, `SourceStatus`), advances the cascade and starvation state, returns a frozen
  snapshot with the evidence of every signal, and keeps it as `latest`.

Memory is bounded: at most `max_records` records (only those inside the window are kept),
`max_tenants` cascade baselines, `max_pods` pods; a pod's last known pool is forgotten once no
good reading has had it for `window_seconds + stale_after_seconds` (pods replaced under new
names come and go for as long as the service runs). No clock is read and no I/O is done here.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from observer import conventions as c
from observer.model import RequestRecord
from observer.signals import balance as bal
from observer.signals import cascade as casc
from observer.signals import residency, starvation
from observer.signals.freshness import freshness
from observer.signals.settings import SignalsSettings
from observer.signals.types import (
    BalanceSignal,
    CascadeSignal,
    CascadeState,
    DecodePressureSignal,
    Evictor,
    Freshness,
    PdDemand,
    PoolWindow,
    SourceStatus,
    StarvationSignal,
    StarvationState,
    TenantWindow,
)
from observer.sources.kvevents import KvSnapshot
from observer.sources.samples import FleetSnapshot, PodSample

DECODE_ROLES = (c.ROLE_DECODE, c.ROLE_BOTH)
PREFILL_ROLES = (c.ROLE_PREFILL, c.ROLE_BOTH)


@dataclass(frozen=True, slots=True)
class PodSignals:
    """One pod: tier usage (metrics) and tier movement (KV events; LMCache for DRAM evictions)."""

    pod: str
    pool: str
    role: str | None
    tier_usage: Mapping[str, float | None]  # hbm, dram: 0..1; disk: bytes
    queue: float | None  # waiting requests
    running: float | None
    eviction_rate_by_tier: Mapping[str, float]  # blocks/s removed from the tier (dram: LMCache evictions/s)
    demotion_rate_by_tier: Mapping[str, float]  # blocks/s moved down out of the tier
    kv_blocks_by_tier: Mapping[str, int] | None  # from KV events, None without them


@dataclass(frozen=True, slots=True)
class PoolSignals:
    """One pool: starvation, decode pressure and P/D balance, each with its evidence."""

    pool: str
    window: PoolWindow  # as judged (pre_decode_ttft_share gated by ttft_min_seconds)
    pre_decode_ttft_share: float | None  # raw Σ(queue+prefill+kv_transfer)/Σ ttft of the window
    ttft_p90: float | None
    starvation: StarvationSignal
    pressure: DecodePressureSignal
    balance: BalanceSignal
    demand: PdDemand


@dataclass(frozen=True, slots=True)
class TenantSignals:
    """One tenant: its cascade signal (with evictors) and the window it was judged on."""

    cascade: CascadeSignal
    requests: int
    tier_shares: Mapping[str, float] | None


@dataclass(frozen=True, slots=True)
class FleetSignals:
    """Everything the engine knows at `time`."""

    time: float
    window_seconds: float
    fleet_load: float | None
    fleet_load_kind: str
    tenants: tuple[TenantSignals, ...]
    pools: tuple[PoolSignals, ...]
    pods: tuple[PodSignals, ...]
    freshness: tuple[Freshness, ...]

    def tenant(self, name: str) -> TenantSignals | None:
        return next((t for t in self.tenants if t.cascade.tenant == name), None)

    def pool(self, name: str) -> PoolSignals | None:
        return next((p for p in self.pools if p.pool == name), None)

    @property
    def blind(self) -> bool:
        return any(f.blind for f in self.freshness)


@dataclass
class _Source:
    last_attempt: float | None = None
    last_success: float | None = None
    error: str | None = None


@dataclass
class _Inputs:
    snapshot: FleetSnapshot | None = None
    kv: KvSnapshot | None = None
    sources: dict[str, _Source] = field(default_factory=dict)


def _p90(values: list[float]) -> float | None:
    if not values:
        return None
    values.sort()
    return values[max(0, math.ceil(0.9 * len(values)) - 1)]


def _sum_known(values: Iterable[float | None]) -> float | None:
    vals = list(values)
    if not vals or any(v is None for v in vals):
        return None
    return float(sum(v for v in vals if v is not None))


class SignalEngine:
    """Thread-safe: the pipeline writer thread feeds records, the service thread ticks."""

    def __init__(self, settings: SignalsSettings | None = None) -> None:
        self.settings = settings or SignalsSettings()
        self._cascade_cfg = self.settings.cascade.config()
        self._starv_cfg = self.settings.starvation.config()
        self._balance_cfg = self.settings.balance.config()
        self._fresh_cfg = self.settings.freshness()
        self._lock = threading.Lock()
        self._records: deque[RequestRecord] = deque(maxlen=self.settings.max_records)
        self._inputs = _Inputs()
        self._cascade = CascadeState()
        self._starvation = StarvationState()
        self.latest: FleetSignals | None = None
        self.started_at: float | None = None  # first tick
        self._first_seen: Mapping[str, float] = {}  # tenant -> first record time (bounded)
        self._baseline_at: float | None = None  # last window folded into the cascade baselines
        self._episode_evictors: dict[str, tuple[Evictor, ...]] = {}  # firing tenant -> evictors named
        # last known pool of each pod and when a good reading last had it (records of a blind
        # source); pods absent from the good readings for `_pod_memory_seconds` are forgotten
        self._pod_pool: dict[str, tuple[str, float]] = {}
        self.records_dropped = 0  # records that fell off the bound while still in the window

    # ------------------------------------------------------------------ feeds
    def add_records(self, records: Sequence[RequestRecord], now: float) -> None:
        """Pipeline listener: cheap (append under a lock)."""
        if not records:
            return
        with self._lock:
            room = self._records.maxlen or 0
            overflow = len(self._records) + len(records) - room
            if overflow > 0:
                self.records_dropped += overflow
            self._records.extend(records)

    def observe(self, snapshot: FleetSnapshot) -> None:
        """A metric source's reading (ok or failed): updates samples and freshness."""
        with self._lock:
            src = self._inputs.sources.setdefault(snapshot.source, _Source())
            src.last_attempt = snapshot.time
            src.error = snapshot.error
            if snapshot.ok:
                src.last_success = snapshot.time
                self._inputs.snapshot = snapshot
                self._note_pods(snapshot)

    def _note_pods(self, snapshot: FleetSnapshot) -> None:
        """Under the lock, for a good reading: remember each pod's pool; forget the pods that no
        good reading has had for `_pod_memory_seconds` (replaced pods get new names: without
        this the map grew by every pod ever seen, until `max_pods` emptied it)."""
        at = snapshot.time
        pools = {p.pod: (p.pool, at) for p in snapshot.pods[: self.settings.max_pods]}
        horizon = at - self._pod_memory_seconds
        kept = {pod: v for pod, v in self._pod_pool.items() if v[1] >= horizon and pod not in pools}
        if len(kept) + len(pools) > self.settings.max_pods:
            kept = {}
        kept.update(pools)
        self._pod_pool = kept

    @property
    def _pod_memory_seconds(self) -> float:
        """How long a pod missing from the good readings keeps its pool: its records can still
        be in the window (`window_seconds`) for as long as the source may lag
        (`stale_after_seconds`)."""
        return self.settings.window_seconds + self.settings.stale_after_seconds

    @property
    def known_pods(self) -> int:
        """Pods whose last known pool is remembered (bounded by `max_pods`)."""
        return len(self._pod_pool)

    def observe_kv(self, snapshot: KvSnapshot) -> None:
        """The KV-events index: fresh while events keep arriving."""
        with self._lock:
            src = self._inputs.sources.setdefault(c.SOURCE_KV_EVENTS, _Source())
            times = [p.last_event_time for p in snapshot.pods if p.last_event_time is not None]
            # the newest event is the last success; the source ages while no event arrives
            src.last_attempt = max(times) if times else snapshot.time
            if times:
                src.last_success = max(times)
            src.error = None if times else "no KV events received"
            self._inputs.kv = snapshot

    def source_failed(self, source: str, now: float, error: str) -> None:
        """A source that raised (e.g. discovery failed) before producing a snapshot."""
        with self._lock:
            src = self._inputs.sources.setdefault(source, _Source())
            src.last_attempt = now
            src.error = error[:500]

    # ------------------------------------------------------------------ tick
    def tick(self, now: float) -> FleetSignals:
        s = self.settings
        with self._lock:
            if self.started_at is None:
                self.started_at = now - s.window_seconds if self._records else now
            # A window never reaches back before the engine started (rates over partial windows).
            span = max(min(s.window_seconds, now - self.started_at), s.interval_seconds)
            lo = now - s.window_seconds
            while self._records and self._records[0].end_time < lo:
                self._records.popleft()
            window = [r for r in self._records if lo <= r.end_time <= now]
            fresh = tuple(
                freshness(
                    SourceStatus(name, st.last_attempt, st.last_success, st.error), now, self._fresh_cfg
                )
                for name, st in sorted(self._inputs.sources.items())
            )
            blind = {f.source for f in fresh if f.blind}
            snap = self._inputs.snapshot
            if snap is not None and snap.source in blind:
                snap = None
            kv = self._inputs.kv if c.SOURCE_KV_EVENTS not in blind else None
            samples = tuple(p for p in snap.pods if p.pod not in set(snap.stale_pods)) if snap else ()
            samples = samples[: s.max_pods]

            tenants = residency.tenant_windows(window)
            tenants = self._bound_tenants(tenants)
            self._note_tenants(window, now)
            load = self._fleet_load(window, samples, span, now)
            obs = casc.CascadeObservation(tenants, load)
            judged = self._judged_state(now)
            cascade = casc.evaluate(judged, obs, self._cascade_cfg)
            cascade = self._sticky_evictors(self._not_victims(cascade, tenants, judged))
            # Baselines fold non-overlapping windows (one per window_seconds), after the warm-up.
            due = self._baseline_at is None or now - self._baseline_at >= s.window_seconds
            if due and now - self.started_at >= s.cascade.baseline_warmup_seconds:
                self._cascade = casc.update(self._cascade, obs, now, self._cascade_cfg)
                self._baseline_at = now
            self._cascade = self._prune_baselines(self._cascade, now)

            pools = self._pools(window, samples, snap)
            pool_windows = tuple(w for w, _, _, _ in pools.values())
            self._starvation, starv = starvation.starvation(self._starvation, pool_windows, self._starv_cfg)
            starv_by_pool = {x.pool: x for x in starv}
            self._starvation = StarvationState(
                {k: v for k, v in self._starvation.consecutive.items() if k in pools}
            )
            pool_signals = tuple(
                PoolSignals(
                    pool=name,
                    window=w,
                    pre_decode_ttft_share=raw,
                    ttft_p90=ttft,
                    starvation=starv_by_pool[name],
                    pressure=starvation.decode_pressure(w, self._starv_cfg),
                    balance=bal.balance(demand, self._balance_cfg),
                    demand=demand,
                )
                for name, (w, raw, ttft, demand) in sorted(pools.items())
            )
            by_tenant = {t.tenant: t for t in tenants}
            result = FleetSignals(
                time=now,
                window_seconds=s.window_seconds,
                fleet_load=load,
                fleet_load_kind=s.cascade.fleet_load,
                tenants=tuple(
                    TenantSignals(
                        cascade=sig,
                        requests=by_tenant[sig.tenant].requests,
                        tier_shares=residency.tier_shares(by_tenant[sig.tenant].hits),
                    )
                    for sig in cascade
                ),
                pools=pool_signals,
                pods=self._pods(samples, kv),
                freshness=fresh,
            )
            self.latest = result
            return result

    # ------------------------------------------------------------------ helpers
    def _bound_tenants(self, tenants: tuple[TenantWindow, ...]) -> tuple[TenantWindow, ...]:
        cap = self.settings.max_tenants
        if len(tenants) <= cap:
            return tenants
        known = [t for t in tenants if t.tenant in self._cascade.tenants]
        rest = sorted(
            (t for t in tenants if t.tenant not in self._cascade.tenants), key=lambda t: -t.requests
        )
        keep = {t.tenant for t in (known + rest)[:cap]}
        return tuple(t for t in tenants if t.tenant in keep)

    def _prune_baselines(self, state: CascadeState, now: float) -> CascadeState:
        """Forget baselines not refreshed for 10 windows, and cap their number."""
        return casc.prune_baselines(state, now, self.settings.window_seconds, self.settings.max_tenants)

    def _judged_state(self, now: float) -> CascadeState:
        """The state the cascade is judged on: a tenant seen for less than the grace period has no
        baseline yet (unknown itself; as a possible evictor its pod occupancy counts from 0, as
        for any tenant new to a pod — its first baseline was learned while it moved in)."""
        cutoff = now - self.settings.cascade.new_tenant_grace_seconds
        young = {t for t in self._cascade.tenants if self._first_seen.get(t, now) > cutoff}
        if not young:
            return self._cascade
        return CascadeState(
            tenants={k: v for k, v in self._cascade.tenants.items() if k not in young},
            fleet_load=self._cascade.fleet_load,
            fleet_windows=self._cascade.fleet_windows,
        )

    def _not_victims(
        self, signals: tuple[CascadeSignal, ...], tenants: tuple[TenantWindow, ...], state: CascadeState
    ) -> tuple[CascadeSignal, ...]:
        """Occupancy is a share of the pod's HBM hits: when the victim's hits leave HBM, every other
        tenant's share rises, victims included. A tenant whose own HBM share of hits fell by at
        least half the cascade drop is being evicted too, and is not named as an evictor."""
        half = self.settings.cascade.hbm_share_drop / 2
        losing = set()
        for t in tenants:
            base = state.tenants.get(t.tenant)
            share = t.hbm_share
            if base is not None and share is not None and base.hbm_share - share >= half:
                losing.add(t.tenant)
        if not losing:
            return signals
        return tuple(
            replace(sig, evictors=tuple(e for e in sig.evictors if e.tenant not in losing))
            if sig.evictors
            else sig
            for sig in signals
        )

    def _sticky_evictors(self, signals: tuple[CascadeSignal, ...]) -> tuple[CascadeSignal, ...]:
        """Keep the evictors named when an episode started while it fires: the evictor's own
        baseline learns its new occupancy meanwhile, so later windows may no longer name it."""
        out = []
        for sig in signals:
            if not sig.firing:
                self._episode_evictors.pop(sig.tenant, None)
                out.append(sig)
                continue
            known = self._episode_evictors.get(sig.tenant, ())
            names = {e.tenant for e in sig.evictors}
            merged = sig.evictors + tuple(e for e in known if e.tenant not in names)
            if merged:
                self._episode_evictors[sig.tenant] = merged[: self.settings.max_evictors]
            out.append(replace(sig, evictors=merged[: self.settings.max_evictors]))
        live = {sig.tenant for sig in signals}
        for gone in [t for t in self._episode_evictors if t not in live]:
            del self._episode_evictors[gone]
        return tuple(out)

    def _note_tenants(self, window: Sequence[RequestRecord], now: float) -> None:
        # Tenants seen during the warm-up were (as far as we can tell) there before we started:
        # established at once. Later ones are newcomers for `new_tenant_grace_seconds`.
        assert self.started_at is not None
        warming = now - self.started_at < self.settings.cascade.baseline_warmup_seconds
        seen: dict[str, float] = {}
        for r in window:
            seen.setdefault(r.tenant, -math.inf if warming else min(r.end_time, now))
        self._first_seen = casc.note_first_seen(self._first_seen, seen, self.settings.max_tenants)

    def _fleet_load(
        self, window: Sequence[RequestRecord], samples: Sequence[PodSample], span: float, now: float
    ) -> float | None:
        cfg = self.settings.cascade
        if cfg.fleet_load == "kv_usage":
            usage = [p.kv_usage for p in samples if p.kv_usage is not None]
            return sum(usage) / len(usage) if usage else None
        if not window:
            return None
        if cfg.fleet_load == "requests":
            return len(window) / span
        if cfg.fleet_load == "prompt_tokens":
            return sum(r.prompt_tokens for r in window) / span
        cutoff = now - cfg.new_tenant_grace_seconds
        established = [r for r in window if self._first_seen.get(r.tenant, now) <= cutoff]
        return len(established) / span

    def _pools(
        self, window: Sequence[RequestRecord], samples: Sequence[PodSample], snap: FleetSnapshot | None
    ) -> dict[str, tuple[PoolWindow, float | None, float | None, PdDemand]]:
        s = self.settings
        pod_pool = {pod: pool for pod, (pool, _) in self._pod_pool.items()}
        pod_pool.update((p.pod, p.pool) for p in samples)
        by_pool: dict[str, list[PodSample]] = {}
        for p in samples:
            by_pool.setdefault(p.pool, []).append(p)
        recs: dict[str, list[RequestRecord]] = {}
        for r in window:
            pod = r.decode_pod or r.prefill_pod
            pool = pod_pool.get(pod or "") or pod_pool.get(r.prefill_pod or "") or s.default_pool
            recs.setdefault(pool, []).append(r)
        out: dict[str, tuple[PoolWindow, float | None, float | None, PdDemand]] = {}
        for pool in sorted(set(by_pool) | set(recs)):
            pods = by_pool.get(pool, [])
            rs = recs.get(pool, [])
            decode = [p for p in pods if p.role in DECODE_ROLES]
            prefill = [p for p in pods if p.role in PREFILL_ROLES]
            pre_num = pre_den = 0.0
            ttfts: list[float] = []
            itls: list[float] = []
            for r in rs:
                if r.ttft is not None:
                    ttfts.append(r.ttft)
                if r.itl is not None:
                    itls.append(r.itl)
                if None not in (r.ttft, r.queue, r.prefill, r.kv_transfer) and r.ttft:
                    pre_num += (r.queue or 0.0) + (r.prefill or 0.0) + (r.kv_transfer or 0.0)
                    pre_den += r.ttft or 0.0
            ttft_p90 = _p90(ttfts)
            share = min(1.0, pre_num / pre_den) if pre_den > 0 else None
            if share is not None and (ttft_p90 is None or ttft_p90 < s.starvation.ttft_min_seconds):
                # Refinement: a fast TTFT is all "before decode" on an idle fleet; not starvation.
                share_for_starvation: float | None = 0.0
            else:
                share_for_starvation = share
            gen = _sum_known(p.generation_tokens_rate for p in decode)
            cap = len(decode) * self._balance_cfg.decode_tokens_per_s_per_replica
            busy = gen / cap if gen is not None and cap > 0 else None
            kv_usages = [p.kv_usage for p in decode]
            kv_max = (
                None if not kv_usages or None in kv_usages else max(v for v in kv_usages if v is not None)
            )
            window_ = PoolWindow(
                pool=pool,
                pre_decode_ttft_share=share_for_starvation,
                decode_busy_ratio=busy,
                itl_p90=_p90(itls),
                kv_usage_max=kv_max,
                preemption_rate=_sum_known(p.preemption_rate for p in decode),
            )
            demand_pods = prefill or pods
            queries = _sum_known(p.prefix_queries_rate for p in demand_pods)
            hits = _sum_known(p.prefix_hits_rate for p in demand_pods)
            demand = PdDemand(
                pool=pool,
                prompt_tokens_per_s=_sum_known(p.prompt_tokens_rate for p in demand_pods),
                hit_rate=(hits / queries if queries else 0.0)
                if hits is not None and queries is not None
                else None,
                output_tokens_per_s=gen,
                prefill_replicas=sum(1 for p in pods if p.role == c.ROLE_PREFILL),
                decode_replicas=len(decode),
            )
            out[pool] = (window_, share, ttft_p90, demand)
        return out

    def _pods(self, samples: Sequence[PodSample], kv: KvSnapshot | None) -> tuple[PodSignals, ...]:
        usage = {u.pod: u for u in residency.pod_tier_usage(samples)}
        kv_pods = {p.pod: p for p in kv.pods} if kv is not None else {}
        out = []
        for p in sorted(samples, key=lambda x: x.pod):
            k = kv_pods.get(p.pod)
            evictions = dict(k.remove_rate_by_tier) if k else {}
            if p.dram_eviction_rate is not None and c.TIER_DRAM not in evictions:
                evictions[c.TIER_DRAM] = p.dram_eviction_rate
            out.append(
                PodSignals(
                    pod=p.pod,
                    pool=p.pool,
                    role=p.role,
                    tier_usage=dict(usage[p.pod].usage),
                    queue=p.waiting,
                    running=p.running,
                    eviction_rate_by_tier=evictions,
                    demotion_rate_by_tier=dict(k.demotion_rate_by_tier) if k else {},
                    kv_blocks_by_tier=dict(k.blocks_by_tier) if k else None,
                )
            )
        return tuple(out)
