"""Benchmark: one simulated hour of a 16-pod fleet (8 prefill / 8 decode) at 20 req/s.

Target: <= 60 s wall on one core. Run: `.venv/bin/python benchmarks/simulator_bench.py
[--duration 3600] [--profile-out FILE]` (cProfile when --profile-out is given).
"""

from __future__ import annotations

import argparse
import cProfile
import time

from simulator.engine import Simulation
from simulator.fleet import Fleet, NullSink
from simulator.profile import load_profile
from simulator.workload import LengthDist, Poisson, TenantSpec, synthetic_workload


def run(duration: float, kv_events: bool) -> dict[str, float]:
    profile = load_profile("default", {"prefill": {"replicas": 8}, "decode": {"replicas": 8}})
    tenants = [
        TenantSpec(
            name=f"tenant-{i:02d}",
            arrivals=Poisson(20.0 / 10),
            system_prompt_blocks=4 + i,
            user_tokens=LengthDist(800.0, 0.6, 16, 16_384),
            output_tokens=LengthDist(200.0, 0.6, 1, 4096),
        )
        for i in range(10)
    ]
    sim = Simulation()
    fleet = Fleet(sim, profile, NullSink(), seed=0, kv_events=kv_events)
    fleet.add_workload(synthetic_workload(tenants, 0, profile.block_tokens, horizon=duration))
    fleet.start_sampling()
    t0 = time.process_time()
    w0 = time.perf_counter()
    sim.run_until(duration)
    return {
        "simulated_s": duration,
        "cpu_s": time.process_time() - t0,
        "wall_s": time.perf_counter() - w0,
        "requests": float(fleet.arrived),
        "completed": float(fleet.completed),
        "events": float(sim.steps),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=float, default=3600.0)
    ap.add_argument("--kv-events", action="store_true", help="also build vLLM KV events")
    ap.add_argument("--profile-out", default=None)
    args = ap.parse_args()
    if args.profile_out:
        prof = cProfile.Profile()
        result = prof.runcall(run, args.duration, args.kv_events)
        prof.dump_stats(args.profile_out)
    else:
        result = run(args.duration, args.kv_events)
    for k, v in result.items():
        print(f"{k:12s} {v:,.2f}")


if __name__ == "__main__":
    main()
