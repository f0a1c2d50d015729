"""Ports: what the signal pipeline needs from the outside, as Protocols."""

from __future__ import annotations

from typing import Protocol

from observer.sources.samples import EppTarget, FleetSnapshot, PodTarget


class PodDiscovery(Protocol):
    """Where the serving pods are."""

    def pods(self) -> tuple[PodTarget, ...]: ...


class MetricSource(Protocol):
    """Reads one fleet snapshot; never raises for a failing backend (returns ok=False)."""

    name: str

    def read(self, now: float) -> FleetSnapshot: ...


class StaticDiscovery:
    """Pods (and EPPs) given in configuration."""

    def __init__(self, pods: tuple[PodTarget, ...], epps: tuple[EppTarget, ...] = ()) -> None:
        self._pods = pods
        self.epps = epps

    def pods(self) -> tuple[PodTarget, ...]:
        return self._pods


class InMemorySource:
    """A MetricSource that returns snapshots handed to it (tests, replays)."""

    def __init__(self, name: str, snapshot: FleetSnapshot) -> None:
        self.name = name
        self.snapshot = snapshot

    def read(self, now: float) -> FleetSnapshot:
        return self.snapshot
