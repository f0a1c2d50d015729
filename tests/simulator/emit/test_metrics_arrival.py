"""The twin's EPP request counter counts a request when it ARRIVES at the router (like the real EPP).

The autoscaler reads that counter's rate as the arrival rate; counting at completion would lag
by the whole queueing time in a burst.
"""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from observer import conventions as c
from simulator.emit.fanout import Fanout
from simulator.emit.metrics import MetricsEmitter
from simulator.fleet import MemorySink
from simulator.scenarios import BURST_TENANT, SCENARIOS, build_scenario

from .factories import T0, arrival_of, local_request, pd_request

MODEL = "llama-3-70b"


def _epp(em: MetricsEmitter, key: str) -> list[tuple[str, dict[str, str], float]]:
    """Samples of one EPP family (by its conventions key) as the real text parser reads them."""
    name = c.EPP_GENERATIONS[em.epp_generation][key].removesuffix("_total")
    for fam in text_string_to_metric_families(em.render_epp().decode()):
        if fam.name == name:
            return [(s.name, dict(s.labels), s.value) for s in fam.samples]
    raise AssertionError(f"{name} not exposed")


def _requests(em: MetricsEmitter) -> float:
    return sum(v for _, _, v in _epp(em, "request_total"))


def _by_tenant(em: MetricsEmitter) -> dict[str, float]:
    out: dict[str, float] = {}
    for _, labels, v in _epp(em, "request_total"):
        out[labels[c.EPP_LABEL_FAIRNESS]] = out.get(labels[c.EPP_LABEL_FAIRNESS], 0.0) + v
    return out


def _duration_count(em: MetricsEmitter) -> float:
    return sum(v for name, _, v in _epp(em, "request_duration") if name.endswith("_count"))


@pytest.mark.parametrize("generation", list(c.EPP_GENERATIONS))
def test_an_arrived_request_is_counted_before_it_completes(generation: str) -> None:
    em = MetricsEmitter(epp_generation=generation)
    assert _requests(em) == 0
    em.request_arrived(arrival_of(pd_request(0, tenant="acme")))
    em.request_arrived(arrival_of(local_request(0, tenant="beta")))
    ((_, labels, _), *_) = _epp(em, "request_total")
    assert labels[c.EPP_LABEL_MODEL] == labels[c.EPP_LABEL_TARGET_MODEL] == MODEL
    assert _requests(em) == 2  # in flight, nothing completed yet
    if generation == "llm_d_epp":
        assert _by_tenant(em) == {"acme": 1.0, "beta": 1.0}
    # what needs completion data is still empty
    assert _duration_count(em) == 0
    assert _epp(em, "request_error_total") == []


@pytest.mark.parametrize("generation", list(c.EPP_GENERATIONS))
def test_completion_after_arrival_is_not_counted_twice(generation: str) -> None:
    em = MetricsEmitter(epp_generation=generation)
    ok, failed = pd_request(0, tenant="acme"), pd_request(1, tenant="acme", error=True)
    for req in (ok, failed):
        em.request_arrived(arrival_of(req))
    em.request_completed(ok)
    em.request_completed(failed)
    assert _requests(em) == 2
    if generation == "llm_d_epp":
        assert _by_tenant(em) == {"acme": 2.0}
    assert _duration_count(em) == 2  # request-level histogram stays on completion
    assert sum(v for _, _, v in _epp(em, "request_error_total")) == 1  # errors unchanged
    # a completion on its own (its arrival already counted elsewhere) adds nothing to the counter
    em.request_completed(local_request(3, tenant="beta"))
    assert _requests(em) == 2
    assert _duration_count(em) == 3


def test_the_counter_tracks_the_arrival_rate_through_a_prefill_burst() -> None:
    duration, seed, step = 90.0, 1, 5.0
    metrics, memory = MetricsEmitter(), MemorySink()
    twin = build_scenario(
        "prefill-burst", sink=Fanout([metrics, memory]), seed=seed, duration=duration, start=T0
    )
    (_, burst_start), (_, burst_end) = twin.phases[1], twin.phases[2]
    # the workload's own arrivals, regenerated from the scenario spec (independent of the sinks)
    spec = SCENARIOS["prefill-burst"].workload(duration, seed, twin.fleet.profile.block_tokens, None)
    arrivals = [(T0 + r.arrival, r.tenant) for r in spec]

    def arrived(lo: float, hi: float, tenant: str | None = None) -> int:
        return sum(1 for t, who in arrivals if lo < t <= hi and (tenant is None or who == tenant))

    twin.run_until(burst_start)
    assert _requests(metrics) == arrived(T0 - 1, burst_start)
    start_total, start_burst = _requests(metrics), _by_tenant(metrics).get(BURST_TENANT, 0.0)
    start_done = len(memory.requests)
    t = burst_start
    while t < burst_end:  # every 5 s slice of the burst: counter delta == arrivals in the slice
        before = _requests(metrics)
        twin.run_until(t + step)
        assert _requests(metrics) - before == arrived(t, t + step), t
        t += step
    total = _requests(metrics) - start_total
    completed = len(memory.requests) - start_done
    assert total == arrived(burst_start, burst_end) > 0
    assert (
        _by_tenant(metrics)[BURST_TENANT] - start_burst == arrived(burst_start, burst_end, BURST_TENANT) > 0
    )
    # the burst queues: completions lag arrivals, so a completion-fed counter would under-report
    assert completed < 0.75 * total, (completed, total)
