"""Direct-scrape source against a loopback HTTP server serving the exposition fixtures."""

from __future__ import annotations

import pytest

from observer import conventions as c
from observer.sources.samples import EppTarget, PodTarget
from observer.sources.scrape import ScrapeSource, counter_rate
from tests.observer.sources.exposition_server import Pages, fixture, serve

EPPS = ("epp_llm_d_epp", "epp_inference_objective", "epp_inference_model")


def test_counter_rate_handles_resets_and_unknowns() -> None:
    assert counter_rate(100.0, 10.0, 130.0, 20.0) == 3.0
    assert counter_rate(100.0, 10.0, 20.0, 20.0) == 2.0  # reset: counted from zero
    assert counter_rate(None, None, 5.0, 20.0) is None
    assert counter_rate(1.0, 20.0, 5.0, 20.0) is None


@pytest.mark.parametrize("vllm", ["vllm_v1", "vllm_legacy"])
@pytest.mark.parametrize("epp", EPPS)
def test_every_generation_gives_the_same_samples(vllm: str, epp: str) -> None:
    pages = Pages()
    pages.bodies["/pod"] = fixture(vllm)
    pages.bodies["/down"] = None
    pages.bodies["/epp"] = fixture(epp)
    with serve(pages) as addr:
        pods = (
            PodTarget("p-0", c.ROLE_PREFILL, "pool-a", metrics_url=f"http://{addr}/pod"),
            PodTarget("p-down", c.ROLE_DECODE, "pool-a", metrics_url=f"http://{addr}/down"),
        )
        src = ScrapeSource(lambda: pods, epps=(EppTarget("pool-a", f"http://{addr}/epp"),))
        first = src.read(1000.0)
        assert first.ok
        assert first.vllm_generation == (
            c.VLLM_GENERATION_V1 if vllm == "vllm_v1" else c.VLLM_GENERATION_LEGACY
        )
        assert first.epp_generation == epp.removeprefix("epp_")
        p0 = first.pod("p-0")
        assert p0 is not None
        assert (p0.kv_usage, p0.cpu_offload_usage, p0.running, p0.waiting) == (0.42, 0.3, 3.0, 2.0)
        assert p0.disk_bytes == 1.5e9
        assert p0.model == "llama-3-8b"
        assert p0.preemption_rate is None  # first scrape: rates unknown
        down = first.pod("p-down")
        assert down is not None
        assert down.kv_usage is None
        assert down.running is None
        assert first.stale_pods == ("p-down",)
        pool = first.pool("pool-a")
        assert pool is not None
        assert (pool.kv_cache_utilization, pool.queue_size, pool.running_requests, pool.ready_endpoints) == (
            0.5,
            4.0,
            7.0,
            3.0,
        )
        # 10 s later: +50 preemptions, +1000 device-cached tokens, generation counter reset to 100
        body = fixture(vllm)
        body = body.replace(
            '_total{engine="0",model_name="llama-3-8b"} 5.0',
            '_total{engine="0",model_name="llama-3-8b"} 55.0',
        )
        body = body.replace('source="device"} 4000.0', 'source="device"} 5000.0')
        body = body.replace(
            'vllm:generation_tokens_total{engine="0",model_name="llama-3-8b"} 3000.0',
            'vllm:generation_tokens_total{engine="0",model_name="llama-3-8b"} 100.0',
        )
        with pages.lock:
            pages.bodies["/pod"] = body
        second = src.read(1010.0)
        p0 = second.pod("p-0")
        assert p0 is not None
        assert p0.preemption_rate == 5.0
        assert p0.generation_tokens_rate == 10.0
        assert p0.prefix_hits_rate == 0.0
        assert p0.cached_tokens_rate_by_tier == {c.TIER_HBM: 100.0, c.TIER_DRAM: 0.0, c.TIER_DISK: 0.0}
        src.close()


def test_all_targets_failing_is_a_failed_source() -> None:
    pages = Pages()
    with serve(pages) as addr:
        src = ScrapeSource(lambda: (PodTarget("p", c.ROLE_DECODE, "x", metrics_url=f"http://{addr}/nope"),))
        snap = src.read(5.0)
        assert not snap.ok
        assert snap.error
        assert "404" in snap.error
        assert snap.pods[0].kv_usage is None
        src.close()
