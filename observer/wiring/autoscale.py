"""The autoscaler on the twin: `pd-observer demo` (default on), `pd-observer replay --autoscaler`
and the e2e composition.

`attach_twin_autoscaler(settings, twin)` wires the real control loop (`autoscaler.service.attach`:
decisions API, `AutoscalerCollector` on the service's registry, the pipeline's committed records
feeding its `RecordWindow`) with a `Controller` in apply mode acting on the twin through
`SimScaleTarget` (or a dry run: `mode=Mode.DRY_RUN`), on the twin's clock (`TwinClock`).
Nothing runs in the background: the returned `TwinAutoscaler` is a `Policy` (`policy(twin, now)`)
that the paced/replay loop calls every tick; it runs one controller tick every
`autoscaler.interval_seconds` of SIMULATED time.

Pools: the `autoscaler.pools` of the configuration when set (their targets are ignored: the twin
is the target), else `twin_pool_settings` for every pool of the twin (bounds around the twin's
initial replicas, bootstrap capacities of the default profile).

Every decision that changes something is handed to `on_decision(DecisionNote)` (the demo's live
view and report), and all entries are kept in a bounded `MemoryAuditLog` (`/api/v1/decisions`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from autoscaler.audit import FanoutAudit, MemoryAuditLog, reasons_of
from autoscaler.loop import Controller, Mode
from autoscaler.observe import FleetSignalsLike
from autoscaler.ports import AuditEntry, AuditSink, ObservationSource
from autoscaler.service import AutoscalerAttachment, attach
from autoscaler.settings import AutoscalerSettings, parse
from autoscaler.simulator import SimScaleTarget, TwinClock, TwinPolicy
from observer import conventions as c
from observer.config import Settings
from observer.wiring.twin import TwinError
from simulator.scenarios import Twin

MAX_DECISION_NOTES = 1000

# Bootstrap per-replica capacities at the SLO target for the default profile (Llama-8B on one
# H100 per replica; see simulator/profiles/default.yaml): uncached prompt tok/s, output tok/s.
PREFILL_CAPACITY_TOKENS_PER_S = 30_000.0
DECODE_CAPACITY_TOKENS_PER_S = 3_000.0


@dataclass(frozen=True, slots=True)
class DecisionNote:
    """One applied (or attempted) change of the autoscaler, for the live view and the report."""

    at: float
    pool: str
    text: str  # e.g. "prefill 4->6 (decode_starvation); weights prefix-cache-scorer 2->3"
    reasons: tuple[str, ...]
    ok: bool

    def as_json(self, start: float) -> dict[str, Any]:
        return {
            "elapsed": self.at - start,
            "pool": self.pool,
            "text": self.text,
            "reasons": list(self.reasons),
            "ok": self.ok,
        }


def twin_pool_settings(twin: Twin) -> list[dict[str, Any]]:
    """`autoscaler.pools` entries for every pool of the twin (bounds around its replicas now)."""
    out = []
    for name, pool in sorted(twin.actuator.get_state().pools.items()):
        pre = pool.replicas[c.ROLE_PREFILL].desired if c.ROLE_PREFILL in pool.replicas else 2
        dec = pool.replicas[c.ROLE_DECODE].desired if c.ROLE_DECODE in pool.replicas else 2
        pre_min, dec_min = max(1, pre // 2), max(1, dec // 4)
        pre_max, dec_max = max(pre_min, pre * 2 + 2), max(dec_min, dec * 2)
        out.append(
            {
                "name": name,
                "prefill": {
                    "target": {"name": f"{name}-{c.ROLE_PREFILL}"},
                    "min": pre_min,
                    "max": pre_max,
                    "max_step": 3,
                    "capacity_tokens_per_s": PREFILL_CAPACITY_TOKENS_PER_S,
                },
                "decode": {
                    "target": {"name": f"{name}-{c.ROLE_DECODE}"},
                    "min": dec_min,
                    "max": dec_max,
                    "max_step": 2,
                    "capacity_tokens_per_s": DECODE_CAPACITY_TOKENS_PER_S,
                },
                "gpu_budget": pre_max + dec_max,
                # a weight change costs an EPP restart: at most one per 5 simulated minutes
                "weights": {"min_interval_seconds": 300.0},
            }
        )
    return out


def twin_autoscaler_settings(settings: Settings, twin: Twin, mode: Mode = Mode.APPLY) -> AutoscalerSettings:
    """The configured `autoscaler:` section in `mode` (default apply), with the twin's pools
    unless set."""
    raw = dict(settings.autoscaler)
    twin_pools = twin_pool_settings(twin)
    if not raw.get("pools"):
        raw["pools"] = twin_pools
    known = [str(p["name"]) for p in twin_pools]
    unknown = [str(p.get("name")) for p in raw["pools"] if isinstance(p, dict) and p.get("name") not in known]
    if unknown:
        raise TwinError(
            f"autoscaler.pools {', '.join(unknown)}: no such pool in the twin (its pools: "
            f"{', '.join(known)}); name the twin's pools, or leave autoscaler.pools out to use them"
        )
    raw.update(enabled=True, mode=Mode(mode).value, lease={"enabled": False})
    return parse(raw)


def _describe(entry: AuditEntry) -> DecisionNote | None:
    """The entry's changes as one line; None when it changed nothing (holds, steady state)."""
    parts = [
        f"{d.role} {d.current}->{d.desired} ({', '.join(r.value for r in d.reasons)})"
        for d in entry.decisions
        if d.changed
    ]
    parts += [f"weight {w.scorer} {w.current:g}->{w.desired:g}" for w in entry.weight_changes]
    if not parts:
        return None
    ok = all(o.ok for o in entry.outcomes)
    failed = "" if ok else " [FAILED: " + "; ".join(o.detail for o in entry.outcomes if not o.ok) + "]"
    return DecisionNote(entry.at, entry.pool, "; ".join(parts) + failed, tuple(reasons_of(entry)), ok)


class _DecisionTap:
    """AuditSink turning changing entries into `DecisionNote`s (bounded)."""

    def __init__(self, on_decision: Callable[[DecisionNote], None] | None) -> None:
        self.notes: list[DecisionNote] = []
        self._on = on_decision
        self._lock = threading.Lock()

    def record(self, entry: AuditEntry) -> None:
        note = _describe(entry)
        if note is None:
            return
        with self._lock:
            if len(self.notes) < MAX_DECISION_NOTES:
                self.notes.append(note)
        if self._on is not None:
            self._on(note)


class TwinAutoscaler:
    """The control loop on the twin, as a `Policy`. The controller exists once the service has
    started (it is built by the attachment's `on_startup`); ticks before that are ignored."""

    def __init__(
        self,
        settings: AutoscalerSettings,
        *,
        attachment: AutoscalerAttachment,
        audit: MemoryAuditLog,
        target: SimScaleTarget,
        clock: TwinClock,
        tap: _DecisionTap,
    ) -> None:
        self.settings = settings
        self.attachment = attachment
        self.audit = audit
        self.target = target
        self.clock = clock
        self._tap = tap
        self.controller: Controller | None = None
        self.policy: TwinPolicy | None = None

    @property
    def routers(self) -> tuple[Any, ...]:
        return self.attachment.routers

    @property
    def on_startup(self) -> tuple[Callable[[Any], Any], ...]:
        return self.attachment.on_startup

    @property
    def decisions(self) -> tuple[DecisionNote, ...]:
        """The changing decisions so far (at most MAX_DECISION_NOTES)."""
        return tuple(self._tap.notes)

    def bind(self, controller: Controller) -> None:
        self.controller = controller
        self.policy = TwinPolicy(controller, self.clock, interval_seconds=self.settings.interval_seconds)

    def __call__(self, twin: Twin, now: float) -> None:
        if self.policy is not None:
            self.policy(twin, now)


def attach_twin_autoscaler(
    settings: Settings,
    twin: Twin,
    *,
    signals_latest: Callable[[], FleetSignalsLike | None] | None = None,
    on_decision: Callable[[DecisionNote], None] | None = None,
    mode: Mode = Mode.APPLY,
) -> TwinAutoscaler:
    """The autoscaler in apply mode on `twin`; pass `.routers` / `.on_startup` to `create_app`
    and call the result from the simulation loop. `signals_latest` (e.g. the fleet-signals
    engine's `latest`) gives the starvation/cascade signals; without it they come from records.
    `mode` dry-run keeps the twin's story unchanged while every series and decision exists."""
    asettings = twin_autoscaler_settings(settings, twin, mode)
    merged = settings.model_copy(update={"autoscaler": asettings.model_dump(mode="json")})
    audit_log = MemoryAuditLog()
    target = SimScaleTarget(twin.actuator)
    clock = TwinClock(twin.now)
    tap = _DecisionTap(on_decision)
    holder: list[TwinAutoscaler] = []

    def factory(source: ObservationSource, audit: AuditSink) -> Controller:
        ctl = Controller(
            config=asettings.policy_config(),
            mode=Mode(asettings.mode),
            scale=target,
            weights=target,
            source=source,
            clock=clock,
            sleeper=clock,
            audit=FanoutAudit(audit, tap),
            retry=asettings.retry_policy(),
            interval_seconds=asettings.interval_seconds,
        )
        holder[0].bind(ctl)
        return ctl

    att = attach(
        merged,
        controller_factory=factory,
        signals_latest=signals_latest,
        audit_log=audit_log,
        background=False,
    )
    auto = TwinAutoscaler(asettings, attachment=att, audit=audit_log, target=target, clock=clock, tap=tap)
    holder.append(auto)
    return auto
