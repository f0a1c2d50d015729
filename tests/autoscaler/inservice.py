"""The control loop inside `serve` in tests: settings with one pool `llama`, and a factory for
`attach(controller_factory=...)` that builds an observe-mode controller on an in-memory target."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from autoscaler.loop import Controller, Mode
from autoscaler.ports import Clock, ObservationSource, ScaleTarget, Sleeper
from autoscaler.types import Config, PoolConfig
from observer.config import Settings, load_settings


class ClockSleeper(Clock, Sleeper, Protocol):
    """The loop's clock that is also its sleeper (`ManualClock`, `TwinClock`)."""


LLAMA_POOL = {
    "name": "llama",
    "prefill": {"target": {"name": "llama-prefill"}},
    "decode": {"target": {"name": "llama-decode"}},
}


def llama_settings(**sections: Any) -> Settings:
    """`autoscaler.enabled` with the pool `llama`, plus other sections' overrides."""
    return load_settings(
        None, overrides={"autoscaler": {"enabled": True, "pools": [LLAMA_POOL]}, **sections}, env={}
    )


def observe_factory(
    scale: ScaleTarget, clock: ClockSleeper, made: list[Controller], config: Config | None = None
) -> Callable[[ObservationSource, Any], Controller]:
    """Builds the loop's controller in observe mode (`config`, default: the pool `llama` with
    default settings); each one built is appended to `made`."""

    def factory(source: ObservationSource, audit: Any) -> Controller:
        ctl = Controller(
            config=config if config is not None else Config({"llama": PoolConfig("llama")}),
            mode=Mode.OBSERVE,
            scale=scale,
            source=source,
            clock=clock,
            sleeper=clock,
            audit=audit,
        )
        made.append(ctl)
        return ctl

    return factory
