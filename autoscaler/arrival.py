"""The arrival side of a pool's demand from the live sources: `ObserverSource(queue=ArrivalFeed)`.

    signals engine (FleetSignals.pods) or a MetricSource (FleetSnapshot.pods) ──▶ waiting
        vLLM `num_requests_waiting`, summed over the pool's *prefill* pods
    EPP request counter (either metric generation of conventions.EPP_GENERATIONS) ──▶ arrived_total
        direct scrape of the configured EPPs (`sources.static.epps`) or one Prometheus query

`ArrivalFeed(pool, now) -> QueueReading`. Unknown is `None`, never zero, so the policy falls back
to the record-based demand (queue-time correction): the pod reading is older than
`stale_after_seconds`, a prefill pod's value is unknown, the pool has no prefill pod, or an EPP
of the pool could not be read. Counter resets (EPP restarts) never give negative arrivals: each
series is folded into a monotone total (`accumulate`: a drop counts the new value, as
Prometheus' `increase()` does). The readers are cached per `now` (one read per tick).

Pure core: `PodQueue`, `prefill_waiting`, `epp_series`, `prom_series`, and the counter fold
`CounterState`/`accumulate` (`autoscaler.counters`). I/O at the edges: `ScrapeCounters`,
`PrometheusCounters`; the feed itself reads no clock.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from autoscaler.counters import CounterState, Series, accumulate
from autoscaler.observe import DecodeGauges, QueueReading
from observer import conventions as c
from observer.sources import promql
from observer.sources.capped import DEFAULT_MAX_PAGE_BYTES, capped_client, get_text
from observer.sources.names import detect_epp
from observer.sources.samples import EppTarget, FleetSnapshot
from observer.sources.scrape import MAX_BODY_SETTING, TIMEOUT_SETTING, Parsed, parse_exposition

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Pure core
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PodQueue:
    """One pod's waiting requests (None = unknown) with its pool and role."""

    pod: str
    pool: str
    role: str | None
    waiting: float | None
    kv_usage: float | None = None  # vLLM kv_cache_usage_perc, 0..1


@dataclass(frozen=True, slots=True)
class PodsReading:
    """The pods' queues as one source read them at `time`."""

    time: float
    pods: tuple[PodQueue, ...]


def prefill_waiting(pods: Iterable[PodQueue], pool: str) -> int | None:
    """Requests waiting in the pool's prefill pods (role prefill only; decode queues are not
    prefill demand). None when the pool has no prefill pod or any of them is unknown."""
    values = [p.waiting for p in pods if p.pool == pool and p.role == c.ROLE_PREFILL]
    if not values or any(v is None for v in values):
        return None
    return round(sum(max(0.0, v) for v in values if v is not None))


def pods_of_signals(fs: Any) -> PodsReading:
    """From the engine's `FleetSignals` (its pods are the fresh ones of the last good read; a
    pod's KV usage is its HBM tier usage)."""
    return PodsReading(
        float(fs.time),
        tuple(PodQueue(p.pod, p.pool, p.role, p.queue, p.tier_usage.get(c.TIER_HBM)) for p in fs.pods),
    )


def pods_of_snapshot(snap: FleetSnapshot) -> PodsReading | None:
    """From a metric source's snapshot; a stale pod is unknown; a failed read is no reading."""
    if not snap.ok:
        return None
    stale = set(snap.stale_pods)
    return PodsReading(
        snap.time,
        tuple(
            PodQueue(p.pod, p.pool, p.role, *((None, None) if p.pod in stale else (p.waiting, p.kv_usage)))
            for p in snap.pods
        ),
    )


def _key(labels: Mapping[str, str], skip: Sequence[str] = ("__name__",)) -> str:
    """One series' key, unambiguous whatever its label values hold (joined with `,` and `=`,
    `{model="a,b=c"}` and `{model="a", b="c"}` were one series, one value lost)."""
    return json.dumps([(k, v) for k, v in sorted(labels.items()) if k not in skip], ensure_ascii=False)


def epp_series(parsed: Parsed, pool: str) -> Series | None:
    """The EPP request counter's series of `pool` from one EPP's exposition (either generation;
    series carrying a pool label `name` of another pool are left out). None: no counter."""
    gen = detect_epp(set(parsed))
    if gen is None:
        return None
    rows = parsed.get(c.EPP_GENERATIONS[gen]["request_total"])
    if not rows:
        return None
    return {_key(lab): v for lab, v in rows if lab.get(c.EPP_LABEL_POOL, pool) == pool}


def prom_series(rows: Iterable[Mapping[str, Any]], pools: Sequence[str]) -> dict[str, dict[str, float]]:
    """Prometheus instant-query rows of the counter, per pool: a series' pool is its `name`
    label, else the only configured pool (series of an unknown pool are left out)."""
    out: dict[str, dict[str, float]] = {}
    for row in rows:
        labels = {str(k): str(v) for k, v in row.get("metric", {}).items()}
        pool = labels.get(c.EPP_LABEL_POOL) or (pools[0] if len(pools) == 1 else None)
        if pool is None or pool not in pools:
            continue
        try:
            v = float(row["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        if math.isfinite(v):
            out.setdefault(pool, {})[_key(labels)] = v
    return out


# ---------------------------------------------------------------------------------------------
# Counter readers (I/O): pool -> its series, or None for a pool that could not be read
# ---------------------------------------------------------------------------------------------
class CounterReader(Protocol):
    def read(self, now: float) -> Mapping[str, Series | None]: ...


class ScrapeCounters:
    """GET each configured EPP's /metrics. A pool with any EPP unreadable is unknown (a partial
    sum would look like a reset). Configured like the scrape source (`sources.scrape`): its
    `timeout_seconds` (each page's deadline) and `max_body_bytes` (a page past either is an
    unreadable EPP)."""

    def __init__(
        self,
        epps: Sequence[EppTarget],
        *,
        timeout_seconds: float = 2.0,
        max_body_bytes: int = DEFAULT_MAX_PAGE_BYTES,
        client: httpx.Client | None = None,
    ):
        self.epps = tuple(epps)
        self.timeout_seconds = timeout_seconds
        self.max_body_bytes = max_body_bytes
        self._client = client or capped_client(timeout_seconds)

    def close(self) -> None:
        self._client.close()

    def read(self, now: float) -> Mapping[str, Series | None]:
        out: dict[str, dict[str, float] | None] = {}
        for i, e in enumerate(self.epps):
            series: Series | None
            try:
                text = get_text(
                    self._client,
                    e.metrics_url,
                    max_bytes=self.max_body_bytes,
                    setting=MAX_BODY_SETTING,
                    max_seconds=self.timeout_seconds,
                    seconds_setting=TIMEOUT_SETTING,
                )
                series = epp_series(parse_exposition(text), e.pool)
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("EPP counter read failed", extra={"url": e.metrics_url, "error": str(exc)[:200]})
                series = None
            if e.pool in out and out[e.pool] is None:
                continue
            if series is None:
                out[e.pool] = None
                continue
            merged = out.setdefault(e.pool, {})
            assert merged is not None
            merged.update({f"{i}|{k}": v for k, v in series.items()})  # one EPP replica's series apart
        return out


class PrometheusCounters:
    """One instant query of the EPP request counter (the generation present, newest first).
    Prometheus drops a series whose target stops answering (staleness markers), so an EPP
    that is down reads as a pool without counter (unknown)."""

    def __init__(
        self,
        query: Callable[[str], list[dict[str, Any]]],
        pools: Sequence[str],
        *,
        namespace: tuple[str, str] | None = None,
    ) -> None:
        self._query = query
        self.pools = tuple(pools)
        self._matchers = dict([namespace]) if namespace else {}

    def read(self, now: float) -> Mapping[str, Series | None]:
        names = [g["request_total"] for g in c.EPP_GENERATIONS.values()]
        present = {
            str(r["metric"].get("__name__"))
            for r in self._query(promql.names_present_query(list(dict.fromkeys(names)), self._matchers))
        }
        name = next((n for n in names if n in present), None)
        if name is None:
            return {}
        return prom_series(self._query(promql.selector(name, self._matchers)), self.pools)


# ---------------------------------------------------------------------------------------------
# The feed
# ---------------------------------------------------------------------------------------------
class ArrivalFeed:
    """`queue(pool, now) -> QueueReading` for `ObserverSource`, thread-safe, one read per `now`.

    `pods(now)` gives the latest pods' queues (None: no reading); `counters` reads the EPP
    request counters (None: waiting only). A pods reading older than `stale_after_seconds` is
    unknown."""

    def __init__(
        self,
        pods: Callable[[float], PodsReading | None] | None,
        counters: CounterReader | None = None,
        *,
        stale_after_seconds: float = 60.0,
    ) -> None:
        self._pods = pods
        self._counters = counters
        self.stale_after_seconds = stale_after_seconds
        self._lock = threading.Lock()
        self._state: dict[str, CounterState] = {}
        self._at: float | None = None
        self._reading: PodsReading | None = None
        self._totals: dict[str, float | None] = {}

    def _refresh(self, now: float) -> None:
        if self._at == now:
            return
        self._at = now
        try:
            self._reading = self._pods(now) if self._pods is not None else None
        except Exception as exc:  # a source must not stop the control loop: unknown
            _unreadable("pod queues", exc)
            self._reading = None
        self._totals = {}
        if self._counters is None:
            return
        try:
            read = self._counters.read(now)
        except Exception as exc:
            _unreadable("EPP counter", exc)
            read = {}
        for pool in set(read) | set(self._state):
            series = read.get(pool)
            if series is None:
                self._totals[pool] = None  # keep the state: the next good read continues the total
                continue
            st = accumulate(self._state.get(pool, CounterState()), series)
            self._state[pool] = st
            self._totals[pool] = st.total

    def decode_gauges(self, pool: str, now: float) -> DecodeGauges:
        """The pool's decode pods' KV usage from the same reading (`RecordSignals.decode_gauges`):
        unknown when the reading is stale, the pool has no decode pod or one of them is unknown."""
        with self._lock:
            self._refresh(now)
            r = self._reading
            if r is None or now - r.time > self.stale_after_seconds:
                return DecodeGauges()
            kv = {p.pod: p.kv_usage for p in r.pods if p.pool == pool and p.role == c.ROLE_DECODE}
            if not kv or any(v is None for v in kv.values()):
                return DecodeGauges()
            return DecodeGauges({k: v for k, v in kv.items() if v is not None})

    def __call__(self, pool: str, now: float) -> QueueReading:
        with self._lock:
            self._refresh(now)
            r = self._reading
            fresh = r is not None and now - r.time <= self.stale_after_seconds
            waiting = prefill_waiting(r.pods, pool) if fresh and r is not None else None
            return QueueReading(waiting=waiting, arrived_total=self._totals.get(pool))


def _unreadable(what: str, exc: Exception) -> None:
    """One warning line per failed read (an unreachable Prometheus fails every tick); the
    traceback only at debug level."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    log.warning("arrival side: %s unreadable, treated as unknown: %s", what, text[:300])
    log.debug("arrival side: %s unreadable", what, exc_info=exc)
