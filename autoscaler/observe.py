"""`ObservationSource` built from the observer: demand and capacity samples from the request
records the pipeline commits, signals from the fleet-signals engine (or, without it, from the
same records), replicas and readiness from the target (the loop fills those in).

    pipeline ──listener(records, now)──▶ RecordWindow ─┐
    SignalEngine.latest (optional) ──▶ SignalsProvider ─┼─▶ ObserverSource.observe(pool, now)
    RecordSignals (fallback: starvation, pressure,      │        → PoolObservation
                   cascade from the records)  ──────────┘

`RecordWindow` is thread-safe (the pipeline's writer thread feeds it, the controller reads it)
and bounded (`max_records`, `max_samples`). Nothing here reads a clock: `now` is passed in.

Demand (per pool, over the last `window_seconds` of request end times, rates over a partial
window right after start): prompt tok/s, output tok/s, token-weighted prefix hit rate and the
shares of prompt tokens served from DRAM and disk (the records' tier split, as vLLM's
`prompt_tokens_cached_by_source{source=host|disk}` counts it), req/s, TTFT p90.
It is `None` (the policy holds) while the window is warming up with no data, or when the
feed is not live (`live()` returns False, e.g. the pipeline is stopping).
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from autoscaler.counters import CounterState, accumulate
from autoscaler.types import CapacitySamples, Demand, PoolObservation, PromptMoments, Signals
from observer.model import RequestRecord
from observer.signals import cascade as casc
from observer.signals import residency, starvation
from observer.signals.types import CascadeConfig, CascadeState, PoolWindow, StarvationConfig, StarvationState

PoolOf = Callable[[RequestRecord], str | None]


def pool_by_pod_prefix(pools: Sequence[str], default: str | None = None) -> PoolOf:
    """A record's pool from its pod names (`<pool>-prefill-…`, `<pool>-decode-…`, as the llm-d
    chart and the twin name pods), the longest matching pool name first; else `default`."""
    ordered = sorted(pools, key=len, reverse=True)

    def pool_of(r: RequestRecord) -> str | None:
        for pod in (r.decode_pod, r.prefill_pod):
            if pod:
                for p in ordered:
                    if pod.startswith(p + "-"):
                        return p
        return default

    return pool_of


def pool_by_model(models: Mapping[str, str], default: str | None = None) -> PoolOf:
    """A record's pool from its model name."""

    def pool_of(r: RequestRecord) -> str | None:
        return models.get(r.model, default)

    return pool_of


def _p90(values: list[float]) -> float | None:
    if not values:
        return None
    values.sort()
    return values[max(0, math.ceil(0.9 * len(values)) - 1)]


class RecordWindow:
    """The recent request records per pool, fed by the pipeline (a `Pipeline.listeners` entry)."""

    def __init__(
        self,
        pool_of: PoolOf,
        *,
        window_seconds: float = 60.0,
        max_records: int = 200_000,
        max_samples: int = 10_000,
    ) -> None:
        self.pool_of = pool_of
        self.window_seconds = window_seconds
        self._lock = threading.Lock()
        self._records: dict[str, deque[RequestRecord]] = {}
        self._samples: dict[str, deque[tuple[float, float]]] = {}
        self._max_records = max_records
        self._max_samples = max_samples
        self.started_at: float | None = None
        self.last_update: float | None = None
        # newest record end time seen (any pool), at most the `now` it was added with: a record
        # from a clock ahead (within ingest.max_clock_skew_seconds) must not make the data look
        # fresh after its stream stopped
        self.newest_end: float | None = None
        self.dropped = 0

    def start(self, now: float) -> None:
        """Mark the feed live from `now` (rates over a partial window are scaled from here)."""
        with self._lock:
            if self.started_at is None:
                self.started_at = now

    def add_records(self, records: Sequence[RequestRecord], now: float) -> None:
        """Pipeline listener: cheap appends under a lock."""
        with self._lock:
            if self.started_at is None:
                self.started_at = now
            self.last_update = now
            for r in records:
                end = min(r.end_time, now)
                if self.newest_end is None or end > self.newest_end:
                    self.newest_end = end
                pool = self.pool_of(r)
                if pool is None:
                    self.dropped += 1
                    continue
                q = self._records.setdefault(pool, deque(maxlen=self._max_records))
                q.append(r)
                if r.prefill is not None and r.prefill > 0 and r.complete:
                    s = self._samples.setdefault(pool, deque(maxlen=self._max_samples))
                    s.append((float(max(0, r.prompt_tokens - r.cached_tokens)), r.prefill))

    def window(self, pool: str, now: float) -> list[RequestRecord]:
        """Records of `pool` that ended in (now - window_seconds, now]; older ones are dropped."""
        lo = now - self.window_seconds
        with self._lock:
            q = self._records.get(pool)
            if not q:
                return []
            while q and q[0].end_time <= lo - self.window_seconds:  # keep a margin for late arrivals
                q.popleft()
            return [r for r in q if lo < r.end_time <= now]

    def take_samples(self, pool: str) -> tuple[tuple[float, float], ...]:
        """Prefill capacity samples (uncached tokens, prefill seconds) since the last call."""
        with self._lock:
            q = self._samples.get(pool)
            if not q:
                return ()
            out = tuple(q)
            q.clear()
            return out

    def span(self, now: float) -> float | None:
        """Seconds of the window covered by the feed (None before it started)."""
        if self.started_at is None:
            return None
        return min(self.window_seconds, now - self.started_at)


@dataclass(frozen=True, slots=True)
class QueueReading:
    """What a pool's engines and router show at one instant (arrival side; `None` = unknown).

    - `waiting`: requests waiting in the prefill engines' queues (vLLM `num_requests_waiting`
      summed over the pool's prefill pods);
    - `arrived_total`: the router's cumulative request counter (EPP `llm_d_epp_request_total`),
      counted when a request *arrives*, so its rate is the arrival rate even while a backlog
      builds (completed records only show the throughput).
    """

    waiting: int | None = None
    arrived_total: float | None = None


class KvPeak:
    """The highest reading per pool over the last `seconds` (bounded): the decode pods' KV in use,
    Σ kv_cache_usage_perc in pod-equivalents."""

    def __init__(self, seconds: float = 300.0, maxlen: int = 10_000) -> None:
        self.seconds = seconds
        self._maxlen = maxlen
        self._seen: dict[str, deque[tuple[float, float]]] = {}

    def add(self, pool: str, now: float, usage: float | None) -> float | None:
        hist = self._seen.setdefault(pool, deque(maxlen=self._maxlen))
        if usage is not None:
            hist.append((now, usage))
        while hist and hist[0][0] <= now - self.seconds:
            hist.popleft()
        return max(v for _, v in hist) if hist else None


@dataclass(frozen=True, slots=True)
class DecodeGauges:
    """A pool's decode pods as their engines show them at one instant (`None` = unknown): vLLM
    `kv_cache_usage_perc` and `num_preemptions_total`, per pod."""

    kv_usage: Mapping[str, float] | None = None
    preemptions: Mapping[str, float] | None = None


# Request-size classes of `Demand.uncached_by_size` (exclusive upper bounds, uncached prompt
# tokens): powers of two from 256 to 1M, then everything larger. The P/D decider lever picks its
# threshold among these bounds.
SIZE_BOUNDS: tuple[int, ...] = (*(2**k for k in range(8, 21)), 2**62)


def size_classes(uncached: Sequence[int], scale: float) -> tuple[tuple[int, float], ...]:
    """(bound, tok/s) per size class: `uncached` token counts per request, summed by class and
    multiplied by `scale` (1 / span, times any demand correction). Empty classes left out."""
    sums = [0.0] * len(SIZE_BOUNDS)
    for u in uncached:
        sums[bisect_right(SIZE_BOUNDS, u)] += u
    return tuple((b, v * scale) for b, v in zip(SIZE_BOUNDS, sums, strict=True) if v > 0)


def demand_of(
    records: Iterable[RequestRecord],
    span: float,
    *,
    age_seconds: float = 0.0,
    backlog: bool = True,
    arrivals_per_s: float | None = None,
    waiting: int | None = None,
    drain_seconds: float = 60.0,
    recent: Sequence[RequestRecord] = (),
) -> Demand:
    """Pool demand over `span` seconds of records (pure).

    Records are *completed* requests, so under saturation their rate is the pool's throughput,
    not its demand. With `backlog`, the prompt rate is raised by the queued work: a request
    that waited q seconds sat behind about q x throughput of work, and serving the arrivals
    (≥ throughput while a queue builds) plus draining that backlog within one window needs at
    least throughput x (1 + mean q / span). On an unqueued pool (q ≈ 0) this is the plain rate.

    Arrival side (when known, this replaces the queue-time correction, which lags a burst by the
    queueing delay itself): the prompt rate is at least `arrivals_per_s` x the mean prompt of the
    window's requests, plus the `waiting` requests' prompts drained over `drain_seconds`; the
    mean prompt is taken from the `recent` records when given (it follows a change of mix).
    """
    n = prompt = cached = output = dram = disk = 0
    queued = 0.0
    nq = 0
    ttfts: list[float] = []
    uncached: list[int] = []
    m = [0.0] * 6  # Σ uu, dd, kk, ud, uk, dk (PromptMoments)
    for r in records:
        n += 1
        if r.ttft is not None and r.ttft >= 0:
            ttfts.append(r.ttft)
        prompt += r.prompt_tokens
        hit = min(r.cached_tokens, r.prompt_tokens)
        cached += hit
        u = r.prompt_tokens - hit
        uncached.append(u)
        d, k = min(r.cached.dram, hit), min(r.cached.disk, hit)
        dram += r.cached.dram
        disk += r.cached.disk
        m[0] += u * u
        m[1] += d * d
        m[2] += k * k
        m[3] += u * d
        m[4] += u * k
        m[5] += d * k
        output += r.output_tokens
        if r.queue is not None and r.queue >= 0:
            queued += r.queue
            nq += 1
    span = max(span, 1e-9)
    arrival_side = arrivals_per_s is not None or waiting is not None
    factor = 1.0 + (queued / nq) / span if backlog and nq and not arrival_side else 1.0
    prompt_rate = prompt / span * factor
    if arrival_side and n:
        mean_prompt = prompt / n
        if recent:
            mean_prompt = max(mean_prompt, sum(r.prompt_tokens for r in recent) / len(recent))
        if arrivals_per_s is not None:
            prompt_rate = max(prompt_rate, max(0.0, arrivals_per_s) * mean_prompt)
        if waiting:
            prompt_rate += max(0, waiting) * mean_prompt / max(drain_seconds, 1e-9)
    scale = prompt_rate / prompt if prompt else 1.0 / span  # per request token -> per second
    return Demand(
        ttft_p90_seconds=_p90(ttfts),
        prompt_tokens_per_s=prompt_rate,
        output_tokens_per_s=output / span,
        hit_rate=cached / prompt if prompt else 0.0,
        dram_hit_share=min(1.0, dram / prompt) if prompt else 0.0,
        disk_hit_share=min(1.0, disk / prompt) if prompt else 0.0,
        requests_per_s=n / span,
        age_seconds=age_seconds,
        arrivals_per_s=arrivals_per_s,
        waiting_requests=waiting,
        uncached_by_size=size_classes(uncached, scale),
        prompt_moments=PromptMoments(*(v * scale for v in m)) if n else None,
    )


class SignalsProvider(Protocol):
    """Fleet signals of one pool at `now` (a `Signals` whose fields are None when unknown)."""

    def signals(
        self, pool: str, now: float, records: Sequence[RequestRecord], decode_replicas: int | None
    ) -> Signals: ...


# ---------------------------------------------------------------------------------------------
# The signals engine's snapshot, read structurally (observer.signals.engine.FleetSignals)
# ---------------------------------------------------------------------------------------------
class _Firing(Protocol):
    @property
    def firing(self) -> bool: ...

    @property
    def unknown(self) -> bool: ...


class _Balance(Protocol):
    @property
    def imbalanced(self) -> bool: ...

    @property
    def unknown(self) -> bool: ...


class _PoolSignals(Protocol):
    @property
    def starvation(self) -> _Firing: ...

    @property
    def pressure(self) -> _Firing: ...

    @property
    def balance(self) -> _Balance: ...


class _Cascade(Protocol):
    @property
    def tenant(self) -> str: ...

    @property
    def firing(self) -> bool: ...


class _TenantSignals(Protocol):
    @property
    def cascade(self) -> _Cascade: ...


class FleetSignalsLike(Protocol):
    @property
    def time(self) -> float: ...

    @property
    def tenants(self) -> Sequence[_TenantSignals]: ...

    def pool(self, name: str) -> _PoolSignals | None: ...


class EngineSignals:
    """Signals from the fleet-signals engine's latest snapshot (`lambda: engine.latest`).

    The snapshot's age is the signals' age (the policy ignores signals older than
    `stale_after_seconds`); a pool the engine does not know has unknown signals. With
    `decode_gauges` (the arrival feed's reading of the engine's pods), the decode pods' KV in use
    feeds `Signals.decode_kv_peak` (the KV headroom floor), as in `RecordSignals`."""

    def __init__(
        self,
        latest: Callable[[], FleetSignalsLike | None],
        decode_gauges: Callable[[str, float], DecodeGauges] | None = None,
        kv_peak: KvPeak | None = None,
    ) -> None:
        self._latest = latest
        self._gauges = decode_gauges
        self.kv_peak = kv_peak if kv_peak is not None else KvPeak()

    def signals(
        self, pool: str, now: float, records: Sequence[RequestRecord], decode_replicas: int | None
    ) -> Signals:
        snap = self._latest()
        if snap is None:
            return Signals(age_seconds=math.inf)
        age = max(0.0, now - snap.time)
        cascade = tuple(t.cascade.tenant for t in snap.tenants if t.cascade.firing)
        ps = snap.pool(pool)
        if ps is None:
            return Signals(cascade_tenants=cascade, age_seconds=age)
        kv = self._gauges(pool, now).kv_usage if self._gauges is not None else None
        return Signals(
            starvation=None if ps.starvation.unknown else ps.starvation.firing,
            decode_pressure=None if ps.pressure.unknown and not ps.pressure.firing else ps.pressure.firing,
            cascade_tenants=cascade,
            load_imbalance=None if ps.balance.unknown else ps.balance.imbalanced,
            age_seconds=age,
            decode_kv_peak=self.kv_peak.add(pool, now, sum(kv.values()) if kv else None),
        )


# ---------------------------------------------------------------------------------------------
# Fallback: the same signals from the records alone (committed pure signal functions)
# ---------------------------------------------------------------------------------------------
@dataclass
class RecordSignals:
    """Starvation, decode pressure and the cache cascade computed from the record window with
    the pure functions of `observer.signals` (used when no signals engine runs, e.g. on the
    twin in replays and benchmarks). Stateful across ticks: one call per pool per tick.

    - decode busy ratio = output tok/s / (decode replicas x `decode_tokens_per_s_per_replica`);
    - the pre-decode TTFT share counts only when TTFT p90 ≥ `ttft_min_seconds` (a fast TTFT is
      all "before decode" on an idle fleet, not starvation — as the engine refines it);
    - decode pressure from ITL p90, and from the decode pods' KV usage and preemptions when
      `decode_gauges` reads them (vLLM `kv_cache_usage_perc`, max over the pool's decode pods;
      `num_preemptions_total` per pod, folded across restarts, as a rate between ticks), as
      the engine's does;
    - cascade baselines fold one window per `window_seconds` after `warmup_seconds`; fleet load
      counts tenants seen for longer than `new_tenant_grace_seconds` (a new heavy tenant is the
      evictor, not a load change);
    - bounded per pool as the engine is (`max_tenants`, 1000): baselines not refreshed for 10
      windows are dropped and at most `max_tenants` kept; past 2 x `max_tenants` first-seen
      times, only the current window's tenants are kept (under tenant churn, new tenants still
      become established and count in the fleet load).
    Load imbalance is left unknown (it needs per-pod metrics).
    """

    decode_tokens_per_s_per_replica: float
    ttft_min_seconds: float
    window_seconds: float = 60.0
    starvation_cfg: StarvationConfig = field(default_factory=StarvationConfig)
    cascade_cfg: CascadeConfig = field(default_factory=CascadeConfig)
    warmup_seconds: float = 120.0
    new_tenant_grace_seconds: float = 120.0
    max_tenants: int = 1000
    decode_gauges: Callable[[str, float], DecodeGauges] | None = None
    _starv: StarvationState = field(default_factory=StarvationState)
    _preempted: dict[str, tuple[float, CounterState]] = field(default_factory=dict)
    kv_peak: KvPeak = field(default_factory=KvPeak)  # the scale-down window
    _cascade: dict[str, CascadeState] = field(default_factory=dict)
    _baseline_at: dict[str, float] = field(default_factory=dict)
    _started: dict[str, float] = field(default_factory=dict)
    _first_seen: dict[str, Mapping[str, float]] = field(default_factory=dict)  # pool -> tenant -> time

    def signals(
        self, pool: str, now: float, records: Sequence[RequestRecord], decode_replicas: int | None
    ) -> Signals:
        started = self._started.setdefault(pool, now)
        span = max(min(self.window_seconds, now - started), 1.0)
        ttfts = [r.ttft for r in records if r.ttft is not None]
        itls = [r.itl for r in records if r.itl is not None]
        ttft_p90 = _p90(ttfts)
        num = den = 0.0
        for r in records:
            if r.ttft and None not in (r.queue, r.prefill, r.kv_transfer):
                num += (r.queue or 0.0) + (r.prefill or 0.0) + (r.kv_transfer or 0.0)
                den += r.ttft
        share: float | None = min(1.0, num / den) if den > 0 else None
        if share is not None and (ttft_p90 is None or ttft_p90 < self.ttft_min_seconds):
            share = 0.0
        busy: float | None = None
        if decode_replicas:
            out = sum(r.output_tokens for r in records) / span
            busy = out / (decode_replicas * self.decode_tokens_per_s_per_replica)
        kv_max, kv_sum, preempt_rate = self._gauges(pool, now)
        peak = self.kv_peak.add(pool, now, kv_sum)
        window = PoolWindow(pool, share, busy, _p90(itls), kv_max, preempt_rate)
        self._starv, starv = starvation.starvation(self._starv, (window,), self.starvation_cfg)
        pressure = starvation.decode_pressure(window, self.starvation_cfg)
        cascade = self._cascade_tick(pool, now, records, span)
        return Signals(
            starvation=None if starv[0].unknown else starv[0].firing,
            decode_pressure=None if pressure.unknown else pressure.firing,
            cascade_tenants=cascade,
            load_imbalance=None,
            age_seconds=0.0,
            decode_kv_peak=peak,
        )

    def _gauges(self, pool: str, now: float) -> tuple[float | None, float | None, float | None]:
        """The decode pods' KV usage max and sum, and their preemption rate (None = unknown)."""
        if self.decode_gauges is None:
            return None, None, None
        g = self.decode_gauges(pool, now)
        rate: float | None = None
        if g.preemptions is not None:
            t0, before = self._preempted.get(pool, (now, CounterState()))
            after = accumulate(before, g.preemptions)  # per pod, across restarts
            if before.total is not None and after.total is not None and now > t0:
                rate = (after.total - before.total) / (now - t0)
            self._preempted[pool] = (now, after)
        kv = g.kv_usage
        return (max(kv.values()) if kv else None), (sum(kv.values()) if kv else None), rate

    def _cascade_tick(
        self, pool: str, now: float, records: Sequence[RequestRecord], span: float
    ) -> tuple[str, ...] | None:
        seen: dict[str, float] = {}
        for r in records:
            seen.setdefault(r.tenant, r.end_time)
        first_seen = casc.note_first_seen(self._first_seen.get(pool, {}), seen, self.max_tenants)
        self._first_seen[pool] = first_seen
        cutoff = now - self.new_tenant_grace_seconds
        established = [r for r in records if first_seen.get(r.tenant, now) <= cutoff]
        load = len(established) / span if records else None
        obs = casc.CascadeObservation(residency.tenant_windows(records), load)
        state = self._cascade.get(pool, CascadeState())
        sig = casc.evaluate(state, obs, self.cascade_cfg)
        last = self._baseline_at.get(pool)
        due = last is None or now - last >= self.window_seconds
        if due and now - self._started[pool] >= self.warmup_seconds:
            self._cascade[pool] = casc.update(state, obs, now, self.cascade_cfg)
            self._baseline_at[pool] = now
        if pool in self._cascade:
            self._cascade[pool] = casc.prune_baselines(
                self._cascade[pool], now, self.window_seconds, self.max_tenants
            )
        if all(s.unknown for s in sig) and sig:
            return None
        return tuple(s.tenant for s in sig if s.firing)


# ---------------------------------------------------------------------------------------------
# The source
# ---------------------------------------------------------------------------------------------
class ObserverSource:
    """`ObservationSource` over a `RecordWindow` (+ a `SignalsProvider`).

    `decode_replicas(pool)` gives the current decode replica count (for the busy ratio of the
    record-based signals); `live()` says whether the feed is running (False → demand unknown);
    `data_age(now)` (default 0: a live pipeline feed) is reported as the demand's age, so a feed
    that cannot tell zero traffic from a dead source makes the policy hold once it is stale.
    """

    def __init__(
        self,
        window: RecordWindow,
        signals: SignalsProvider | None = None,
        *,
        decode_replicas: Callable[[str], int | None] | None = None,
        live: Callable[[], bool] | None = None,
        data_age: Callable[[float], float] | None = None,
        learn_capacity: bool = True,
        queue: Callable[[str, float], QueueReading] | None = None,
        recent_seconds: float = 15.0,
    ) -> None:
        self.recent_seconds = recent_seconds
        self.window = window
        self._queue = queue
        self._arrivals: dict[str, deque[tuple[float, float]]] = {}
        self._signals = signals
        self._decode_replicas = decode_replicas
        self._live = live
        self._data_age = data_age
        self._learn = learn_capacity

    def observe(self, pool: str, now: float) -> PoolObservation:
        w = self.window
        if self._live is not None and not self._live():
            return PoolObservation(pool, {}, None, Signals(age_seconds=math.inf))
        span = w.span(now)
        records = w.window(pool, now)
        demand: Demand | None
        if span is None or (not records and span < w.window_seconds / 2):
            demand = None  # warming up with nothing seen yet: unknown, not zero
        else:
            # a live feed: an empty window is zero traffic, not missing data; a feed that cannot
            # tell (e.g. reading the store) reports its data age and the policy holds when stale
            age = self._data_age(now) if self._data_age is not None else 0.0
            arrivals, waiting = self._arrival_side(pool, now)
            demand = demand_of(
                records,
                max(span, 1.0),
                age_seconds=age,
                arrivals_per_s=arrivals,
                waiting=waiting,
                drain_seconds=w.window_seconds,
                recent=[r for r in records if r.end_time > now - self.recent_seconds],
            )
        decode = self._decode_replicas(pool) if self._decode_replicas is not None else None
        sig = (
            self._signals.signals(pool, now, records, decode)
            if self._signals is not None
            else Signals(age_seconds=math.inf)
        )
        samples = CapacitySamples(prefill=w.take_samples(pool)) if self._learn else CapacitySamples()
        return PoolObservation(pool, {}, demand, sig, None, samples)

    def _arrival_side(self, pool: str, now: float) -> tuple[float | None, int | None]:
        """Arrival rate over the window from the router's counter, and the waiting requests."""
        if self._queue is None:
            return None, None
        q = self._queue(pool, now)
        rate: float | None = None
        if q.arrived_total is not None:
            hist = self._arrivals.setdefault(pool, deque(maxlen=1000))
            if hist and q.arrived_total < hist[-1][1]:
                hist.clear()  # counter reset (router restarted)
            hist.append((now, q.arrived_total))
            while len(hist) > 2 and hist[1][0] <= now - self.window.window_seconds:
                hist.popleft()
            # the higher of the window's rate and the latest interval's: a burst shows at once,
            # its end only after the window (scale-downs wait for the stabilization window anyway)
            for t0, v0 in (hist[0], next((x for x in hist if x[0] >= now - self.recent_seconds), hist[-1])):
                if now - t0 > 0:
                    r = (q.arrived_total - v0) / (now - t0)
                    rate = r if rate is None else max(rate, r)
        return rate, q.waiting
