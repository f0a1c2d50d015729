"""Direct-scrape source against a loopback HTTP server serving the exposition fixtures."""

from __future__ import annotations

import time

import pytest

from observer import conventions as c
from observer.sources.samples import EppTarget, PodTarget
from observer.sources.scrape import (
    MAX_BODY_SETTING,
    TIMEOUT_SETTING,
    ScrapeSource,
    ScrapeSourceConfig,
    counter_rate,
    parse_exposition,
)
from observer.sources.untrusted import ValueCleaner, clean_value
from tests.observer.sources.exposition_server import Pages, fixture, serve
from tests.support.hostile import CASES as HOSTILE_CASES
from tests.support.hostile import hostile
from tests.support.httpstub import Answer, Seen, serve_http
from tests.support.oversize import exposition_pad

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


def test_hostile_exposition_label_values_are_made_safe_and_counted() -> None:
    """A pod can expose anything: here a 1 MB `model_name` ending with NUL on every sample. The
    sample's model is the bounded, hashed form a span would give (was: the 1 MB value), and each
    rewritten label value is counted."""
    big = "m" * 1_000_000 + "\x00"
    body = fixture("vllm_v1").replace('model_name="llama-3-8b"', f'model_name="{big}"')
    pages = Pages()
    pages.bodies["/hostile"] = body
    pages.bodies["/clean"] = fixture("vllm_v1")
    with serve(pages) as addr:
        pods = (
            PodTarget("p-hostile", c.ROLE_DECODE, "pool-a", metrics_url=f"http://{addr}/hostile"),
            PodTarget("p-clean", c.ROLE_DECODE, "pool-a", metrics_url=f"http://{addr}/clean"),
        )
        src = ScrapeSource(lambda: pods)
        snap = src.read(1000.0)
        src.close()
    hostile, clean = snap.pod("p-hostile"), snap.pod("p-clean")
    assert hostile is not None
    assert clean is not None
    assert hostile.model == clean_value(big)
    assert len(hostile.model) == c.MAX_VALUE_CHARS
    assert hostile.model.startswith("m" * 200)
    assert hostile.kv_usage == clean.kv_usage == 0.42  # the values are read as before
    assert clean.model == "llama-3-8b"
    rewritten = body.count(big)  # every sample of the hostile pod carrying the model label
    assert rewritten > 10
    assert src.cleaner.count == rewritten


def test_parse_exposition_keeps_clean_label_values_as_they_are() -> None:
    counted = ValueCleaner(c.SOURCE_SCRAPE)
    parsed = parse_exposition(fixture("vllm_v1"), counted)
    assert counted.count == 0
    assert {
        lab[c.VLLM_LABEL_MODEL] for rows in parsed.values() for lab, _ in rows if c.VLLM_LABEL_MODEL in lab
    } == {"llama-3-8b"}
    nul = parse_exposition('# TYPE g gauge\ng{pod="a\x00b"} 1\n', counted)
    assert nul["g"] == (({"pod": "a" + c.VALUE_REPLACEMENT + "b"}, 1.0),)
    assert counted.count == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("kind", "case"), HOSTILE_CASES)
def test_a_page_too_large_or_too_slow_fails_that_pod_only(kind: str, case: str) -> None:
    """A pod's page over `max_body_bytes` (declared, endless, or gzip inflating past it), or one
    that keeps coming past `timeout_seconds` (a header line or a body chunk every 0.2 s, never a
    per-read timeout), is that pod's failed read: unknown, in `stale_pods`, the setting named in
    `error`; the other pod and the EPP are read. Exactly the cap, or the page at once, is read."""
    bad = hostile(kind, fixture("vllm_v1").encode(), exposition_pad)
    pages = {"/ok": fixture("vllm_v1").encode(), "/epp": fixture("epp_llm_d_epp").encode()}

    def answer(req: Seen) -> Answer:
        return bad.reply(case) if req.path == "/bad" else (200, pages[req.path])

    with serve_http(answer, content_type="text/plain; version=0.0.4") as (url, _):
        pods = (
            PodTarget("p-bad", c.ROLE_DECODE, "pool-a", metrics_url=f"{url}/bad"),
            PodTarget("p-ok", c.ROLE_DECODE, "pool-a", metrics_url=f"{url}/ok"),
        )
        src = ScrapeSource(
            lambda: pods,
            epps=(EppTarget("pool-a", f"{url}/epp"),),
            config=ScrapeSourceConfig(**bad.limits),
        )
        start = time.monotonic()
        snap = src.read(1000.0)
        elapsed = time.monotonic() - start
        src.close()
    assert snap.ok
    ok, hit = snap.pod("p-ok"), snap.pod("p-bad")
    assert ok is not None
    assert hit is not None
    assert ok.kv_usage is not None
    assert snap.pools[0].queue_size is not None
    if case == bad.fine:
        assert snap.stale_pods == ()
        assert hit.kv_usage == ok.kv_usage
        return
    assert snap.stale_pods == ("p-bad",)
    assert hit.kv_usage is None
    bad.refused(case, snap.error, elapsed, max_body_setting=MAX_BODY_SETTING, timeout_setting=TIMEOUT_SETTING)
