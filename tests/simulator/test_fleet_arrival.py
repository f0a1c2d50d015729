"""The fleet model announces every request when it reaches the router, before it completes."""

from __future__ import annotations

from dataclasses import dataclass, field

from simulator.emit.fanout import Fanout, Recorder
from simulator.events import ArrivedRequest, CompletedRequest, FleetEvent, KvEvent, PodSnapshot
from simulator.fleet import MemorySink, NullSink
from simulator.scenarios import SCENARIOS, build_scenario

T0 = 1_800_000_000.0


@dataclass
class _Order:
    """A FleetSink logging arrivals and completions in call order, with the sim time of each call."""

    clock: list[float] = field(default_factory=lambda: [0.0])
    log: list[tuple[str, str, float]] = field(default_factory=list)

    def request_arrived(self, arrival: ArrivedRequest) -> None:
        self.log.append(("arrived", arrival.request_id, self.clock[0]))

    def request_completed(self, request: CompletedRequest) -> None:
        self.log.append(("completed", request.request_id, self.clock[0]))

    def pods_sampled(self, now: float, pods: tuple[PodSnapshot, ...]) -> None:
        return None

    def kv_events(self, events: tuple[KvEvent, ...]) -> None:
        return None

    def fleet_event(self, event: FleetEvent) -> None:
        return None


def test_every_request_arrives_at_its_router_time_before_it_completes() -> None:
    duration, seed = 40.0, 2
    memory, order = MemorySink(), _Order()
    twin = build_scenario(
        "steady", sink=Fanout([memory, order, NullSink()]), seed=seed, duration=duration, start=T0
    )
    while (nxt := twin.next_event_time()) is not None and nxt <= twin.end:
        order.clock[0] = nxt
        twin.run_until(nxt)
    spec = SCENARIOS["steady"].workload(duration, seed, twin.fleet.profile.block_tokens, None)
    expected = [(r.request_id, r.tenant, T0 + r.arrival) for r in spec if r.arrival <= duration]
    got = [(a.request_id, a.tenant, a.at) for a in memory.arrivals]
    assert got == expected  # one arrival per request of the workload, in order, at its arrival time
    assert {a.model for a in memory.arrivals} == {twin.fleet.profile.model}
    assert len(memory.arrivals) == twin.fleet.arrived
    # announced when it happens (sim clock == arrival time), and before its completion
    seen: dict[str, int] = {}
    for i, (kind, rid, when) in enumerate(order.log):
        if kind == "arrived":
            assert rid not in seen
            seen[rid] = i
            assert when == next(a.at for a in memory.arrivals if a.request_id == rid)
        else:
            assert seen[rid] < i
    by_id = {a.request_id: a for a in memory.arrivals}
    for r in memory.requests:
        a = by_id[r.request_id]
        assert (a.tenant, a.model, a.at) == (r.tenant, r.model, r.arrival)
    in_flight = len(memory.arrivals) - len(memory.requests)
    assert in_flight == twin.fleet.in_flight > 0  # some arrived and are not completed at the end


def test_memory_sink_keeps_arrivals_bounded_and_sinks_pass_them_on() -> None:
    a, b, rec = MemorySink(max_items=3), MemorySink(), Recorder()
    fan = Fanout([a, b, rec])
    for i in range(5):
        fan.request_arrived(ArrivedRequest(request_id=f"r{i}", tenant="t", model="m", at=T0 + i))
    assert [x.request_id for x in a.arrivals] == ["r0", "r1", "r2"]
    assert a.dropped == 2
    assert len(b.arrivals) == 5
    assert rec.total_arrivals == 5
    assert rec.total_requests == 0  # arrivals are not completions
