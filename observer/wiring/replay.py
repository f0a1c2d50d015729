"""`pd-observer replay`: a trace or scenario through the twin into an in-process observer.

Fast clock, real OTLP encoding: the twin's `OtlpSpanEmitter` encodes batches with the SDK's
protobuf encoder and they are POSTed to the real receiver in-process (`InProcessObserver`).
The observer runs on the twin's simulated clock. A `Policy` is called every `tick_seconds` of
simulated time and may act on `twin.actuator`; `autoscaler=True` (`pd-observer replay
--autoscaler`) runs the autoscaler in apply mode on the twin (`observer.wiring.autoscale`, fed by
the service's committed records; every span of a tick is delivered before it decides) and puts
its changing decisions in the result.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from observer import conventions as c
from observer.config import Settings, load_settings
from observer.wiring.autoscale import attach_twin_autoscaler
from observer.wiring.inproc import InProcessObserver
from observer.wiring.twin import Policy, build_twin
from simulator.emit.fanout import Fanout, Recorder
from simulator.emit.otlp import OtlpSpanEmitter
from simulator.events import ArrivedRequest, CompletedRequest, FleetEvent, FleetSink, KvEvent, PodSnapshot

DEFAULT_REPLAY_START = 1_700_000_000.0  # a fixed simulated epoch: same seed -> same output


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What a replay produced: the observer's per-tenant answer and the twin's own counts."""

    source: str
    seed: int
    duration: float
    window_seconds: int
    sim_start: float
    sim_end: float
    wall_seconds: float
    requests: int
    spans: int
    bodies: int
    rejected_spans: int
    tenants: tuple[Mapping[str, Any], ...]  # GET /api/v1/tenants entries
    truth: Mapping[str, Mapping[str, Any]]  # tenant -> the twin's exact counts
    events: tuple[Mapping[str, Any], ...] = ()
    decisions: tuple[Mapping[str, Any], ...] | None = None  # the autoscaler's changes, when it ran

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "seed": self.seed,
            "duration_seconds": self.duration,
            "window_seconds": self.window_seconds,
            "sim_start": self.sim_start,
            "sim_end": self.sim_end,
            "wall_seconds": self.wall_seconds,
            "requests": self.requests,
            "spans": self.spans,
            "otlp_bodies": self.bodies,
            "rejected_spans": self.rejected_spans,
            "tenants": list(self.tenants),
            "twin": {k: dict(v) for k, v in self.truth.items()},
            "events": list(self.events),
            **({} if self.decisions is None else {"autoscaler_decisions": list(self.decisions)}),
        }


@dataclass
class TruthSink:
    """Exact per-tenant ground truth of the twin (counts, and every latency for quantiles)."""

    requests: dict[str, int] = field(default_factory=dict)
    prompt: dict[str, int] = field(default_factory=dict)
    cached: dict[str, dict[str, int]] = field(default_factory=dict)
    ttft: dict[str, list[float]] = field(default_factory=dict)
    e2e: dict[str, list[float]] = field(default_factory=dict)
    keep_latencies: bool = True

    def request_arrived(self, arrival: ArrivedRequest) -> None:
        return None

    def request_completed(self, request: CompletedRequest) -> None:
        t = request.tenant
        self.requests[t] = self.requests.get(t, 0) + 1
        self.prompt[t] = self.prompt.get(t, 0) + request.prompt_tokens
        tiers = self.cached.setdefault(t, {})
        for tier, n in request.cached_by_tier.items():
            tiers[tier] = tiers.get(tier, 0) + n
        if self.keep_latencies:
            # Latencies as the vLLM spans show them: from the first engine's arrival (the EPP's
            # routing time before it, `routing_overhead_s`, is outside every llm_request span).
            first = request.prefill if request.prefill is not None else request.decode
            self.ttft.setdefault(t, []).append(request.decode.first_token - first.arrival)
            self.e2e.setdefault(t, []).append(request.decode.finished - first.arrival)

    def pods_sampled(self, now: float, pods: tuple[PodSnapshot, ...]) -> None:
        return None

    def kv_events(self, events: tuple[KvEvent, ...]) -> None:
        return None

    def fleet_event(self, event: FleetEvent) -> None:
        return None

    def summary(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for t in sorted(self.requests):
            cached = {k: v for k, v in sorted(self.cached.get(t, {}).items()) if v}
            total = sum(cached.values())
            out[t] = {
                c.API_REQUESTS: self.requests[t],
                c.API_PROMPT_TOKENS: self.prompt[t],
                c.API_CACHED_TOKENS: total,
                c.API_CACHED_BY_TIER: cached,
                c.API_PREFIX_HIT_RATE: total / self.prompt[t] if self.prompt[t] else None,
            }
        return out


def replay_window(duration: float, settings: Settings) -> int:
    """The shortest configured window covering the whole replay, else a new one (multiple of 60 s)."""
    need = duration + 60.0
    for w in sorted(settings.aggregation.windows_seconds):
        if w >= need:
            return w
    step = settings.aggregation.coarse_bucket_seconds
    return int(math.ceil(need / step) * step)


def replay_settings(
    duration: float, base: Settings | None = None, config: str | Path | None = None
) -> Settings:
    """Settings whose windows cover the replay (an extra window is added when needed)."""
    settings = base if base is not None else load_settings(config)
    w = replay_window(duration, settings)
    windows = tuple(sorted({*settings.aggregation.windows_seconds, w}))
    if windows == settings.aggregation.windows_seconds:
        return settings
    data = settings.model_dump(mode="json")
    data["aggregation"]["windows_seconds"] = list(windows)
    data["store"]["record_retention_seconds"] = max(data["store"]["record_retention_seconds"], w)
    return load_settings(None, overrides=data, env={})


def run_replay(
    source: str,
    *,
    seed: int = 0,
    duration: float | None = None,
    tenants: int = 8,
    settings: Settings | None = None,
    policy: Policy | None = None,
    tick_seconds: float = 10.0,
    start: float = DEFAULT_REPLAY_START,
    batch_size: int = 512,
    extra_sinks: tuple[FleetSink, ...] = (),
    on_progress: Callable[[float, float], None] | None = None,
    autoscaler: bool = False,
) -> ReplayResult:
    """Run `source` (scenario name or .jsonl trace) through the twin into an in-process observer."""
    wall0 = time.monotonic()
    truth = TruthSink(keep_latencies=False)
    recorder = Recorder(max_requests=1, max_events=1000)
    holder: list[InProcessObserver] = []

    def deliver(body: bytes) -> None:
        holder[0].deliver(body)

    emitter = OtlpSpanEmitter.to_bytes(deliver, batch_size=batch_size)
    twin = build_twin(
        source,
        sink=Fanout([emitter, truth, recorder, *extra_sinks]),
        seed=seed,
        duration=duration,
        start=start,
        tenants=tenants,
    )
    cfg = replay_settings(twin.duration, settings)
    window = replay_window(twin.duration, cfg)
    auto = attach_twin_autoscaler(cfg, twin) if autoscaler else None
    with InProcessObserver(
        cfg,
        clock=lambda: twin.now,
        extra_routers=auto.routers if auto else (),
        on_startup=auto.on_startup if auto else (),
    ) as obs:
        holder.append(obs)
        t = twin.now
        step = min(tick_seconds, auto.settings.interval_seconds) if auto else tick_seconds
        while t < twin.end:
            t = min(twin.end, t + step)
            twin.run_until(t)
            if auto is not None:
                emitter.flush()  # the tick's spans reach the service before the controller decides
                auto(twin, twin.now)
            if policy is not None:
                policy(twin, twin.now)
            if on_progress is not None:
                on_progress(twin.now - twin.sim.start, twin.duration)
        emitter.flush()
        entries = tuple(obs.tenants(window))
        bodies, rejected = obs.bodies, obs.rejected
    events = tuple(
        {"time": e.time, "kind": e.kind, **{k: str(v) for k, v in e.detail.items()}}
        for e in recorder.fleet_events
    )
    return ReplayResult(
        source=source,
        seed=seed,
        duration=twin.duration,
        window_seconds=window,
        sim_start=twin.sim.start,
        sim_end=twin.now,
        wall_seconds=time.monotonic() - wall0,
        requests=emitter.stats.requests,
        spans=emitter.stats.spans,
        bodies=bodies,
        rejected_spans=rejected,
        tenants=entries,
        truth=truth.summary(),
        events=events,
        decisions=None if auto is None else tuple(n.as_json(twin.sim.start) for n in auto.decisions),
    )
