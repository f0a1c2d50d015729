"""Actuation of the twin: what the autoscaler's simulator actuator calls.

Same semantics as the real fleet: replicas start after a cold-start delay and drain on
scale-down (no request lost); scorer weights and the P/D decider threshold take effect after
an EPP restart delay.
"""

from __future__ import annotations

from collections.abc import Mapping

from observer import conventions as c
from simulator.fleet import Fleet, FleetState, PoolState, RoleReplicas

__all__ = ["FleetState", "PoolState", "RoleReplicas", "SimActuator"]


class SimActuator:
    """Facade over one or more fleets, addressed by pool name."""

    def __init__(self, *fleets: Fleet) -> None:
        self._fleets = {f.profile.pool: f for f in fleets}

    def _fleet(self, pool: str) -> Fleet:
        try:
            return self._fleets[pool]
        except KeyError:
            raise ValueError(f"unknown pool {pool!r}; known: {sorted(self._fleets)}") from None

    def set_replicas(self, pool: str, role: str, n: int) -> None:
        """Desired replicas of `role` (conventions.ROLE_PREFILL | ROLE_DECODE) in `pool`."""
        if role not in c.ROLES:
            raise ValueError(f"unknown role {role!r}; expected one of {list(c.ROLES)}")
        self._fleet(pool).set_replicas(role, int(n))

    def set_scorer_weights(self, pool: str, weights: Mapping[str, float]) -> float:
        """New EPP scorer weights; returns the simulated time at which they take effect."""
        return self._fleet(pool).set_weights(weights)

    def set_decider_threshold(self, pool: str, tokens: int) -> float:
        """New P/D decider `nonCachedTokens`; returns the simulated time it takes effect."""
        return self._fleet(pool).set_decider_threshold(int(tokens))

    def get_state(self) -> FleetState:
        """Replicas desired/ready/starting/draining per role, weights active/pending, readiness."""
        pools: dict[str, PoolState] = {}
        time = 0.0
        for fleet in self._fleets.values():
            state = fleet.state()
            time = state.time
            pools.update(state.pools)
        return FleetState(time=time, pools=pools)
