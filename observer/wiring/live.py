"""The demo's terminal view: rich Live on a TTY, plain periodic log lines otherwise (CI, pipes).

Both render one sample dict (see `observer.wiring.demo.Sampler`): tenants (hit rate, tier
shares, TTFT p90 vs SLO), pools (replicas, queue, KV usage, busy, starvation) and recent
events/decisions.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.0f}%"


def _sec(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def render(sample: Mapping[str, Any], slo: float | None, events: list[str]) -> Group:
    """A rich renderable of one sample."""
    head = (
        f"[b]pd-observer demo[/b]  scenario {sample['scenario']}  phase [b]{sample['phase']}[/b]  "
        f"t=+{sample['elapsed']:.0f}s  load {sample['rps']:.1f} req/s"
    )
    tenants = Table(title="tenants (observer, 60 s window)", expand=False)
    for col in ("tenant", "req", "hit rate", "HBM", "DRAM", "disk", "TTFT p90 s", "vs SLO"):
        tenants.add_column(col, justify="right" if col != "tenant" else "left")
    for t in sample["tenants"]:
        shares = t.get("tier_shares") or {}
        p90 = t.get("ttft_p90")
        bad = slo is not None and p90 is not None and p90 > slo
        tenants.add_row(
            t["tenant"],
            str(t["requests"]),
            _pct(t.get("hit_rate")),
            _pct(shares.get("hbm")),
            _pct(shares.get("dram")),
            _pct(shares.get("disk")),
            _sec(p90),
            "[red]OVER[/red]" if bad else "ok",
        )
    pools = Table(title="pools (twin)", expand=False)
    for col in ("role", "ready", "starting", "draining", "waiting", "KV usage", "busy", "starvation"):
        pools.add_column(col, justify="right" if col != "role" else "left")
    for p in sample["pools"]:
        pools.add_row(
            p["role"],
            str(p["ready"]),
            str(p["starting"]),
            str(p["draining"]),
            str(p["waiting"]),
            _pct(p.get("kv_usage")),
            _pct(p.get("busy")),
            "[red]YES[/red]" if p.get("starved") else "no",
        )
    ev = Table(title="events / decisions", expand=False, show_header=False)
    ev.add_column("event", justify="left")
    for line in events[-6:] or ["(none yet)"]:
        ev.add_row(line)
    return Group(head, tenants, pools, ev)


def log_line(sample: Mapping[str, Any], slo: float | None) -> str:
    """One plain line for a non-interactive run."""
    p90s = [t["ttft_p90"] for t in sample["tenants"] if t.get("ttft_p90") is not None]
    worst = max(p90s) if p90s else None
    over = sum(1 for v in p90s if slo is not None and v > slo)
    pools = " ".join(
        f"{p['role']}={p['ready']}" + ("!starved" if p.get("starved") else "") for p in sample["pools"]
    )
    return (
        f"[demo] t=+{sample['elapsed']:.0f}s phase={sample['phase']} load={sample['rps']:.1f}req/s "
        f"tenants={len(sample['tenants'])} worst_ttft_p90={_sec(worst)}s over_slo={over} {pools}"
    )


class LiveView:
    """Refreshes at most every `refresh_seconds` (wall). Use as a context manager."""

    def __init__(
        self,
        *,
        slo: float | None,
        interactive: bool | None = None,
        refresh_seconds: float = 1.0,
        log_every_seconds: float = 5.0,
        stream: TextIO | None = None,
    ) -> None:
        self.stream = stream or sys.stdout
        self.console = Console(file=self.stream)
        self.interactive = self.console.is_terminal if interactive is None else interactive
        self.slo = slo
        self.refresh_seconds = refresh_seconds
        self.log_every_seconds = log_every_seconds
        self._live: Live | None = None
        self._last = -math.inf
        self.events: list[str] = []

    def __enter__(self) -> LiveView:
        if self.interactive:
            self._live = Live(console=self.console, refresh_per_second=2, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def event(self, text: str) -> None:
        self.events.append(text)
        del self.events[:-50]
        if not self.interactive:
            print(f"[demo] {text}", file=self.stream, flush=True)

    def update(self, sample: Mapping[str, Any], *, force: bool = False) -> None:
        now = time.monotonic()
        every = self.refresh_seconds if self.interactive else self.log_every_seconds
        if not force and now - self._last < every:
            return
        self._last = now
        if self._live is not None:
            self._live.update(render(sample, self.slo, self.events))
        else:
            print(log_line(sample, self.slo), file=self.stream, flush=True)
