"""Timeline of one control-benchmark run: what the controller saw and decided each tick, beside
the twin's internals (per-role KV usage, queues, preemptions, local vs remote prefill, TTFT
split into queue / prefill / transfer / decode-wait). For diagnosis, read-only.

    python -m benchmarks.control.trace mooncake-synthetic [--policy pd-observer] [--every 4]
    python -m benchmarks.control.trace story --misses      # + who missed the TTFT target, and why
    python -m benchmarks.control.trace mooncake-synthetic --policy static --static 6:1 --tiers
    python -m benchmarks.control.trace mooncake-conversation --sizes   # what the queueing floor reads

One line per printed tick (requests are those completed since the last printed tick):
  t                 seconds since start
  P d/r, D d/r      desired / ready replicas of prefill and decode
  n, ttft_ok        requests, and the share that met the 2 s TTFT target
  local             share prefilled on their decode pod (the P/D decider's local path)
  isl, hbm/dram/disk  mean prompt, and mean cached tokens by tier (thousands)
  pq pf xf dq d1    mean seconds: prefill queue, prefill, KV transfer, decode queue, first step
  Pwait max         waiting prompts on the prefill pods (sum, worst pod)
  Dwait Drun Dkv    decode pods: waiting, running, hottest KV usage; preempt since the last line
  backlog, w        requests the router holds; scorer weights (prefix/queue/kv)
  dem, out          the demand pd-observer saw: uncached prompt tok/s, output tok/s
  st, pr            starvation and decode-pressure signals (1 = firing)
  p:a->b[reasons]   its decision per role; thr:a->b[...] a P/D decider threshold change
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from autoscaler.capacity import queueing_replicas
from autoscaler.guardrails import replicas_for
from autoscaler.ports import AuditEntry
from autoscaler.types import PoolConfig
from benchmarks.control import variant
from benchmarks.control.harness import (
    MAX_PER_ROLE,
    POLICIES,
    PREFILL_CAPACITY,
    START,
    TTFT_SLO,
    Meter,
    run,
)
from benchmarks.control.run import span_of
from observer import conventions as c
from observer.cli import positive
from simulator.events import CompletedRequest
from simulator.scenarios import SCENARIOS, Twin


@dataclass
class Timeline:
    every: int = 1
    reqs: list[CompletedRequest] = field(default_factory=list)
    done: list[CompletedRequest] = field(default_factory=list)  # every completed request
    ticks: int = 0
    last_preempt: int = 0
    rows: list[str] = field(default_factory=list)

    def __call__(self, twin: Twin, now: float, meter: Meter, entry: AuditEntry | None) -> None:
        self.ticks += 1
        if self.ticks % self.every:
            return
        reqs = list(self.reqs)
        self.done.extend(reqs)
        self.reqs.clear()
        pods = meter.pods
        by = {r: [p for p in pods if p.role == r and p.ready] for r in c.ROLES}
        pre = sum(p.preemptions for p in pods if p.role == c.ROLE_DECODE)
        dpre, self.last_preempt = pre - self.last_preempt, pre
        st = twin.actuator.get_state().pools[next(iter(twin.actuator.get_state().pools))]
        rep = {r: st.replicas[r] for r in c.ROLES}
        n = len(reqs) or 1
        good = sum(1 for r in reqs if r.decode.first_token - (r.prefill or r.decode).arrival <= TTFT_SLO)
        local = sum(1 for r in reqs if r.prefill is None)

        def mean(xs: list[float]) -> float:
            return sum(xs) / len(xs) if xs else 0.0

        pq = mean([r.prefill.scheduled - r.prefill.arrival for r in reqs if r.prefill])
        pf = mean([r.prefill.first_token - r.prefill.scheduled for r in reqs if r.prefill])
        xf = mean([r.kv_transfer_seconds for r in reqs if r.prefill])
        dq = mean([r.decode.scheduled - r.decode.arrival for r in reqs])
        d1 = mean([r.decode.first_token - r.decode.scheduled for r in reqs])
        dkv = by[c.ROLE_DECODE]
        isl = mean([float(r.prompt_tokens) for r in reqs]) / 1e3
        tiers = {t: mean([float(r.cached_by_tier.get(t, 0)) for r in reqs]) / 1e3 for t in c.TIERS}
        row = (
            f"{now - twin.sim.start:6.0f} P {rep[c.ROLE_PREFILL].desired}/{rep[c.ROLE_PREFILL].ready} "
            f"D {rep[c.ROLE_DECODE].desired}/{rep[c.ROLE_DECODE].ready} "
            f"| n {len(reqs):4d} ttft_ok {good / n:4.2f} local {local / n:4.2f} "
            f"isl {isl:5.1f}k hbm {tiers[c.TIER_HBM]:5.1f} dram {tiers[c.TIER_DRAM]:5.1f} "
            f"disk {tiers[c.TIER_DISK]:5.1f} "
            f"| pq {pq:6.2f} pf {pf:5.2f} xf {xf:5.2f} dq {dq:6.2f} d1 {d1:5.2f} "
            f"| Pwait {sum(p.waiting for p in by[c.ROLE_PREFILL]):4d} "
            f"max {max((p.waiting for p in by[c.ROLE_PREFILL]), default=0):3d} "
            f"Dwait {sum(p.waiting for p in dkv):4d} Drun {sum(p.running for p in dkv):4d} "
            f"Dkv {max((p.kv_usage for p in dkv), default=0):4.2f} preempt {dpre:5d} "
            f"backlog {len(twin.fleet.backlog)} "
            f"w {'/'.join(f'{v:g}' for v in twin.fleet.weights.values())}"
        )
        if entry is not None:
            o = entry.observation
            dm = o.demand
            if dm is not None:
                row += (
                    f" | dem {dm.prompt_tokens_per_s * (1 - dm.hit_rate) / 1e3:6.1f}k "
                    f"out {dm.output_tokens_per_s:6.0f}"
                )
            s = o.signals
            row += f" st {int(bool(s.starvation))} pr {int(bool(s.decode_pressure))}"
            row += " " + " ".join(
                f"{d.role[0]}:{d.current}->{d.desired}[{','.join(x.value for x in d.reasons)}]"
                for d in entry.decisions
            )
            row += "".join(
                f" thr:{x.current}->{x.desired}[{','.join(r.value for r in x.reasons)}]"
                for x in entry.decider_changes
            )
        self.rows.append(row)
        print(row, flush=True)


def ttft(r: CompletedRequest) -> float:
    return r.decode.first_token - (r.prefill or r.decode).arrival


def _prefill_queue(r: CompletedRequest) -> float:
    return r.prefill.scheduled - r.prefill.arrival if r.prefill else 0.0


def misses(done: list[CompletedRequest], start: float, arrived: int, bucket: float = 15.0) -> list[str]:
    """Breakdown of the requests that missed the TTFT target: local vs remote prefill, by arrival
    time (`bucket` seconds from `start`), their mean prompt, cache tiers and prefill queueing."""
    miss = [r for r in done if ttft(r) > TTFT_SLO]
    n = len(miss) or 1

    def mean(f: Callable[[CompletedRequest], float]) -> float:
        return sum(f(r) for r in miss) / n

    by_arrival: dict[int, int] = {}
    for r in miss:
        k = int(((r.prefill or r.decode).arrival - start) // bucket * bucket)
        by_arrival[k] = by_arrival.get(k, 0) + 1
    return [
        f"misses {len(miss)} of {len(done)} completed "
        f"(+{arrived - len(done)} unfinished after the drain, also misses); "
        f"prefilled locally {sum(r.prefill is None for r in miss)}",
        f"mean prompt {mean(lambda r: r.prompt_tokens) / 1e3:.1f}k "
        f"cached {mean(lambda r: r.cached_tokens) / 1e3:.1f}k "
        f"(dram {mean(lambda r: r.cached_by_tier.get(c.TIER_DRAM, 0)) / 1e3:.1f}k "
        f"disk {mean(lambda r: r.cached_by_tier.get(c.TIER_DISK, 0)) / 1e3:.1f}k) "
        f"prefill queue {mean(_prefill_queue):.2f} s",
        "by arrival (s from start: misses) " + " ".join(f"{k}:{v}" for k, v in sorted(by_arrival.items())),
    ]


def tiers(
    done: list[CompletedRequest], start: float, static_prefill: int | None, bucket: float = 120.0
) -> list[str]:
    """The disk share of the cached prompt tokens (the spill share the cache-residency floor
    reads), per `bucket` seconds of arrivals and over the run; for a static split also
    λ = -n / ln s, the replicas per e-fold of that share (`autoscaler.capacity.spill_scale`)."""
    by: dict[int, list[float]] = {}
    for r in done:
        k = int(((r.prefill or r.decode).arrival - start) // bucket * bucket)
        acc = by.setdefault(k, [0.0, 0.0])
        acc[0] += r.cached_by_tier.get(c.TIER_DISK, 0)
        acc[1] += r.cached_tokens
    disk, cached = sum(v[0] for v in by.values()), sum(v[1] for v in by.values())
    share = disk / cached if cached else 0.0
    line = f"disk share of cached tokens over the run {share:.3f}"
    if static_prefill and 0 < share < 1:
        line += f" (λ = {-static_prefill / math.log(share):.2f} at {static_prefill} prefill)"
    per = " ".join(f"{k}:{v[0] / v[1]:.3f}" for k, v in sorted(by.items()) if v[1])
    return [line, f"by arrival (s from start: disk share) {per}"]


def sizes(done: list[CompletedRequest], start: float, span: float, bucket: float = 60.0) -> list[str]:
    """Per `bucket` seconds of arrivals: the mean prefill work per request (uncached tokens plus
    DRAM and disk hits at the default tier costs), its size-biased mean Σw² / Σw (the work a new
    arrival finds in service), and the prefill count the queueing floor asks for at the
    benchmark's capacity and the default `prefill_wait_share` (`capacity.queueing_replicas`).
    A request routed before the end of the run (`span` s) but reaching its engine after it
    counts in the last bucket."""
    cfg = PoolConfig("trace")
    share = cfg.prefill_wait_share or 0.0
    last = int(max(0.0, span - 1e-9) // bucket * bucket)
    by: dict[int, list[float]] = {}
    for r in done:
        k = min(last, int(((r.prefill or r.decode).arrival - start) // bucket * bucket))
        dram, disk = r.cached_by_tier.get(c.TIER_DRAM, 0), r.cached_by_tier.get(c.TIER_DISK, 0)
        w = r.prompt_tokens - min(r.prompt_tokens, r.cached_tokens) + cfg.dram_hit_cost * dram
        w += cfg.disk_hit_cost * disk
        acc = by.setdefault(k, [0.0, 0.0, 0.0])
        acc[0] += 1
        acc[1] += w
        acc[2] += w * w
    out = [
        f"prefill work per {bucket:g} s of arrivals (s from start: mean / size-biased mean, k tok "
        "-> queueing floor, demand floor at the target utilization)"
    ]
    for k, (n, s1, s2) in sorted(by.items()):
        floor = queueing_replicas(s1 / bucket, s2 / bucket, PREFILL_CAPACITY, share * TTFT_SLO, MAX_PER_ROLE)
        mean_load = replicas_for(s1 / bucket, PREFILL_CAPACITY, cfg.target_utilization)
        out.append(f"{k}: {s1 / n / 1e3:.1f} / {s2 / s1 / 1e3 if s1 else 0.0:.1f} -> {floor}, {mean_load}")
    return out


def _split(text: str) -> tuple[int, int]:
    """`P:D` of --static: two replica counts in 1..MAX_PER_ROLE."""
    p, sep, d = text.partition(":")
    try:
        counts = (int(p), int(d)) if sep else None
    except ValueError:
        counts = None
    if counts is None or not all(1 <= n <= MAX_PER_ROLE for n in counts):
        raise ValueError(f"--static takes P:D, two counts in 1..{MAX_PER_ROLE} (e.g. 6:1), got {text!r}")
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.control.trace",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("scenario", choices=sorted(SCENARIOS))
    ap.add_argument("--policy", default="pd-observer", choices=POLICIES, help="(default %(default)s)")
    ap.add_argument(
        "--static",
        metavar="P:D",
        help="prefill:decode for --policy static, ready from the start (default: the start size, held)",
    )
    ap.add_argument("--duration", type=positive, help="seconds to run (default: the scenario's)")
    ap.add_argument("--every", type=int, default=1, help="print every Nth tick (default %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="the twin's random seed (default %(default)s)")
    ap.add_argument("--misses", action="store_true", help="after the run, break down the TTFT misses")
    ap.add_argument(
        "--tiers", action="store_true", help="after the run, the disk share of the cached tokens over time"
    )
    ap.add_argument(
        "--sizes",
        action="store_true",
        help="after the run, the prefill work per request per minute and the queueing floor's count",
    )
    variant.add_arguments(ap)
    args = ap.parse_args(argv)
    try:
        var = variant.from_args(args)
        static = _split(args.static) if args.static else None
        if static is not None and args.policy != "static":
            raise ValueError("--static only applies to --policy static")
        if args.every < 1:
            raise ValueError(f"--every must be ≥ 1, got {args.every}")
    except ValueError as exc:
        ap.error(str(exc))
    timeline = Timeline(every=args.every)
    res = run(
        args.scenario,
        args.policy,
        duration=args.duration,
        seed=args.seed,
        static=static,
        probe=timeline,
        listen=timeline.reqs.append,
        warm_hold=var.warm_hold,
        tune=var.tune_map,
    )
    if args.misses:
        for line in misses(timeline.done + timeline.reqs, START, res.requests):
            print(line)
    if args.tiers:
        for line in tiers(timeline.done + timeline.reqs, START, static[0] if static else None):
            print(line)
    if args.sizes:
        for line in sizes(timeline.done + timeline.reqs, START, span_of(args.scenario, args.duration)):
            print(line)
    print(res, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
