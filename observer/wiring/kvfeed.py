"""The twin's vLLM KV events over real ZMQ into the observer's KV tier index (demo and e2e).

The twin creates one vLLM-style publisher (PUB + ROUTER replay) per pod as pods appear
(`simulator.emit.kvevents.KvEventPublisher`). `TwinKvEvents` is a `FleetSink` wrapping that
publisher: put it in the twin's fanout; every time the twin samples its pods it subscribes the
observer's `KvEventsConsumer` to the new pods' endpoints (and unsubscribes from pods scaled
away), so the consumer follows the fleet as Kubernetes discovery would. Batches are stamped
with `clock()` (the twin's simulated time) on receipt, so the index's rates are per simulated
second. Hand `index` and `consumer` to the `SignalService` (`engine.observe_kv` each tick).
"""

from __future__ import annotations

from collections.abc import Callable

from observer.sources.kvevents import KvEventsConsumer, KvPublisher, KvTierIndex
from simulator.emit.kvevents import KvEventPublisher
from simulator.events import ArrivedRequest, CompletedRequest, FleetEvent, KvEvent, PodSnapshot


class TwinKvEvents:
    """FleetSink: publishes the twin's KV events per pod; subscribes the consumer as pods come."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        host: str = "127.0.0.1",
        index: KvTierIndex | None = None,
        poll_ms: int = 20,
    ) -> None:
        self.publisher = KvEventPublisher(host=host)
        self.index = index if index is not None else KvTierIndex()
        self.consumer = KvEventsConsumer((), self.index, clock=clock, poll_ms=poll_ms)
        self._subscribed: dict[str, KvPublisher] = {}
        self._started = False

    def start(self) -> None:
        """Start the consumer thread (before the twin runs)."""
        if not self._started:
            self.consumer.start()
            self._started = True

    def sync(self) -> None:
        """Subscribe to pods that appeared, unsubscribe from pods that are gone."""
        current = {pod: KvPublisher(ep.pub, ep.replay) for pod, ep in self.publisher.endpoints().items()}
        self.consumer.sync(current.values())
        subscribed = set(self.consumer.publishers)
        self._subscribed = {pod: pub for pod, pub in current.items() if pub in subscribed}

    @property
    def subscribed(self) -> tuple[str, ...]:
        return tuple(sorted(self._subscribed))

    # -- FleetSink ------------------------------------------------------------------------------
    def request_arrived(self, arrival: ArrivedRequest) -> None:
        return None

    def request_completed(self, request: CompletedRequest) -> None:
        return None

    def pods_sampled(self, now: float, pods: tuple[PodSnapshot, ...]) -> None:
        self.publisher.pods_sampled(now, pods)
        self.sync()

    def kv_events(self, events: tuple[KvEvent, ...]) -> None:
        self.publisher.kv_events(events)

    def fleet_event(self, event: FleetEvent) -> None:
        return None

    def close(self) -> None:
        """Stop the consumer, then close the publishers' sockets."""
        self.consumer.stop()
        self.publisher.close()
