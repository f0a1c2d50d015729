"""The twin's KV events over real ZMQ into the observer's tier index (`TwinKvEvents`): the
consumer subscribes to pods that appear after it started (scale-up) and drops pods scaled away;
the cascade shows up as per-pod demotion rates, as the signals engine reads them."""

from __future__ import annotations

import time

from observer import conventions as c
from observer.sources.kvevents import KvPublisher
from observer.wiring.kvfeed import TwinKvEvents
from observer.wiring.twin import build_twin
from simulator.scenarios import Twin

POOL = "llama-8b"
T0 = 1_800_000_000.0


def _run(twin: Twin, until: float, step: float = 5.0) -> None:
    t = twin.now
    while t < until:
        t = min(until, t + step)
        twin.run_until(t)
        time.sleep(0.01)  # let the consumer keep up (and new subscriptions connect)


def _wait(pred: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_pods_appearing_after_start_are_subscribed_and_gone_pods_dropped() -> None:
    holder: list[Twin] = []
    kv = TwinKvEvents(lambda: holder[0].now)
    twin = build_twin("prefill-burst", sink=kv, seed=3, start=T0, duration=600, kv_events=True)
    holder.append(twin)
    kv.start()
    try:
        _run(twin, T0 + 30)
        first = set(kv.subscribed)
        assert first  # the initial pods, subscribed as soon as the twin sampled them
        assert len(kv.consumer.publishers) == len(first)
        prefill = twin.actuator.get_state().pools[POOL].replicas[c.ROLE_PREFILL].desired
        twin.actuator.set_replicas(POOL, c.ROLE_PREFILL, prefill + 1)
        _run(twin, T0 + 450)  # past the 90 s cold start, the new pod serves the burst
        new = set(kv.subscribed) - first
        assert len(new) == 1, kv.subscribed
        (pod,) = new
        # its KV events crossed ZMQ into the index, stamped on the twin's clock
        assert _wait(
            lambda: (
                (s := kv.index.snapshot(twin.now).pod(pod)) is not None and sum(s.blocks_by_tier.values()) > 0
            )
        )
        sample = kv.index.snapshot(twin.now).pod(pod)
        assert sample is not None
        assert sample.last_event_time is not None
        assert T0 + 120 < sample.last_event_time <= twin.now
        twin.actuator.set_replicas(POOL, c.ROLE_PREFILL, prefill)
        _run(twin, T0 + 600)
        gone = (first | new) - set(kv.subscribed)
        assert gone  # a prefill pod was scaled away: unsubscribed
        assert len(kv.consumer.publishers) == len(kv.subscribed)
        assert kv.consumer.decode_errors == 0
    finally:
        kv.close()


def test_consumer_refuses_publishers_past_its_bound() -> None:
    kv = TwinKvEvents(time.time)
    try:
        kv.consumer.max_publishers = 1
        assert kv.consumer.add_publisher(KvPublisher("tcp://127.0.0.1:1"))
        assert kv.consumer.add_publisher(KvPublisher("tcp://127.0.0.1:1"))  # already there
        assert not kv.consumer.add_publisher(KvPublisher("tcp://127.0.0.1:2"))
        assert kv.consumer.refused_publishers == 1
        kv.consumer.remove_publisher(KvPublisher("tcp://127.0.0.1:1"))
        assert kv.consumer.publishers == ()
    finally:
        kv.close()


def test_cascade_shows_as_per_pod_demotions_from_hbm() -> None:
    holder: list[Twin] = []
    kv = TwinKvEvents(lambda: holder[0].now)
    twin = build_twin("cache-cascade", sink=kv, seed=1, start=T0, kv_events=True)
    holder.append(twin)
    kv.start()
    try:
        _run(twin, T0 + 450)

        def demoting() -> bool:
            snap = kv.index.snapshot(twin.now)
            return any(p.demotion_rate_by_tier.get(c.TIER_HBM, 0.0) > 0 for p in snap.pods)

        assert _wait(demoting)
        snap = kv.index.snapshot(twin.now)
        assert {p.pod for p in snap.pods} <= set(kv.subscribed)
        assert any(p.remove_rate_by_tier.get(c.TIER_HBM, 0.0) > 0 for p in snap.pods)
    finally:
        kv.close()
