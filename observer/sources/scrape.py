"""Direct-scrape source: GET each pod's /metrics and parse it (prometheus_client's text parser).

For setups without Prometheus; the embedded default of the demo. Rates come from successive
scrapes of the same pod (`counter_rate`, counter resets handled); the first scrape of a pod has
unknown rates. A pod that cannot be scraped is unknown (None), never zero. A pod's exposition is
untrusted: every label value is made safe as it is parsed (observer/sources/untrusted.py), and a
page is read under `max_body_bytes` (observer/sources/capped.py): past it the pod's read fails, as
it does when the page is not complete within `timeout_seconds` (the whole answer's deadline).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from observer import conventions as c
from observer.sources.capped import DEFAULT_MAX_PAGE_BYTES, capped_client, get_text
from observer.sources.names import VLLM_SOURCE_LABEL, VllmNames, counter, detect_epp, detect_vllm
from observer.sources.samples import EppTarget, FleetSnapshot, PodSample, PodTarget, PoolSample
from observer.sources.untrusted import Clean, ValueCleaner, clean_value

MAX_BODY_SETTING = "sources.scrape.max_body_bytes"  # named by a ResponseTooLarge
TIMEOUT_SETTING = "sources.scrape.timeout_seconds"  # named by an AnswerTooSlow
Labels = Mapping[str, str]
Parsed = Mapping[str, tuple[tuple[Labels, float], ...]]  # sample name -> (labels, value)...


def parse_exposition(text: str, clean: Clean = clean_value) -> Parsed:
    """Sample name -> its (labels, value) pairs, every label value made safe by `clean`
    (`clean_value`, or a counting `ValueCleaner`: the pod is untrusted). The common short ASCII
    value is checked inline: the cost is within the parse's run-to-run spread (docs/sources.md).
    Raises ValueError on malformed text."""
    out: dict[str, list[tuple[Labels, float]]] = {}
    limit = c.MAX_VALUE_CHARS
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = {
                k: v if v.isascii() and len(v) <= limit and "\x00" not in v else clean(v)
                for k, v in s.labels.items()
            }
            out.setdefault(s.name, []).append((labels, float(s.value)))
    return {k: tuple(v) for k, v in out.items()}


def _sum(parsed: Parsed, name: str) -> float | None:
    rows = parsed.get(name)
    return None if not rows else sum(v for _, v in rows)


def _avg(parsed: Parsed, name: str) -> float | None:
    rows = parsed.get(name)
    return None if not rows else sum(v for _, v in rows) / len(rows)


def counter_rate(
    prev: float | None, prev_time: float | None, value: float | None, now: float
) -> float | None:
    """Per-second rate between two readings of a counter; a drop is a reset (rate = value/dt)."""
    if prev is None or prev_time is None or value is None or now <= prev_time:
        return None
    dt = now - prev_time
    return (value if value < prev else value - prev) / dt


def vllm_counters(parsed: Parsed, n: VllmNames) -> dict[str, float]:
    """The cumulative counters a pod sample needs, keyed by our logical name."""
    keys = {
        "preemptions": n.preemptions,
        "prompt": n.prompt_tokens,
        "generation": n.generation_tokens,
        "prefix_queries": n.prefix_queries,
        "prefix_hits": n.prefix_hits,
        "dram_evictions": n.dram_evictions,
    }
    out = {k: v for k, name in keys.items() if (v := _sum(parsed, counter(name))) is not None}
    for labels, value in parsed.get(counter(n.cached_by_source), ()):
        tier = c.VLLM_CACHED_SOURCE_TO_TIER.get(labels.get(VLLM_SOURCE_LABEL, ""), c.TIER_UNKNOWN)
        out["cached:" + tier] = out.get("cached:" + tier, 0.0) + value
    return out


@dataclass(frozen=True, slots=True)
class PodReading:
    """One parsed scrape of a pod (kept to compute the next rates)."""

    time: float
    counters: Mapping[str, float]


def pod_sample(
    target: PodTarget, parsed: Parsed, n: VllmNames, now: float, prev: PodReading | None
) -> tuple[PodSample, PodReading]:
    """Pure: one pod's sample from its parsed exposition and its previous reading."""
    counters = vllm_counters(parsed, n)

    def rate(key: str) -> float | None:
        if prev is None:
            return None
        return counter_rate(prev.counters.get(key), prev.time, counters.get(key), now)

    tiers = {k.split(":", 1)[1] for k in counters if k.startswith("cached:")}
    by_tier = {t: r for t in tiers if (r := rate("cached:" + t)) is not None}
    models = [lab.get(c.VLLM_LABEL_MODEL) for lab, _ in parsed.get(n.kv_usage, ())]
    model = next((m for m in models if m), None) or target.model
    sample = PodSample(
        pod=target.pod,
        role=target.role,
        pool=target.pool,
        model=model,
        time=now,
        kv_usage=_avg(parsed, n.kv_usage),
        cpu_offload_usage=_avg(parsed, n.cpu_offload_usage),
        disk_bytes=_sum(parsed, n.disk_bytes),
        waiting=_sum(parsed, n.waiting),
        running=_sum(parsed, n.running),
        preemption_rate=rate("preemptions"),
        prompt_tokens_rate=rate("prompt"),
        generation_tokens_rate=rate("generation"),
        prefix_queries_rate=rate("prefix_queries"),
        prefix_hits_rate=rate("prefix_hits"),
        cached_tokens_rate_by_tier=by_tier if by_tier else None,
        dram_eviction_rate=rate("dram_evictions"),
    )
    return sample, PodReading(now, counters)


def pool_sample(pool: str, parsed: Parsed, now: float) -> tuple[PoolSample, str | None]:
    """Pure: one pool's EPP values from its EPP's exposition."""
    gen = detect_epp(set(parsed))
    if gen is None:
        return PoolSample(pool=pool, time=now), None
    names = c.EPP_GENERATIONS[gen]

    def value(key: str) -> float | None:
        rows = [v for lab, v in parsed.get(names[key], ()) if lab.get(c.EPP_LABEL_POOL, pool) == pool]
        return max(rows) if rows else None

    return (
        PoolSample(
            pool=pool,
            time=now,
            kv_cache_utilization=value("kv_cache_utilization"),
            queue_size=value("queue_size"),
            running_requests=value("running_requests"),
            ready_endpoints=value("ready_endpoints"),
        ),
        gen,
    )


@dataclass
class ScrapeSourceConfig:
    timeout_seconds: float = 2.0  # each page, connect to last byte (and each socket operation)
    max_workers: int = 8
    headers: Mapping[str, str] = field(default_factory=dict)
    max_body_bytes: int = DEFAULT_MAX_PAGE_BYTES  # per /metrics page, received and decoded


class ScrapeSource:
    """A MetricSource that scrapes pods (and EPPs) directly. Keeps one reading per pod."""

    name = c.SOURCE_SCRAPE

    def __init__(
        self,
        targets: Callable[[], tuple[PodTarget, ...]],
        epps: Iterable[EppTarget] = (),
        config: ScrapeSourceConfig | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        self.config = config or ScrapeSourceConfig()
        self.cleaner = ValueCleaner(self.name)  # label values of the scraped expositions
        self._targets = targets
        self._epps = tuple(epps)
        self._client = client or capped_client(self.config.timeout_seconds, headers=dict(self.config.headers))
        self._prev: dict[str, PodReading] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self._client.close()

    def _fetch(self, url: str) -> Parsed | str:
        try:
            text = get_text(
                self._client,
                url,
                max_bytes=self.config.max_body_bytes,
                setting=MAX_BODY_SETTING,
                max_seconds=self.config.timeout_seconds,
                seconds_setting=TIMEOUT_SETTING,
            )
            return parse_exposition(text, self.cleaner)
        except (httpx.HTTPError, ValueError) as exc:
            return f"{url}: {type(exc).__name__}: {exc}"[:300]

    def read(self, now: float) -> FleetSnapshot:
        targets = tuple(t for t in self._targets() if t.metrics_url)
        urls = [t.metrics_url or "" for t in targets] + [e.metrics_url for e in self._epps]
        with ThreadPoolExecutor(max_workers=max(1, min(self.config.max_workers, len(urls) or 1))) as ex:
            results = list(ex.map(self._fetch, urls))
        pod_results, epp_results = results[: len(targets)], results[len(targets) :]
        pods: list[PodSample] = []
        failed: list[str] = []
        errors: list[str] = []
        generations: list[str] = []
        with self._lock:
            live = {t.pod for t in targets}
            for gone in [p for p in self._prev if p not in live]:  # bounded by the live fleet
                del self._prev[gone]
            for t, res in zip(targets, pod_results, strict=True):
                n = detect_vllm(set(res)) if not isinstance(res, str) else None
                if isinstance(res, str) or n is None:
                    errors.append(res if isinstance(res, str) else f"{t.pod}: no vLLM metrics")
                    failed.append(t.pod)
                    pods.append(PodSample(pod=t.pod, role=t.role, pool=t.pool, model=t.model, time=now))
                    continue
                sample, reading = pod_sample(t, res, n, now, self._prev.get(t.pod))
                self._prev[t.pod] = reading
                generations.append(n.generation)
                pods.append(sample)
        pools: list[PoolSample] = []
        epp_gen: str | None = None
        for e, res in zip(self._epps, epp_results, strict=True):
            if isinstance(res, str):
                errors.append(res)
                pools.append(PoolSample(pool=e.pool, time=now))
                continue
            ps, gen = pool_sample(e.pool, res, now)
            pools.append(ps)
            epp_gen = epp_gen or gen
        ok = not urls or len(errors) < len(urls)
        return FleetSnapshot(
            source=self.name,
            time=now,
            ok=ok,
            error="; ".join(errors)[:1000] or None,
            vllm_generation=max(set(generations), key=generations.count) if generations else None,
            epp_generation=epp_gen,
            pods=tuple(pods),
            pools=tuple(pools),
            stale_pods=tuple(failed),
        )
