"""`pd-observer simulate`: the twin alone, sending OTLP over HTTP to any endpoint and serving
its vLLM/EPP metrics for Prometheus. Paced at N× real time, or as fast as possible (`speed 0`).

Fast runs start the simulated clock `duration` seconds in the past, so the records land in the
receiver's recent windows; paced runs start now.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from typing import TextIO

from rich.console import Console
from rich.progress import Progress

from observer.wiring.demo import CountingExporter, _graceful, http_emitter, http_exporter, traces_endpoint
from observer.wiring.twin import Policy, build_twin
from simulator.clock import run_paced
from simulator.emit.fanout import Fanout
from simulator.emit.metrics import TARGETS_PATH, MetricsEmitter


@dataclass(frozen=True, slots=True)
class SimulateResult:
    requests: int
    spans: int
    sim_seconds: float
    wall_seconds: float
    stopped: bool
    lost_spans: int = 0  # spans that did not reach the endpoint (failed export, dropped, unsent)
    failed_exports: int = 0

    @property
    def export_failed(self) -> bool:
        return self.lost_spans > 0 or self.failed_exports > 0


def run_simulate(
    scenario: str,
    *,
    otlp_endpoint: str,
    duration: float | None = None,
    speed: float = 1.0,
    seed: int = 0,
    metrics_host: str = "127.0.0.1",
    metrics_port: int = 0,
    token: str | None = None,
    policy: Policy | None = None,
    stream: TextIO | None = None,
) -> SimulateResult:
    out = stream or sys.stdout
    console = Console(file=out)
    stop = threading.Event()
    # The first export that fails after the SDK's retries stops the run: every later span
    # would be lost too (a closed port, a wrong path, a missing token).
    exports = CountingExporter(http_exporter(traces_endpoint(otlp_endpoint), token), on_failure=stop.set)
    emitter = http_emitter(traces_endpoint(otlp_endpoint), token, exporter=exports)
    metrics = MetricsEmitter()
    fast = speed <= 0
    from simulator.scenarios import SCENARIOS

    span = (
        duration
        if duration is not None
        else SCENARIOS[scenario].default_duration
        if scenario in SCENARIOS
        else 0.0
    )
    start = time.time() - span if fast else time.time()
    twin = build_twin(scenario, sink=Fanout([emitter, metrics]), seed=seed, duration=duration, start=start)
    server = metrics.serve(metrics_host, metrics_port)
    wall0 = time.monotonic()
    print(
        f"pd-observer simulate: scenario {twin.name}, {twin.duration:.0f} simulated s "
        f"{'as fast as possible' if fast else f'at {speed:g}x'} -> {traces_endpoint(otlp_endpoint)}",
        file=out,
        flush=True,
    )
    print(f"  twin metrics: {server.url}{TARGETS_PATH} (http_sd targets)", file=out, flush=True)
    try:
        with _graceful(stop):
            if fast:
                with Progress(console=console, transient=False) as progress:
                    task = progress.add_task("simulating", total=twin.duration)
                    t = twin.now
                    while t < twin.end and not stop.is_set():
                        t = min(twin.end, t + 10.0)
                        twin.run_until(t)
                        if policy is not None:
                            policy(twin, t)
                        progress.update(task, completed=t - twin.sim.start)
                stopped = stop.is_set()
            else:

                def tick(now: float) -> None:
                    if policy is not None:
                        policy(twin, now)

                res = run_paced(twin, speed, twin.end, on_tick=tick, stop_event=stop)
                stopped = res.stopped
        emitter.shutdown()  # flushes every span through the exporter
    finally:
        server.close()
    failed = exports.failed_exports
    result = SimulateResult(
        requests=emitter.stats.requests,
        spans=emitter.stats.spans,
        sim_seconds=twin.now - twin.sim.start,
        wall_seconds=time.monotonic() - wall0,
        stopped=stopped and not failed,  # stopped by a signal, not by the failed export
        lost_spans=max(0, emitter.stats.spans - exports.exported_spans),
        failed_exports=failed,
    )
    tail = " (stopped early)" if result.stopped else ""
    if result.export_failed:
        why = (
            f"{failed} failed export{'' if failed == 1 else 's'}; the run stopped at the first"
            if failed
            else "dropped: the exporter's queue was full"
        )
        tail = (
            f"; EXPORT FAILED: {result.lost_spans} of {result.spans} spans not delivered to "
            f"{traces_endpoint(otlp_endpoint)} ({why})"
        )
    print(
        f"done: {result.requests} requests, {result.spans} spans in {result.sim_seconds:.0f} simulated s "
        f"({result.wall_seconds:.1f} s wall){tail}",
        file=out,
        flush=True,
    )
    return result
