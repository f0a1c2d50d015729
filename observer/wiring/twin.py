"""Build the twin for the CLI: a named scenario or a Mooncake JSONL trace, with its sinks."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from simulator import mooncake
from simulator.actuation import SimActuator
from simulator.engine import Simulation
from simulator.events import FleetSink
from simulator.fleet import EVENT_PHASE, Fleet
from simulator.profile import load_profile
from simulator.scenarios import Twin, build_scenario, scenario_names

# A policy is the extension point of the control loop: called once per tick with the twin
# (its `actuator` sets replicas and scorer weights) and the simulated time. The autoscaler's
# simulator actuator plugs in here once it exists.
Policy = Callable[[Twin, float], None]


# The longest run the twin simulates: a week. Idle time costs ~0.2 s of wall time per simulated
# hour (more with traffic), so a trace with one absurd timestamp (1e300 ms) ran "forever".
MAX_TWIN_SECONDS = 7 * 86400.0
DRAIN_SECONDS = 120.0  # a trace's default duration: its last arrival plus this


class TwinError(ValueError):
    """Bad scenario or trace: one line for the CLI."""


def is_trace(source: str) -> bool:
    return source.endswith(".jsonl")


def build_twin(
    source: str,
    *,
    sink: FleetSink,
    seed: int = 0,
    duration: float | None = None,
    start: float = 0.0,
    tenants: int = 8,
    mooncake_dir: str | Path | None = None,
    kv_events: bool | None = False,
) -> Twin:
    """A named scenario (see `simulator.scenarios`) or a Mooncake-format JSONL trace file.

    For a trace file, `duration` (default: up to the last arrival plus 120 s of drain) caps the
    replayed arrivals; tenants are derived by `simulator.mooncake.tenant_of` into `tenants` buckets.
    """
    last = check_source(source, tenants=tenants, duration=duration)
    if not is_trace(source):
        try:
            return build_scenario(
                source,
                sink=sink,
                seed=seed,
                duration=duration,
                start=start,
                mooncake_dir=mooncake_dir,
                kv_events=kv_events,
            )
        except FileNotFoundError as exc:
            raise TwinError(str(exc)) from exc
    path = Path(source)
    if duration is None:
        duration = math.ceil(last) + DRAIN_SECONDS
    prof = load_profile("default")
    sim = Simulation(start)
    fleet = Fleet(sim, prof, sink, seed=seed, kv_events=kv_events)
    name = path.stem
    sim.at(start, lambda: fleet.event(EVENT_PHASE, scenario=name, phase=name))
    try:
        fleet.add_workload(mooncake.replay(str(path), tenants=tenants, horizon=duration))
    except (KeyError, ValueError) as exc:
        raise TwinError(f"{path} is not a Mooncake JSONL trace: {exc}") from exc
    fleet.start_sampling()
    return Twin(name, sim, fleet, SimActuator(fleet), float(duration), ((name, start),))


def check_source(source: str, *, tenants: int = 8, duration: float | None = None) -> float:
    """TwinError (one line) unless `source` is a scenario name or a readable Mooncake trace with
    at least one request; the whole trace is read (a bad line fails before a run, not in it).
    The run (`duration`, else a trace's last arrival plus its drain) is at most
    `MAX_TWIN_SECONDS`. Returns the trace's last arrival offset (seconds; 0 for a scenario)."""
    if duration is not None and not 0 < duration <= MAX_TWIN_SECONDS:
        raise TwinError(f"duration must be > 0 and at most {MAX_TWIN_SECONDS:.0f} s (7 days)")
    if not is_trace(source):
        if source in scenario_names():
            return 0.0
        if Path(source).is_file():
            raise TwinError(
                f"{source}: a trace file must be a Mooncake-format JSON-lines file named *.jsonl "
                f"(or give a scenario: {', '.join(scenario_names())})"
            )
        raise TwinError(f"unknown scenario {source!r}; expected one of {', '.join(scenario_names())}")
    path = Path(source)
    if not path.is_file():
        raise TwinError(f"trace file not found: {path}")
    last = _check_trace(path, tenants)
    if duration is None and math.ceil(last) + DRAIN_SECONDS > MAX_TWIN_SECONDS:
        raise TwinError(
            f"{path}: its last request arrives {last:.6g} s after the start, beyond the "
            f"{MAX_TWIN_SECONDS:.0f} s (7 days) a run simulates: give --duration to replay its start"
        )
    return last


def _check_trace(path: Path, tenants: int) -> float:
    """Read the whole trace once before the run (a bad line fails now, not mid-run); returns
    the last arrival offset (seconds)."""
    last, count = 0.0, 0
    try:
        for spec in mooncake.replay(str(path), tenants=tenants):
            last, count = spec.arrival, count + 1
    except mooncake.TraceFormatError as exc:
        raise TwinError(str(exc)) from exc
    except UnicodeDecodeError as exc:
        raise TwinError(f"{path} is not a Mooncake JSONL trace: not UTF-8 text (byte {exc.start})") from exc
    if count == 0:
        raise TwinError(f"{path} holds no requests (an empty trace)")
    return last
