"""Soak: hours of simulated traffic with churn through the real service, in-process, watching memory.

    nice -n 10 .venv/bin/python -m benchmarks.soak                      # 12 simulated hours, SQLite
    nice -n 10 .venv/bin/python -m benchmarks.soak --hours 2 --sample-minutes 10   # a quick look
    nice -n 10 .venv/bin/python -m benchmarks.soak --postgres           # PostgreSQL (own database)

What runs (the composition of `pd-observer demo`, without pacing, HTTP ingest or Prometheus):
the digital twin (`simulator`) with a churning workload emits OTLP spans through the SDK's
encoder (`OtlpSpanEmitter`); they are POSTed to the real app (`create_app` behind Starlette's
TestClient, as `pd-observer replay` does: `observer.wiring.inproc`) with the SQL store (a SQLite
file, or a PostgreSQL database created and dropped by the run), so every body goes through
decode, P/D assembly, the store's commit, the windows and the fleet-signals listener. The fleet
signals scrape the twin's per-pod `/metrics` over loopback HTTP and read its KV events over ZMQ
(`attach_twin_signals`), the autoscaler runs in apply mode on the twin
(`attach_twin_autoscaler`), both ticked on the simulated clock; the alert-rule and dashboard
routes of `serve` are mounted. Time is the twin's: the service's clock is the simulated one, so
hours of windows, expiry, retention and housekeeping run in minutes (housekeeping and store
maintenance are on wall time in the service; the run shortens `maintenance_interval_seconds`).

Churn, all of it continuous:
- tenants: a steady few plus a stream of new ones (`--new-tenants-per-minute`), each active for
  `--tenant-lifetime-minutes`: far more tenants over the run than `aggregation.max_tenants`;
- pods: every `--pod-replace-minutes` one pod of each role is replaced by one with a new name
  (`Fleet.replace_pod`), besides the autoscaler's own scaling;
- models: a share of requests (`--adapter-share`) names a LoRA adapter that changes every
  `--adapter-minutes` (new model label values);
- request and trace ids are always new;
- every `--slo-minutes` a new SLO set is PUT (new names, some naming recent tenants);
- every `--query-minutes` the API is read: tenants (whole list, one tenant, by model), one
  request, pools, decisions, alert rules, dashboards, /metrics.

Every `--sample-minutes` of simulated time: the process's VmRSS, tracemalloc's traced total (and
top growth sites against the first sample after warm-up) and the length of every container
reachable from the service's components (`container_sizes`), so a structure growing without
bound shows by name. Prints a table; `--out FILE` writes a small JSON (benchmarks/results/soak.json).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import gc
import json
import math
import os
import random
import sys
import tempfile
import time
import tracemalloc
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from observer import conventions as c
from observer.cli import extra_routers
from observer.config import Settings, load_settings
from observer.store.repository import Store
from observer.wiring.autoscale import attach_twin_autoscaler
from observer.wiring.demo import SignalTicker, attach_twin_signals
from observer.wiring.inproc import InProcessObserver
from observer.wiring.kvfeed import TwinKvEvents
from simulator.actuation import SimActuator
from simulator.emit.fanout import Fanout
from simulator.emit.metrics import MetricsEmitter
from simulator.emit.otlp import OtlpSpanEmitter
from simulator.engine import Simulation
from simulator.events import ArrivedRequest, CompletedRequest, FleetEvent, FleetSink, KvEvent, PodSnapshot
from simulator.fleet import Fleet, NullSink
from simulator.profile import load_profile
from simulator.scenarios import PD_2_6, Twin
from simulator.workload import LengthDist, RequestSpec, system_prompt_chain

START = 1_700_000_000.0
STEP_SECONDS = 10.0  # simulated seconds per loop step (the twin runs, the spans are delivered)
FRESH_BLOCK_BASE = 1 << 60  # the non-shared part of prompts: ids no tenant chain uses
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


# ------------------------------------------------------------------------------ workload
@dataclasses.dataclass(frozen=True, slots=True)
class Churn:
    """The churn rates of a run (simulated time)."""

    rate: float = 3.0  # requests/s
    steady_tenants: int = 5
    steady_share: float = 0.3
    new_tenants_per_minute: float = 20.0
    tenant_lifetime_minutes: float = 30.0
    pod_replace_minutes: float = 5.0
    adapter_share: float = 0.2
    adapter_minutes: float = 10.0
    slo_minutes: float = 30.0
    query_minutes: float = 5.0


def churn_workload(churn: Churn, seed: int, duration: float, block_tokens: int) -> Iterator[RequestSpec]:
    """Poisson arrivals at `churn.rate`; a request is a steady tenant's, else one of the tenants
    alive now: tenant k appears at k / new-per-second and lives `tenant_lifetime_minutes`."""
    rng = random.Random(f"soak:{seed}")
    per_s = churn.new_tenants_per_minute / 60.0
    alive = max(1, round(churn.tenant_lifetime_minutes * 60.0 * per_s))
    user = LengthDist(600.0, 0.6, 16, 16_384)
    output = LengthDist(150.0, 0.5, 1, 2048)
    fresh = FRESH_BLOCK_BASE
    t, n = 0.0, 0
    while True:
        t += rng.expovariate(churn.rate)
        if t >= duration:
            return
        if rng.random() < churn.steady_share:
            tenant = f"steady-{rng.randrange(churn.steady_tenants)}"
        else:
            newest = int(t * per_s)
            tenant = f"t{rng.randint(max(0, newest - alive + 1), newest):06d}"
        chain = system_prompt_chain(tenant, 4 + (zlib_hash(tenant) % 8))
        prompt = len(chain) * block_tokens + user.sample(rng)
        extra = math.ceil(prompt / block_tokens) - len(chain)
        n += 1
        yield RequestSpec(
            request_id=f"{tenant}-{n:09d}",
            tenant=tenant,
            arrival=t,
            prompt_tokens=prompt,
            output_tokens=output.sample(rng),
            block_hashes=chain + tuple(range(fresh, fresh + extra)),
        )
        fresh += extra


def zlib_hash(text: str) -> int:
    return zlib.crc32(text.encode())


class AdapterChurn:
    """FleetSink wrapper: a share of completed requests names a LoRA adapter (model label) that
    changes every `minutes`; everything else passes through."""

    def __init__(self, inner: FleetSink, share: float, minutes: float, start: float, seed: int) -> None:
        self.inner = inner
        self.share = share
        self.period = minutes * 60.0
        self.start = start
        self.rng = random.Random(f"adapter:{seed}")

    def request_arrived(self, arrival: ArrivedRequest) -> None:
        self.inner.request_arrived(arrival)

    def request_completed(self, request: CompletedRequest) -> None:
        if self.share > 0 and self.rng.random() < self.share:
            gen = int((request.decode.finished - self.start) // self.period)
            request = dataclasses.replace(request, model=f"{request.model}:lora-{gen:05d}")
        self.inner.request_completed(request)

    def pods_sampled(self, now: float, pods: tuple[PodSnapshot, ...]) -> None:
        self.inner.pods_sampled(now, pods)

    def kv_events(self, events: tuple[KvEvent, ...]) -> None:
        self.inner.kv_events(events)

    def fleet_event(self, event: FleetEvent) -> None:
        self.inner.fleet_event(event)


class RecentTenants(NullSink):
    """FleetSink: the last few tenants and request ids seen (for the API queries and SLO sets)."""

    def __init__(self) -> None:
        self.tenants: collections.deque[str] = collections.deque(maxlen=64)
        self.request_ids: collections.deque[str] = collections.deque(maxlen=16)

    def request_completed(self, request: CompletedRequest) -> None:
        self.tenants.append(request.tenant)
        self.request_ids.append(request.request_id)


# ------------------------------------------------------------------------------ measuring
def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return math.nan


_ATOMS = (str, bytes, int, float, bool, type(None), complex, range)
_CONTAINERS = (dict, list, set, frozenset, tuple, collections.deque)


def container_sizes(roots: Mapping[str, object], max_depth: int = 6) -> dict[str, int]:
    """`path -> len` of every container reachable from `roots` through object attributes (and
    through the values of small dicts keyed by strings), each object visited once. Settings
    (pydantic models), threads, locks, modules, classes and functions are not entered."""
    out: dict[str, int] = {}
    seen: set[int] = set()

    def attrs(obj: object) -> Iterator[tuple[str, object]]:
        d = getattr(obj, "__dict__", None)
        if isinstance(d, dict):
            yield from d.items()
        for klass in type(obj).__mro__:
            for name in getattr(klass, "__slots__", ()):
                if name in ("__dict__", "__weakref__"):
                    continue
                with contextlib.suppress(AttributeError):
                    yield name, getattr(obj, name)

    def visit(obj: object, path: str, depth: int) -> None:
        if isinstance(obj, _ATOMS) or id(obj) in seen or depth > max_depth:
            return
        seen.add(id(obj))
        if isinstance(obj, _CONTAINERS):
            if isinstance(obj, tuple) and len(obj) < 64:
                return  # small tuples: values, not structures
            out[path] = len(obj)
            if isinstance(obj, dict) and len(obj) <= 8:
                for k, v in obj.items():
                    if isinstance(k, str):
                        visit(v, f"{path}[{k}]", depth + 1)
            return
        mod = type(obj).__module__ or ""
        if isinstance(obj, BaseModel) or (callable(obj) and not hasattr(obj, "__dict__")):
            return
        if mod.startswith(("threading", "_thread", "logging", "asyncio", "concurrent", "sqlalchemy")):
            return
        if isinstance(obj, type) or type(obj).__name__ in (
            "module",
            "function",
            "method",
            "builtin_function_or_method",
        ):
            return
        for name, value in attrs(obj):
            visit(value, f"{path}.{name}", depth + 1)

    for name, root in roots.items():
        visit(root, name, 0)
    return out


def metrics_series(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


# ------------------------------------------------------------------------------ the run
def soak_settings(db_url: str, max_tenants: int | None, retention_hours: float) -> Settings:
    overrides: dict[str, Any] = {
        "store": {
            "url": db_url,
            "record_retention_seconds": int(retention_hours * 3600),
            "maintenance_interval_seconds": 2.0,  # wall seconds: a few simulated minutes here
        },
        "server": {"log_level": "warning"},
    }
    if max_tenants is not None:
        overrides["aggregation"] = {"max_tenants": max_tenants}
    return load_settings(None, overrides=overrides, env={})


def build_soak_twin(sink: FleetSink, churn: Churn, seed: int, duration: float) -> Twin:
    prof = load_profile("default", PD_2_6)
    sim = Simulation(START)
    fleet = Fleet(sim, prof, sink, seed=seed, kv_events=True)
    fleet.add_workload(churn_workload(churn, seed, duration, prof.block_tokens))
    fleet.start_sampling()
    return Twin("soak", sim, fleet, SimActuator(fleet), duration, (("soak", START),))


def slo_set(k: int, tenants: list[str]) -> dict[str, Any]:
    """The k-th SLO set: new names every time, one naming recent tenants."""
    return {
        "slos": [
            {"name": f"ttft-{k}", "sli": c.SLI_TTFT, "objective": 0.99, "threshold_seconds": 2.0},
            {"name": f"itl-{k}", "sli": c.SLI_ITL, "objective": 0.95, "threshold_seconds": 0.1},
            {
                "name": f"avail-{k}",
                "sli": c.SLI_ERROR,
                "objective": 0.999,
                "tenants": sorted(set(tenants))[:5],
            },
        ]
    }


def query_api(obs: InProcessObserver, recent: RecentTenants, model: str) -> int:
    """One round of API reads; returns the number of /metrics series."""
    for window in (60, 300, 3600):
        obs.tenants(window)
    obs.get("/api/v1/tenants", window=300, model=model)
    for t in list(recent.tenants)[-3:]:
        with contextlib.suppress(Exception):  # 404 when it has no data in the window
            obs.get(f"/api/v1/tenants/{t}", window=300)
    for rid in list(recent.request_ids)[-2:]:
        with contextlib.suppress(Exception):  # not yet committed
            obs.get(f"/api/v1/requests/{rid}")
    pools = obs.get("/api/v1/pools")
    for p in pools.get("pools", [])[:2]:
        obs.get(f"/api/v1/pools/{p['pool']}")
    obs.get("/api/v1/decisions")
    obs.get("/api/v1/slos")
    obs.get("/api/v1/alerts/rules")
    for d in obs.get("/api/v1/dashboards")["dashboards"][:2]:
        obs.get(f"/api/v1/dashboards/{d['uid']}")
    return metrics_series(obs.metrics_text())


@dataclasses.dataclass
class Sample:
    sim_hours: float
    wall_seconds: float
    rss_mib: float
    traced_mib: float | None
    requests: int
    metrics_series: int
    sizes: dict[str, int]

    def row(self) -> dict[str, Any]:
        return {
            "sim_hours": round(self.sim_hours, 2),
            "wall_s": round(self.wall_seconds, 1),
            "rss_mib": round(self.rss_mib, 1),
            "traced_mib": None if self.traced_mib is None else round(self.traced_mib, 1),
            "requests": self.requests,
            "metrics_series": self.metrics_series,
        }


def growing(samples: list[Sample], warmup_hours: float, min_growth: int = 50) -> list[dict[str, Any]]:
    """Containers whose length at the end is well above anything before the second half of the
    post-warm-up samples (a trend, not a plateau), largest growth first."""
    late = [s for s in samples if s.sim_hours >= warmup_hours]
    if len(late) < 3:
        return []
    half = late[: len(late) // 2]
    last = late[-1]
    out = []
    for path, n in last.sizes.items():
        before = max((s.sizes.get(path, 0) for s in half), default=0)
        if n - before >= min_growth and n > 1.2 * before:
            first = late[0].sizes.get(path, 0)
            per_hour = (n - first) / max(1e-9, last.sim_hours - late[0].sim_hours)
            out.append(
                {
                    "path": path,
                    "at_warmup": first,
                    "mid_max": before,
                    "end": n,
                    "per_sim_hour": round(per_hour),
                }
            )
    return sorted(out, key=lambda g: -(g["end"] - g["mid_max"]))


@contextlib.contextmanager
def database(args: argparse.Namespace) -> Iterator[str]:
    """The store URL: a SQLite file in a temporary directory, or a PostgreSQL database created
    for the run and dropped after it."""
    if args.db_url:
        yield args.db_url
        return
    if not args.postgres:
        with tempfile.TemporaryDirectory(prefix="pd-soak-") as tmp:
            yield f"sqlite:///{tmp}/soak.db"
        return
    import sqlalchemy as sa

    name = f"pd_observer_soak_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def run(args: argparse.Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    churn = Churn(
        rate=args.rate,
        new_tenants_per_minute=args.new_tenants_per_minute,
        tenant_lifetime_minutes=args.tenant_lifetime_minutes,
        pod_replace_minutes=args.pod_replace_minutes,
        adapter_share=args.adapter_share,
        adapter_minutes=args.adapter_minutes,
        slo_minutes=args.slo_minutes,
        query_minutes=args.query_minutes,
    )
    duration = args.hours * 3600.0
    # tracemalloc slows the run ~4x: it traces only the last `--tracemalloc-hours`, so what it
    # still holds at the end was allocated then and kept (the growth sites)
    trace_from = max(0.0, duration - args.tracemalloc_hours * 3600.0) if args.tracemalloc else math.inf
    samples: list[Sample] = []
    base_snapshot: tracemalloc.Snapshot | None = None
    top_growth: list[dict[str, Any]] = []
    wall0 = time.monotonic()
    with database(args) as url:
        settings = soak_settings(url, args.max_tenants, args.retention_hours)
        holder: list[InProcessObserver] = []
        twin_holder: list[Twin] = []

        def deliver(body: bytes) -> None:
            holder[0].deliver(body)

        emitter = OtlpSpanEmitter.to_bytes(deliver, batch_size=512)
        metrics = MetricsEmitter()
        recent = RecentTenants()
        kv = TwinKvEvents(lambda: twin_holder[0].now if twin_holder else START) if args.kv_events else None
        sinks: list[FleetSink] = [
            AdapterChurn(emitter, churn.adapter_share, churn.adapter_minutes, START, args.seed),
            metrics,
            recent,
        ]
        if kv is not None:
            sinks.append(kv)
        twin = build_soak_twin(Fanout(sinks), churn, args.seed, duration)
        twin_holder.append(twin)
        server = metrics.serve("127.0.0.1", 0)
        signals = attach_twin_signals(settings, twin, metrics, server, kv)
        ticker = SignalTicker(signals.service, signals.service.engine.settings.interval_seconds)
        auto = attach_twin_autoscaler(settings, twin, signals_latest=lambda: signals.service.engine.latest)
        store = Store.open(url)
        model = twin.fleet.profile.model
        try:
            with InProcessObserver(
                settings,
                clock=lambda: twin.now,
                store=store,
                extra_routers=(*extra_routers(settings), *signals.routers, *auto.routers),
                on_startup=(*signals.on_startup, *auto.on_startup),
            ) as obs:
                holder.append(obs)
                pipeline = obs.app.state.pipeline
                _tune_gc(settings.server.gc_gen0_threshold)
                roots = {
                    "pipeline": pipeline,
                    "signals": signals.service,
                    "autoscaler": auto.attachment,
                    "controller": auto,
                    "registry": obs.registry,
                    "app.state": obs.app.state,
                }
                series = 0
                next_sample = 0.0
                next_query = 0.0
                next_replace = churn.pod_replace_minutes * 60.0
                next_slo = churn.slo_minutes * 60.0
                slo_k = 0
                t = twin.now
                last_progress = 0.0
                while t < twin.end:
                    t = min(twin.end, t + STEP_SECONDS)
                    twin.run_until(t)
                    emitter.flush()
                    ticker(t)
                    auto(twin, t)
                    elapsed = t - START
                    if elapsed >= next_replace:
                        next_replace += churn.pod_replace_minutes * 60.0
                        for role in (c.ROLE_PREFILL, c.ROLE_DECODE):
                            twin.fleet.replace_pod(role)
                    if elapsed >= next_slo:
                        next_slo += churn.slo_minutes * 60.0
                        slo_k += 1
                        r = obs._client.put("/api/v1/slos", json=slo_set(slo_k, list(recent.tenants)))
                        if r.status_code != 200:
                            raise RuntimeError(f"PUT /api/v1/slos answered {r.status_code}: {r.text[:200]}")
                    if elapsed >= next_query:
                        next_query += churn.query_minutes * 60.0
                        series = query_api(obs, recent, model)
                    if elapsed >= trace_from and base_snapshot is None:
                        gc.collect()
                        tracemalloc.start(args.tracemalloc_frames)
                        base_snapshot = tracemalloc.take_snapshot()
                    if elapsed >= next_sample or t >= twin.end:
                        next_sample += args.sample_minutes * 60.0
                        gc.collect()
                        traced = None
                        if tracemalloc.is_tracing():
                            traced = tracemalloc.get_traced_memory()[0] / 2**20
                        with pipeline.lock:
                            sizes = container_sizes(roots)
                        samples.append(
                            Sample(
                                sim_hours=elapsed / 3600.0,
                                wall_seconds=time.monotonic() - wall0,
                                rss_mib=rss_mib(),
                                traced_mib=traced,
                                requests=emitter.stats.requests,
                                metrics_series=series,
                                sizes=sizes,
                            )
                        )
                        s = samples[-1]
                        say(
                            f"[soak] sim {s.sim_hours:5.2f} h  wall {s.wall_seconds:6.0f} s"
                            f"  RSS {s.rss_mib:6.1f} MiB"
                            + (f"  traced {traced:6.1f} MiB" if traced is not None else "")
                            + f"  requests {s.requests}  /metrics series {series}"
                        )
                    elif sys.stderr.isatty() and time.monotonic() - last_progress > 1.0:
                        last_progress = time.monotonic()
                        print(
                            f"\r[soak] sim {elapsed / 3600:5.2f}/{args.hours:g} h  "
                            f"requests {emitter.stats.requests}  RSS {rss_mib():.0f} MiB",
                            end="",
                            file=sys.stderr,
                            flush=True,
                        )
                emitter.flush()
                if base_snapshot is not None:
                    gc.collect()
                    end = tracemalloc.take_snapshot()
                    tracemalloc.stop()
                    for stat in end.compare_to(base_snapshot, "lineno")[: args.top]:
                        frame = stat.traceback[0]
                        top_growth.append(
                            {
                                "site": f"{_short(frame.filename)}:{frame.lineno}",
                                "growth_kib": round(stat.size_diff / 1024),
                                "count_diff": stat.count_diff,
                            }
                        )
                bodies, rejected = obs.bodies, obs.rejected
        finally:
            signals.service.stop()
            server.close()
            if kv is not None:
                kv.close()
    grow = growing(samples, args.warmup_hours)
    return {
        "command": " ".join(["python -m benchmarks.soak", *sys.argv[1:]]),
        "store": "postgresql" if args.postgres or (args.db_url or "").startswith("postgres") else "sqlite",
        "settings": {
            "hours": args.hours,
            "seed": args.seed,
            "max_tenants": settings.aggregation.max_tenants,
            "retention_hours": args.retention_hours,
            "churn": dataclasses.asdict(churn),
            "kv_events": args.kv_events,
            "tracemalloc_last_hours": args.tracemalloc_hours if args.tracemalloc else 0,
        },
        "wall_seconds": round(time.monotonic() - wall0, 1),
        "requests": emitter.stats.requests,
        "spans": emitter.stats.spans,
        "bodies": bodies,
        "rejected_spans": rejected,
        "samples": [s.row() for s in samples],
        "largest_containers_at_end": dict(
            sorted(samples[-1].sizes.items(), key=lambda kv: -kv[1])[: args.top] if samples else []
        ),
        "growing": grow,
        "tracemalloc_top_growth": top_growth,
    }


def _short(filename: str) -> str:
    for marker in ("/site-packages/", "/work/main/", "/lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def _tune_gc(gen0_threshold: int) -> None:
    """As `serve` does (observer.cli): startup objects frozen, a high generation-0 threshold."""
    if gen0_threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)


def table(result: Mapping[str, Any]) -> str:
    rows = [
        "| sim h | wall s | RSS MiB | traced MiB | requests | /metrics series |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for s in result["samples"]:
        traced = "—" if s["traced_mib"] is None else f"{s['traced_mib']:.1f}"
        rows.append(
            f"| {s['sim_hours']:.1f} | {s['wall_s']:.0f} | {s['rss_mib']:.1f} | {traced} "
            f"| {s['requests']} | {s['metrics_series']} |"
        )
    return "\n".join(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.soak",
        description="Soak the real service in-process with hours of simulated, churning traffic; "
        "report RSS, tracemalloc growth and every reachable container's size over time.",
    )
    p.add_argument("--hours", type=float, default=12.0, help="simulated hours (default 12)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rate", type=float, default=3.0, help="requests per simulated second (default 3)")
    p.add_argument("--new-tenants-per-minute", type=float, default=20.0, help="(default 20)")
    p.add_argument("--tenant-lifetime-minutes", type=float, default=30.0, help="(default 30)")
    p.add_argument("--pod-replace-minutes", type=float, default=5.0, help="one pod per role (default 5)")
    p.add_argument("--adapter-share", type=float, default=0.2, help="requests naming a LoRA adapter (0.2)")
    p.add_argument("--adapter-minutes", type=float, default=10.0, help="a new adapter name every (10)")
    p.add_argument("--slo-minutes", type=float, default=30.0, help="a new SLO set every (30)")
    p.add_argument("--query-minutes", type=float, default=5.0, help="API reads every (5)")
    p.add_argument("--sample-minutes", type=float, default=30.0, help="measure every (30)")
    p.add_argument("--warmup-hours", type=float, default=2.0, help="growth is measured after this (2)")
    p.add_argument(
        "--max-tenants", type=int, default=None, help="aggregation.max_tenants (default: the default, 1000)"
    )
    p.add_argument("--retention-hours", type=float, default=2.0, help="store.record_retention_seconds (2 h)")
    p.add_argument("--no-kv-events", dest="kv_events", action="store_false", help="no KV events over ZMQ")
    p.add_argument("--no-tracemalloc", dest="tracemalloc", action="store_false", help="RSS and sizes only")
    p.add_argument(
        "--tracemalloc-hours", type=float, default=1.0, help="trace the last N simulated hours (1)"
    )
    p.add_argument("--tracemalloc-frames", type=int, default=1)
    p.add_argument("--top", type=int, default=15, help="growth sites / containers listed (15)")
    p.add_argument(
        "--postgres", action="store_true", help="a PostgreSQL database at 127.0.0.1:5432, created and dropped"
    )
    p.add_argument("--db-url", default=None, help="an existing database instead (SQLAlchemy URL)")
    p.add_argument("--out", type=Path, default=None, help="write the JSON result here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.hours <= 0 or args.rate <= 0 or args.sample_minutes <= 0:
        print("soak: --hours, --rate and --sample-minutes must be > 0", file=sys.stderr)
        return 2
    os.environ.setdefault("PYTHONHASHSEED", "0")
    result = run(args, lambda text: print(("\r" if sys.stderr.isatty() else "") + text, flush=True))
    print()
    print(table(result))
    if result["growing"]:
        print("\ncontainers still growing after the warm-up:")
        for g in result["growing"]:
            print(f"  {g['path']}: {g['at_warmup']} -> {g['end']} ({g['per_sim_hour']:+}/sim h)")
    else:
        print("\nno container grows after the warm-up")
    if result["tracemalloc_top_growth"]:
        print(
            f"\ntracemalloc, allocated in the last {args.tracemalloc_hours:g} simulated hours and still held:"
        )
        for g in result["tracemalloc_top_growth"]:
            print(f"  {g['growth_kib']:+8d} KiB  {g['count_diff']:+8d} blocks  {g['site']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
