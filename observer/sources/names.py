"""Metric names per generation, built from observer.conventions (never spelled here)."""

from __future__ import annotations

from dataclasses import dataclass

from observer import conventions as c


@dataclass(frozen=True, slots=True)
class VllmNames:
    """The vLLM metric names of one generation. Counter names are without `_total`."""

    generation: str
    kv_usage: str
    prefix_queries: str
    prefix_hits: str
    cpu_offload_usage: str = c.VLLM_CPU_OFFLOAD_USAGE
    running: str = c.VLLM_NUM_RUNNING
    waiting: str = c.VLLM_NUM_WAITING
    preemptions: str = c.VLLM_PREEMPTIONS
    prompt_tokens: str = c.VLLM_PROMPT_TOKENS
    generation_tokens: str = c.VLLM_GENERATION_TOKENS
    cached_by_source: str = c.VLLM_PROMPT_TOKENS_CACHED_BY_SOURCE
    disk_bytes: str = c.LMCACHE_LOCAL_STORAGE_USAGE
    dram_evictions: str = c.LMCACHE_CPU_EVICT


VLLM_V1 = VllmNames(c.VLLM_GENERATION_V1, c.VLLM_KV_USAGE, c.VLLM_PREFIX_QUERIES, c.VLLM_PREFIX_HITS)
VLLM_LEGACY = VllmNames(
    c.VLLM_GENERATION_LEGACY, c.VLLM_KV_USAGE_LEGACY, c.VLLM_PREFIX_QUERIES_LEGACY, c.VLLM_PREFIX_HITS_LEGACY
)
VLLM_GENERATIONS: tuple[VllmNames, ...] = (VLLM_V1, VLLM_LEGACY)  # preferred first
VLLM_SOURCE_LABEL = c.LABEL_SOURCE  # vLLM's `source` label on *_by_source counters


def counter(name: str) -> str:
    """The exposed sample name of a counter."""
    return name + c.PROM_COUNTER_SUFFIX


def detect_vllm(present: set[str]) -> VllmNames | None:
    """The generation whose HBM usage gauge is present (newest first)."""
    return next((g for g in VLLM_GENERATIONS if g.kv_usage in present), None)


def detect_epp(present: set[str]) -> str | None:
    """The EPP generation present: by its request counter first, then its pool gauges."""
    for gen, names in c.EPP_GENERATIONS.items():
        if names["request_total"] in present:
            return gen
    for gen, names in c.EPP_GENERATIONS.items():
        if names["kv_cache_utilization"] in present or names["ready_endpoints"] in present:
            return gen
    return None


def all_candidate_names() -> tuple[str, ...]:
    """Every name generation detection looks for."""
    out = [g.kv_usage for g in VLLM_GENERATIONS]
    for names in c.EPP_GENERATIONS.values():
        out += [names["request_total"], names["kv_cache_utilization"], names["ready_endpoints"]]
    return tuple(dict.fromkeys(out))
