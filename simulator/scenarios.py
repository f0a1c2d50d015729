"""Named scenarios: a deployment, a workload and phase markers, built into a runnable `Twin`.

`build_scenario(name, sink=..., seed=..., duration=...)` returns a `Twin` whose simulation
starts at `start` (epoch seconds) and runs as fast as possible with `twin.run()`, or paced by
an external driver through `twin.next_event_time()` / `twin.run_until(t)`.

Phase times are fractions of the duration, so a shorter run keeps the same story.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from simulator import mooncake
from simulator.actuation import SimActuator
from simulator.engine import Simulation
from simulator.events import FleetSink
from simulator.fleet import EVENT_PHASE, Fleet
from simulator.profile import Profile, load_profile, merge, profile_from_dict
from simulator.workload import (
    Burst,
    Diurnal,
    LengthDist,
    Poisson,
    RequestSpec,
    TenantSpec,
    synthetic_workload,
)

VICTIM = "tenant-a"
HEAVY = "tenant-b"
BURST_TENANT = "batch-docs"

# Tighter HBM prefix budget for the cascade (as on a 70B TP4 pod whose running sequences hold
# most of HBM): 240 blocks of 512 tokens.
CASCADE_OVERRIDES: Mapping[str, Any] = {"cache": {"hbm_blocks": 240}}
# Decode-heavy deployment (chat traffic): starvation shows when prefill saturates.
PD_2_6: Mapping[str, Any] = {"prefill": {"replicas": 2}, "decode": {"replicas": 6}}


@dataclass(frozen=True, slots=True)
class Phase:
    """A named phase starting at `at` (fraction of the duration)."""

    name: str
    at: float


@dataclass(frozen=True, slots=True)
class ScenarioSpec:
    """How to build a scenario."""

    name: str
    description: str
    default_duration: float
    phases: tuple[Phase, ...]
    overrides: Mapping[str, Any]
    workload: Callable[[float, int, int, Path | None], Iterator[RequestSpec]]


@dataclass
class Twin:
    """A built scenario: the simulation, the fleet on it and its actuator."""

    name: str
    sim: Simulation
    fleet: Fleet
    actuator: SimActuator
    duration: float
    phases: tuple[tuple[str, float], ...]  # (name, absolute start time)

    @property
    def now(self) -> float:
        return self.sim.now

    @property
    def end(self) -> float:
        return self.sim.start + self.duration

    def next_event_time(self) -> float | None:
        return self.sim.next_event_time()

    def run_until(self, time: float) -> None:
        self.sim.run_until(time)

    def run(self, duration: float | None = None) -> None:
        """Run to the end (or `duration` seconds from now) as fast as possible."""
        self.sim.run_until(self.end if duration is None else self.sim.now + duration)

    def phase_at(self, time: float) -> str:
        current = self.phases[0][0] if self.phases else ""
        for name, start in self.phases:
            if time >= start:
                current = name
        return current


def _background(rate: float, end: float = math.inf) -> list[TenantSpec]:
    """Six chat tenants with 2k-8k-token system prompts, sharing `rate` req/s."""
    shares = (0.3, 0.2, 0.15, 0.15, 0.1, 0.1)
    blocks = (4, 8, 16, 6, 12, 10)
    return [
        TenantSpec(
            name=f"tenant-{chr(ord('c') + i)}",
            arrivals=Poisson(rate * s),
            system_prompt_blocks=b,
            user_tokens=LengthDist(600.0, 0.6, 16, 16_384),
            output_tokens=LengthDist(120.0, 0.5, 1, 2048),
            end=end,
        )
        for i, (s, b) in enumerate(zip(shares, blocks, strict=True))
    ]


def _victim() -> TenantSpec:
    return TenantSpec(
        name=VICTIM,
        arrivals=Poisson(0.15),
        system_prompt_blocks=48,  # a 24k-token system prompt (RAG instructions + few-shot)
        user_tokens=LengthDist(300.0, 0.3, 16, 4096),
        output_tokens=LengthDist(100.0, 0.3, 1, 1024),
    )


def _heavy(start: float) -> TenantSpec:
    return TenantSpec(
        name=HEAVY,
        arrivals=Poisson(3.0),
        system_prompt_blocks=4,
        user_tokens=LengthDist(12_000.0, 0.2, 1024, 65_536),  # unique documents
        output_tokens=LengthDist(100.0, 0.3, 1, 1024),
        start=start,
    )


def _burst(start: float, end: float) -> TenantSpec:
    return TenantSpec(
        name=BURST_TENANT,
        arrivals=Burst(0.0, 4.0, start, end),
        system_prompt_blocks=1,
        user_tokens=LengthDist(32_000.0, 0.15, 8192, 120_000),  # long documents, short answers
        output_tokens=LengthDist(8.0, 0.3, 1, 64),
        start=start,
        end=end,
    )


def _synthetic(tenants: Callable[[float], list[TenantSpec]]) -> Callable[..., Iterator[RequestSpec]]:
    def make(duration: float, seed: int, block_tokens: int, _dir: Path | None) -> Iterator[RequestSpec]:
        return synthetic_workload(tenants(duration), seed, block_tokens, horizon=duration)

    return make


def _mooncake(trace: str) -> Callable[..., Iterator[RequestSpec]]:
    def make(duration: float, seed: int, block_tokens: int, directory: Path | None) -> Iterator[RequestSpec]:
        del seed, block_tokens  # the trace is the workload; its blocks are 512 tokens
        return mooncake.replay(trace, directory=directory, horizon=duration)

    return make


def _churn(d: float) -> list[TenantSpec]:
    out = []
    for i in range(12):
        start = i * d / 12
        out.append(
            TenantSpec(
                name=f"churn-{i:02d}",
                arrivals=Poisson(1.0),
                system_prompt_blocks=8 + 2 * (i % 5),
                user_tokens=LengthDist(600.0, 0.6, 16, 16_384),
                output_tokens=LengthDist(120.0, 0.5, 1, 2048),
                start=start,
                end=start + d / 3,
            )
        )
    return out


SCENARIOS: dict[str, ScenarioSpec] = {
    s.name: s
    for s in (
        ScenarioSpec(
            "steady",
            "Six chat tenants at a constant 4 req/s on 2 prefill / 6 decode pods.",
            600.0,
            (Phase("steady", 0.0),),
            PD_2_6,
            _synthetic(lambda d: _background(4.0)),
        ),
        ScenarioSpec(
            "diurnal",
            "The steady tenants with a daily sine (amplitude 0.6) compressed into the duration.",
            1800.0,
            (Phase("night", 0.0), Phase("day", 0.25), Phase("evening", 0.75)),
            PD_2_6,
            _synthetic(
                lambda d: [
                    TenantSpec(
                        t.name,
                        Diurnal(t.arrivals.peak, 0.6, d, -math.pi / 2),
                        t.system_prompt_blocks,
                        t.user_tokens,
                        t.output_tokens,
                    )
                    for t in _background(4.0)
                ]
            ),
        ),
        ScenarioSpec(
            "prefill-burst",
            "Steady chat plus a burst of 32k-token documents (4 req/s) in the middle third: "
            "prefill saturates, decode starves.",
            300.0,
            (Phase("steady", 0.0), Phase("prefill-burst", 1 / 3), Phase("recovery", 2 / 3)),
            PD_2_6,
            _synthetic(lambda d: [*_background(4.0), _burst(d / 3, 2 * d / 3)]),
        ),
        ScenarioSpec(
            "cache-cascade",
            f"{VICTIM} (24k-token prefix) is served from HBM until {HEAVY} arrives at one third "
            "with unique 12k-token documents and demotes it to DRAM; the tier-unaware prefix "
            "scorer keeps sending it to the same pod.",
            600.0,
            (Phase("baseline", 0.0), Phase("cache-cascade", 1 / 3)),
            merge(PD_2_6, CASCADE_OVERRIDES),
            _synthetic(lambda d: [*_background(2.0), _victim(), _heavy(d / 3)]),
        ),
        ScenarioSpec(
            "tenant-churn",
            "Twelve tenants, each active for a third of the run, staggered.",
            600.0,
            (Phase("churn", 0.0),),
            PD_2_6,
            _synthetic(_churn),
        ),
        ScenarioSpec(
            "mooncake-conversation",
            "Replay of the Mooncake conversation trace (real timestamps, 1 h).",
            3600.0,
            (Phase("mooncake-conversation", 0.0),),
            {},
            _mooncake("conversation"),
        ),
        ScenarioSpec(
            "mooncake-synthetic",
            "Replay of the Mooncake synthetic trace (Poisson arrivals, 17 min).",
            1030.0,
            (Phase("mooncake-synthetic", 0.0),),
            {},
            _mooncake("synthetic"),
        ),
        ScenarioSpec(
            "story",
            "The demo: steady, then a prefill burst, then a cache cascade.",
            900.0,
            (Phase("steady", 0.0), Phase("prefill-burst", 1 / 3), Phase("cache-cascade", 2 / 3)),
            merge(PD_2_6, CASCADE_OVERRIDES),
            _synthetic(lambda d: [*_background(3.0), _victim(), _burst(d / 3, d / 2), _heavy(2 * d / 3)]),
        ),
    )
}


def scenario_names() -> list[str]:
    return list(SCENARIOS)


def build_scenario(
    name: str,
    *,
    sink: FleetSink,
    seed: int = 0,
    duration: float | None = None,
    start: float = 0.0,
    profile: Profile | str | Path | None = None,
    mooncake_dir: str | Path | None = None,
    kv_events: bool | None = None,
    sample: bool = True,
) -> Twin:
    """Build a named scenario on a fresh Simulation. Scenario overrides apply on the profile."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; expected one of {scenario_names()}")
    spec = SCENARIOS[name]
    if isinstance(profile, Profile):
        prof = profile_from_dict(asdict(profile), spec.overrides)
    else:
        prof = load_profile(profile or "default", spec.overrides)
    dur = spec.default_duration if duration is None else float(duration)
    if dur <= 0:
        raise ValueError("duration must be > 0")
    sim = Simulation(start)
    fleet = Fleet(sim, prof, sink, seed=seed, kv_events=kv_events)
    phases = tuple((p.name, start + p.at * dur) for p in spec.phases)
    for pname, at in phases:
        sim.at(at, lambda n=pname: fleet.event(EVENT_PHASE, scenario=name, phase=n))  # type: ignore[misc]
    fleet.add_workload(
        spec.workload(dur, seed, prof.block_tokens, None if mooncake_dir is None else Path(mooncake_dir))
    )
    if sample:
        fleet.start_sampling()
    return Twin(name, sim, fleet, SimActuator(fleet), dur, phases)
