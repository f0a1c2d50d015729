"""Physics sanity of the fleet model, on the named scenarios."""

from __future__ import annotations

import hashlib
import json
import statistics
from pathlib import Path

import pytest

from observer import conventions as c
from simulator.events import CompletedRequest
from simulator.fleet import MemorySink, PrefillPod
from simulator.profile import load_profile
from simulator.scenarios import HEAVY, VICTIM, build_scenario
from simulator.workload import system_prompt_chain


def _digest(sink: MemorySink) -> str:
    h = hashlib.sha256()
    for r in sink.requests:
        h.update(repr(r).encode())
    for t, pods in sink.samples:
        h.update(repr((t, pods)).encode())
    for e in sink.kv:
        h.update(repr(e).encode())
    return h.hexdigest()


def _run(name: str, seed: int = 1, duration: float | None = None, **kw: object) -> tuple[MemorySink, object]:
    sink = MemorySink()
    twin = build_scenario(name, sink=sink, seed=seed, duration=duration, **kw)  # type: ignore[arg-type]
    twin.run()
    return sink, twin


def test_same_seed_same_output_and_seed_matters() -> None:
    a, _ = _run("cache-cascade", seed=3, duration=150)
    b, _ = _run("cache-cascade", seed=3, duration=150)
    other, _ = _run("cache-cascade", seed=4, duration=150)
    assert len(a.requests) > 200
    assert a.kv
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(other)


def _pre_decode_share(reqs: list[CompletedRequest]) -> float:
    pre = sum((r.decode.arrival - r.arrival) if r.prefill else 0.0 for r in reqs)
    return pre / sum(r.ttft for r in reqs)


def _decode_busy(sink: MemorySink, t0: float, t1: float) -> float:
    window = [(t, pods) for t, pods in sink.samples if t0 <= t <= t1]
    (ta, first), (tb, last) = window[0], window[-1]
    before = {p.pod: p.busy_seconds for p in first if p.role == c.ROLE_DECODE}
    after = {p.pod: p.busy_seconds for p in last if p.role == c.ROLE_DECODE}
    return sum(after[k] - before[k] for k in after) / ((tb - ta) * len(after))


def test_starvation_present_in_prefill_burst_absent_in_steady() -> None:
    sink, twin = _run("prefill-burst", duration=300)
    phases = dict(twin.phases)  # type: ignore[attr-defined]
    b0 = phases["prefill-burst"]
    b1 = phases["recovery"]
    during = [r for r in sink.requests if b0 + 30 <= r.decode.finished < b1]
    assert _pre_decode_share(during) >= 0.5
    assert _decode_busy(sink, b0 + 30, b1) <= 0.5
    before = [r for r in sink.requests if 30 <= r.decode.finished < b0]
    assert _decode_busy(sink, 30, b0) > 0.5  # same fleet before the burst: no starvation
    assert statistics.median(r.ttft for r in during) > 10 * statistics.median(r.ttft for r in before)

    steady, _ = _run("steady", duration=300)
    reqs = [r for r in steady.requests if r.decode.finished >= 30]
    busy = _decode_busy(steady, 30, 300)
    assert busy > 0.5
    assert not (_pre_decode_share(reqs) >= 0.5 and busy <= 0.5)


def test_cache_cascade_demotes_victim_and_its_ttft_rises() -> None:
    sink, twin = _run("cache-cascade", duration=600)
    start = dict(twin.phases)["cache-cascade"]  # type: ignore[attr-defined]
    victim = [r for r in sink.requests if r.tenant == VICTIM]
    base = [r for r in victim if 30 <= r.arrival < start]
    hit = [r for r in victim if r.arrival >= start + 100]
    assert len(base) >= 10
    assert len(hit) >= 10
    assert all(r.cached_by_tier.get(c.TIER_DRAM, 0) == 0 for r in base)
    dram_share = sum(r.cached_by_tier.get(c.TIER_DRAM, 0) for r in hit) / sum(r.cached_tokens for r in hit)
    assert dram_share >= 0.3
    assert statistics.median(r.ttft for r in hit) >= 2.0 * statistics.median(r.ttft for r in base)
    # the router keeps sending the victim to the pod where its prefix went cold
    pods = [r.prefill.pod for r in hit if r.prefill is not None]
    assert max(pods.count(p) for p in set(pods)) >= 0.9 * len(pods)
    # HBM -> DRAM demotion of the victim's own prefix blocks, as KV events (GPU removed, CPU stored)
    chain = set(system_prompt_chain(VICTIM, 48))
    removed_gpu = {
        b
        for e in sink.kv
        if e.kind == c.KV_EVENT_BLOCK_REMOVED and e.medium == "GPU" and e.time >= start
        for b in e.block_hashes
    }
    stored_cpu = {
        b
        for e in sink.kv
        if e.kind == c.KV_EVENT_BLOCK_STORED and e.medium == "CPU" and e.time >= start
        for b in e.block_hashes
    }
    assert len(chain & removed_gpu & stored_cpu) >= 24
    # fleet load (GPU view) stays flat-ish: the heavy tenant is not what hurts the victim
    assert any(r.tenant == HEAVY for r in sink.requests)
    last = sink.samples[-1][1]
    assert sum(p.demotions_by_tier[c.TIER_HBM] for p in last if p.role == c.ROLE_PREFILL) > 0


def test_littles_law_holds_for_system_and_prefill_queues() -> None:
    sink = MemorySink()
    twin = build_scenario("prefill-burst", sink=sink, seed=2, duration=240)
    twin.run()
    twin.run_until(twin.end + 600)  # drain everything that arrived
    fleet = twin.fleet
    fleet.sample_now()
    assert fleet.arrived == fleet.completed == len(sink.requests)
    total_time = sum(r.e2e for r in sink.requests)
    # L * T = lambda * T * W  <=>  integral of N(t) dt = sum of sojourn times
    assert fleet.in_flight_area == pytest.approx(total_time, rel=0.01)
    t = twin.now - twin.sim.start
    lam = fleet.arrived / t
    assert fleet.in_flight_area / t == pytest.approx(lam * total_time / fleet.arrived, rel=0.01)
    for pod in fleet.pods[c.ROLE_PREFILL]:
        assert isinstance(pod, PrefillPod)
        waits = [
            r.prefill.scheduled - r.prefill.arrival
            for r in sink.requests
            if r.prefill and r.prefill.pod == pod.name
        ]
        assert pod.queue_arrivals == len(waits)
        assert pod.queue_area == pytest.approx(sum(waits), rel=0.01, abs=1e-6)
        assert pod.queue_area > 1.0  # the burst queued


def _ceilings(path: Path) -> tuple[float, float]:
    """Infinite perfectly routed cache: block-weighted share (first sighting = miss), and an
    order-independent token bound (each distinct block misses at least once, at its smallest size)."""
    seen: set[int] = set()
    blocks = hits = tokens = 0
    smallest: dict[int, int] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        n = row["input_length"]
        tokens += n
        for i, b in enumerate(row["hash_ids"]):
            blocks += 1
            hits += b in seen
            seen.add(b)
            smallest[b] = min(smallest.get(b, 1 << 30), max(0, min(512, n - i * 512)))
    return hits / blocks, (tokens - sum(smallest.values())) / tokens


@pytest.mark.parametrize(
    ("trace", "scenario", "duration", "expected"),
    [
        ("conversation", "mooncake-conversation", 900.0, 0.366),
        ("synthetic", "mooncake-synthetic", None, 0.640),
    ],
)
def test_mooncake_hit_rate_never_above_infinite_cache_ceiling(
    mooncake_dir: Path, trace: str, scenario: str, duration: float | None, expected: float
) -> None:
    block_ceiling, token_bound = _ceilings(mooncake_dir / f"{trace}_trace.jsonl")
    assert block_ceiling == pytest.approx(expected, abs=0.001)
    sink, _ = _run(scenario, duration=duration, mooncake_dir=mooncake_dir, kv_events=False)
    prompt = sum(r.prompt_tokens for r in sink.requests)
    cached = sum(r.cached_tokens for r in sink.requests)
    block_hits = sum(-(-r.cached_tokens // 512) for r in sink.requests)
    block_total = sum(-(-r.prompt_tokens // 512) for r in sink.requests)
    assert 0.05 < cached / prompt <= token_bound
    assert block_hits / block_total <= block_ceiling
    off = load_profile(
        "default",
        {
            "cache": dict.fromkeys(
                ("hbm_blocks", "dram_blocks", "disk_blocks", "decode_hbm_blocks", "decode_dram_blocks"), 0
            )
        },
    )
    cold, _ = _run(scenario, duration=120, mooncake_dir=mooncake_dir, kv_events=False, profile=off)
    assert cold.requests
    assert sum(r.cached_tokens for r in cold.requests) == 0
