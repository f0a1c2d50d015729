"""KV events over real ZMQ sockets: both encodings, a sequence gap, a replay, bounded memory."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
import zmq

from observer import conventions as c
from observer.sources.kvevents import (
    END_SEQ,
    KvBatch,
    KvEventRecord,
    KvEventsConsumer,
    KvPublisher,
    KvTierIndex,
    decode_batch,
    parse_topic,
)
from observer.sources.untrusted import ValueCleaner, clean_value
from tests.support.procs import free_port

TOPIC = b"kv@decode-0@llama@8b"
WHO = ("decode-0", "llama@8b")  # the consumer's last_seq key for TOPIC


def _map_stored(hashes: list[int], medium: str) -> dict[str, object]:
    return {
        "type": "BlockStored",
        "block_hashes": hashes,
        "parent_block_hash": None,
        "token_ids": [1],
        "block_size": 16,
        "lora_id": None,
        "medium": medium,
    }


def _arr_stored(hashes: list[int], medium: str) -> list[object]:
    return ["BlockStored", hashes, None, [1], 16, None, medium]


def _wait(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def _bound_pub(ctx: zmq.Context[Any]) -> tuple[zmq.Socket[bytes], str]:
    """A PUB socket bound to a free local port, and its endpoint."""
    sock: zmq.Socket[bytes] = ctx.socket(zmq.PUB)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    sock.bind(endpoint)
    return sock, endpoint


def _hbm_blocks(idx: KvTierIndex, pod: str = WHO[0]) -> int:
    s = idx.snapshot(50.0).pod(pod)
    return 0 if s is None else s.blocks_by_tier[c.TIER_HBM]


def test_decoding_both_encodings_and_topics() -> None:
    m = decode_batch(msgpack.packb([1.0, [_map_stored([1, 2], "CPU"), {"type": "AllBlocksCleared"}], 0]))
    a = decode_batch(msgpack.packb([1.0, [_arr_stored([1, 2], "CPU"), ["AllBlocksCleared"]]]))
    assert (
        m.events
        == a.events
        == (
            KvEventRecord("BlockStored", (1, 2), "CPU"),
            KvEventRecord("AllBlocksCleared", (), "GPU"),
        )
    )
    assert m.dp_rank == 0
    assert a.dp_rank is None
    old = decode_batch(msgpack.packb([2.0, [["BlockRemoved", [7]]]]))  # no medium: GPU
    assert old.events == (KvEventRecord("BlockRemoved", (7,), "GPU"),)
    assert parse_topic(TOPIC) == ("decode-0", "llama@8b")
    assert parse_topic(b"other") is None


def test_demotion_and_rates_in_the_index() -> None:
    idx = KvTierIndex(rate_window_seconds=10, bucket_seconds=1)
    idx.apply("p", "m", KvBatch(0, (KvEventRecord("BlockStored", (1, 2, 3), "GPU"),)), 100.0)
    idx.apply("p", "m", KvBatch(0, (KvEventRecord("BlockStored", (1,), "CPU"),)), 101.0)  # offload copy
    idx.apply("p", "m", KvBatch(0, (KvEventRecord("BlockRemoved", (1, 2), "GPU"),)), 102.0)  # 1 demoted
    idx.apply("p", "m", KvBatch(0, (KvEventRecord("BlockStored", (2,), "CPU"),)), 103.0)  # 2 demoted late
    s = idx.snapshot(105.0).pod("p")
    assert s is not None
    assert s.blocks_by_tier == {c.TIER_HBM: 1, c.TIER_DRAM: 2, c.TIER_DISK: 0}
    assert s.store_rate_by_tier[c.TIER_HBM] == 0.3
    assert s.store_rate_by_tier[c.TIER_DRAM] == 0.2
    assert s.remove_rate_by_tier[c.TIER_HBM] == 0.2
    assert s.demotion_rate_by_tier == {c.TIER_HBM: 0.2, c.TIER_DRAM: 0.0, c.TIER_DISK: 0.0}
    assert idx.snapshot(200.0).pods[0].store_rate_by_tier[c.TIER_HBM] == 0.0  # outside the window


def test_memory_is_bounded() -> None:
    idx = KvTierIndex(max_blocks_per_pod=100, max_pods=2)
    idx.apply("p", "m", KvBatch(0, (KvEventRecord("BlockStored", tuple(range(1000)), "GPU"),)), 1.0)
    s = idx.snapshot(1.0).pod("p")
    assert s is not None
    assert s.blocks_by_tier[c.TIER_HBM] == 100
    assert s.truncated
    for pod in ("q", "r"):
        idx.apply(pod, "m", KvBatch(0, ()), 1.0)
    assert [p.pod for p in idx.snapshot(1.0).pods] == ["p", "q"]
    assert idx.dropped_pods == 1


def test_each_engine_of_a_pod_has_its_own_blocks_within_the_pods_cap() -> None:
    # the data-parallel ranks of a pod each hold a cache: a block both hold is two blocks, a
    # removal on one leaves the other's, and forgetting one rank keeps the other's
    idx = KvTierIndex(max_blocks_per_pod=6)
    stored = KvBatch(0, (KvEventRecord("BlockStored", (1, 2, 3), "GPU"),))
    idx.apply("p", "m", stored, 1.0, part="rank0")
    idx.apply("p", "m", stored, 1.0, part="rank1")
    idx.apply("p", "m", KvBatch(0, (KvEventRecord("BlockRemoved", (3,), "GPU"),)), 1.0, part="rank1")
    assert _hbm_blocks(idx, "p") == 5
    idx.forget("p", "rank1")
    assert _hbm_blocks(idx, "p") == 3
    idx.apply(
        "p", "m", KvBatch(0, (KvEventRecord("BlockStored", tuple(range(10, 20)), "GPU"),)), 1.0, part="r2"
    )
    s = idx.snapshot(1.0).pod("p")
    assert s is not None
    assert s.blocks_by_tier[c.TIER_HBM] == 6  # the cap is the pod's, over its engines
    assert s.truncated
    idx.forget("p", "rank0")
    idx.forget("p", "r2")
    assert idx.snapshot(1.0).pod("p") is None  # gone with its last engine


class FakeVllmPublisher:
    """PUB + ROUTER replay, speaking vLLM's ZmqEventPublisher wire protocol."""

    def __init__(self) -> None:
        self.ctx = zmq.Context()
        self.pub = self.ctx.socket(zmq.PUB)
        self.port = free_port()
        self.pub.bind(f"tcp://127.0.0.1:{self.port}")
        self.router = self.ctx.socket(zmq.ROUTER)
        self.replay_port = free_port()
        self.router.bind(f"tcp://127.0.0.1:{self.replay_port}")
        self.buffer: list[tuple[int, bytes]] = []
        self.replay_requests: list[int] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve_replay, daemon=True)
        self.thread.start()

    def _serve_replay(self) -> None:
        while not self.stop.is_set():
            if self.router.poll(20):
                client, _, start_b = self.router.recv_multipart()
                start = int.from_bytes(start_b, "big")
                self.replay_requests.append(start)
                for seq, buf in list(self.buffer):
                    if seq >= start:
                        self.router.send_multipart((client, b"", seq.to_bytes(8, "big"), buf))
                self.router.send_multipart((client, b"", END_SEQ, b""))

    def publish(self, seq: int, payload: bytes, *, send: bool = True) -> None:
        self.buffer.append((seq, payload))
        if send:
            self.pub.send_multipart((TOPIC, seq.to_bytes(8, "big"), payload))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.pub.close(0)
        self.router.close(0)
        self.ctx.term()


def _run(with_replay: bool) -> tuple[KvTierIndex, KvEventsConsumer]:
    fake = FakeVllmPublisher()
    idx = KvTierIndex()
    pub = KvPublisher(
        f"tcp://127.0.0.1:{fake.port}", f"tcp://127.0.0.1:{fake.replay_port}" if with_replay else None
    )
    consumer = KvEventsConsumer([pub], idx, clock=lambda: 50.0)
    consumer.start()
    try:
        warm = msgpack.packb([0.0, [], 0])
        fake.buffer.append((0, warm))
        deadline = time.monotonic() + 5
        while WHO not in consumer.last_seq:  # slow joiner: repeat seq 0 until subscribed
            assert time.monotonic() < deadline
            fake.pub.send_multipart((TOPIC, (0).to_bytes(8, "big"), warm))
            time.sleep(0.02)
        fake.publish(1, msgpack.packb([1.0, [_map_stored([10, 11, 12], "GPU")], 0]))  # map encoding
        fake.publish(2, msgpack.packb([2.0, [_arr_stored([13], "GPU")], 0]), send=False)  # lost on PUB
        fake.publish(3, msgpack.packb([3.0, [["BlockRemoved", [10], "GPU"], _arr_stored([10], "CPU")], 0]))
        _wait(lambda: consumer.last_seq.get(WHO) == 3)
        assert fake.replay_requests == ([2] if with_replay else [])
    finally:
        consumer.stop()
        fake.close()
    return idx, consumer


def test_gap_is_replayed_over_the_router_socket() -> None:
    idx, consumer = _run(with_replay=True)
    s = idx.snapshot(50.0).pod("decode-0")
    assert s is not None
    assert s.model == "llama@8b"
    assert s.blocks_by_tier[c.TIER_HBM] == 3  # 11, 12 and the replayed 13
    assert s.blocks_by_tier[c.TIER_DRAM] == 1
    assert (s.gaps, s.replayed) == (0, 1)
    assert s.demotion_rate_by_tier[c.TIER_HBM] > 0
    assert consumer.decode_errors == 0


def test_gap_without_replay_is_counted_lost() -> None:
    idx, _ = _run(with_replay=False)
    s = idx.snapshot(50.0).pod("decode-0")
    assert s is not None
    assert s.blocks_by_tier[c.TIER_HBM] == 2
    assert (s.gaps, s.replayed) == (1, 0)


# --------------------------------------------------------------------------- untrusted publishers


def test_topic_pod_and_model_are_made_safe_and_counted() -> None:
    cleaner = ValueCleaner(c.SOURCE_KV_EVENTS)
    pod = "p" * 1_000_000 + "\x00"
    who = parse_topic(b"kv@" + pod.encode() + b"@llama\x00@8b", cleaner)
    assert who == (clean_value(pod), "llama" + c.VALUE_REPLACEMENT + "@8b")
    assert len(who[0]) == c.MAX_VALUE_CHARS
    assert cleaner.count == 2
    assert parse_topic(TOPIC, cleaner) == WHO
    assert cleaner.count == 2  # a clean topic rewrites nothing


MALFORMED = {
    "events not a list": [0.0, 5, 0],
    "timestamp not a number": [[1], [], 0],
    "a map as a block hash": [0.0, [{"type": "BlockStored", "block_hashes": [{"a": 1}]}], 0],
    "block_hashes not a list": [0.0, [{"type": "BlockStored", "block_hashes": 7}], 0],
    "array event with hashes not a list": [0.0, [["BlockRemoved", 7, "GPU"]], 0],
    "medium bytes not UTF-8": [0.0, [{"type": "BlockStored", "block_hashes": [1], "medium": b"\xff"}], 0],
}


@pytest.mark.parametrize("shape", sorted(MALFORMED))
def test_a_malformed_batch_is_a_value_error(shape: str) -> None:
    with pytest.raises(ValueError, match="malformed batch"):
        decode_batch(msgpack.packb(MALFORMED[shape]))


def test_a_hostile_publisher_cannot_stop_the_consumer_nor_grow_its_memory() -> None:
    """Over real ZMQ: each malformed batch is one decode error and the thread goes on (each of
    them used to end it, and every later event of every publisher was lost); topics flooding in
    keep at most `max_topics` sequence entries (it was one per topic, unbounded)."""
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    port = free_port()
    pub.bind(f"tcp://127.0.0.1:{port}")
    idx = KvTierIndex(max_pods=8)
    consumer = KvEventsConsumer(
        [KvPublisher(f"tcp://127.0.0.1:{port}")],
        idx,
        clock=lambda: 50.0,
        poll_ms=10,
        max_topics=16,
        max_topics_per_publisher=1000,  # this test is about max_topics; the next one about this
    )
    consumer.start()

    def send(topic: bytes, seq: int, payload: bytes) -> None:
        pub.send_multipart((topic, seq.to_bytes(8, "big"), payload))

    def stored(h: int) -> bytes:
        return msgpack.packb([0.0, [_map_stored([h], "GPU")], 0])

    try:
        deadline = time.monotonic() + 5
        while WHO not in consumer.last_seq:  # slow joiner
            assert time.monotonic() < deadline
            send(TOPIC, 0, stored(0))
            time.sleep(0.02)
        for seq, shape in enumerate(sorted(MALFORMED), start=1):
            send(TOPIC, seq, msgpack.packb(MALFORMED[shape]))
        base = len(MALFORMED) + 1
        for i in range(3):
            send(TOPIC, base + i, stored(100 + i))
        _wait(lambda: consumer.last_seq.get(WHO) == base + 2)
        assert consumer.decode_errors == len(MALFORMED)
        s = idx.snapshot(50.0).pod("decode-0")
        assert s is not None
        assert s.blocks_by_tier[c.TIER_HBM] == 4  # 0 and the three after the malformed ones

        flood = 200
        for i in range(flood):
            send(b"kv@flood-%d@" % i + b"m" * 300, 1, stored(i))
        send(b"kv@" + b"q" * 100_000 + b"\x00@model", 1, stored(1))
        _wait(lambda: consumer.cleaner.count == flood + 1)  # the 200 long models, the long pod
        assert len(consumer.last_seq) <= 16
        assert all(
            len(pod) <= c.MAX_VALUE_CHARS and len(model) <= c.MAX_VALUE_CHARS
            for pod, model in consumer.last_seq
        )
        assert len(idx.snapshot(50.0).pods) == 8  # the index's own bound
    finally:
        consumer.stop()
        pub.close(0)
        ctx.term()


def test_one_publisher_cannot_take_the_pod_slots_of_the_others() -> None:
    """Over real ZMQ: a publisher announcing many topics (pods) gets `max_topics_per_publisher`
    of them into the index, the rest are refused and counted; another publisher's pod still
    gets in; a removed publisher's topics no longer count against it."""
    ctx = zmq.Context()
    socks, pubs = [], []
    for _ in range(2):
        sock = ctx.socket(zmq.PUB)
        port = free_port()
        sock.bind(f"tcp://127.0.0.1:{port}")
        socks.append(sock)
        pubs.append(KvPublisher(f"tcp://127.0.0.1:{port}"))
    hostile, honest = socks
    idx = KvTierIndex(max_pods=8)
    consumer = KvEventsConsumer(pubs, idx, clock=lambda: 50.0, poll_ms=10, max_topics_per_publisher=3)
    consumer.start()

    def stored(h: int) -> bytes:
        return msgpack.packb([0.0, [_map_stored([h], "GPU")], 0])

    try:
        deadline = time.monotonic() + 5
        while ("flood-0", "m") not in consumer.last_seq:  # slow joiner
            assert time.monotonic() < deadline
            hostile.send_multipart((b"kv@flood-0@m", (1).to_bytes(8, "big"), stored(0)))
            time.sleep(0.02)
        for i in range(1, 40):
            hostile.send_multipart((b"kv@flood-%d@m" % i, (1).to_bytes(8, "big"), stored(i)))
        _wait(lambda: consumer.refused_topics == 40 - 3)
        while ("decode-7", "m") not in consumer.last_seq:  # the honest pod still gets a slot
            assert time.monotonic() < deadline + 5
            honest.send_multipart((b"kv@decode-7@m", (1).to_bytes(8, "big"), stored(7)))
            time.sleep(0.02)
        pods = {p.pod for p in idx.snapshot(50.0).pods}
        assert pods == {"flood-0", "flood-1", "flood-2", "decode-7"}
        assert idx.dropped_pods == 0

        consumer.remove_publisher(pubs[0])  # its pod went away; a new publisher at that address
        consumer.add_publisher(pubs[0])  # starts with no topics counted against it
        deadline = time.monotonic() + 5
        while ("flood-9", "m") not in consumer.last_seq:
            assert time.monotonic() < deadline
            hostile.send_multipart((b"kv@flood-9@m", (1).to_bytes(8, "big"), stored(9)))
            time.sleep(0.02)
    finally:
        consumer.stop()
        for sock in socks:
            sock.close(0)
        ctx.term()


def _subscribed(consumer: KvEventsConsumer, pub: zmq.Socket[bytes], topic: bytes, payload: bytes) -> None:
    """Repeat seq 0 until the consumer has it (slow joiner)."""
    who = parse_topic(topic)
    deadline = time.monotonic() + 5
    while who not in consumer.last_seq:
        assert time.monotonic() < deadline
        pub.send_multipart((topic, (0).to_bytes(8, "big"), payload))
        time.sleep(0.02)


def test_a_deeply_nested_hash_or_a_long_sequence_frame_does_not_end_the_consumer() -> None:
    """Over real ZMQ. A block hash nested ~600 lists deep (msgpack allows 1024) raised
    RecursionError, and a sequence frame longer than 8 bytes overflowed the replay request
    (OverflowError): neither is a ValueError, so each ended the consumer thread and every later
    batch of every publisher was lost. Now each is one decode error, nothing else changes."""
    ctx = zmq.Context()
    pub, endpoint = _bound_pub(ctx)
    idx = KvTierIndex()
    # a replay endpoint nobody serves: the overflow came before anything was sent
    consumer = KvEventsConsumer(
        [KvPublisher(endpoint, f"tcp://127.0.0.1:{free_port()}")],
        idx,
        clock=lambda: 50.0,
        poll_ms=10,
        replay_timeout_ms=50,
    )
    consumer.start()
    stored = msgpack.packb([0.0, [_map_stored([7777], "GPU")], 0])
    try:
        _subscribed(consumer, pub, TOPIC, stored)
        deep = stored.replace(msgpack.packb(7777), b"\x91" * 600 + b"\x01")
        pub.send_multipart((TOPIC, (1).to_bytes(8, "big"), deep))
        pub.send_multipart((TOPIC, (2**64).to_bytes(9, "big"), stored))
        pub.send_multipart((TOPIC, (2**64 + 5).to_bytes(9, "big"), stored))
        pub.send_multipart(
            (TOPIC, (2).to_bytes(8, "big"), msgpack.packb([0.0, [_map_stored([1], "GPU")], 0]))
        )
        _wait(lambda: consumer.last_seq.get(WHO) == 2)
        assert consumer.decode_errors == 3
        s = idx.snapshot(50.0).pod("decode-0")
        assert s is not None
        assert s.blocks_by_tier[c.TIER_HBM] == 2  # 7777 and 1
        assert (s.gaps, s.replayed) == (0, 0)
    finally:
        consumer.stop()
        pub.close(0)
        ctx.term()


def test_a_replay_that_repeats_or_never_ends_is_bounded() -> None:
    """Over real ZMQ: a ROUTER answering the one missing batch three times, then streaming
    batches without end. The repeats were each counted recovered (gaps went negative: 1 lost −
    3 replayed) and the stream held the consumer thread in the replay for as long as it lasted
    (no live batch applied). Now one batch is recovered once and the replay stops there."""
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    port = free_port()
    pub.bind(f"tcp://127.0.0.1:{port}")
    router = ctx.socket(zmq.ROUTER)
    replay_port = free_port()
    router.bind(f"tcp://127.0.0.1:{replay_port}")
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            if router.poll(20):
                client, _, start_b = router.recv_multipart()
                start = int.from_bytes(start_b, "big")
                batch = msgpack.packb([1.0, [_map_stored([500], "GPU")], 0])
                for _ in range(3):
                    router.send_multipart((client, b"", start.to_bytes(8, "big"), batch))
                while not stop.is_set():  # then batches before the gap, without end
                    router.send_multipart((client, b"", (0).to_bytes(8, "big"), batch))
                    time.sleep(0.01)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    idx = KvTierIndex()
    consumer = KvEventsConsumer(
        [KvPublisher(f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.1:{replay_port}")],
        idx,
        clock=lambda: 50.0,
        poll_ms=10,
    )
    consumer.start()
    try:
        _subscribed(consumer, pub, TOPIC, msgpack.packb([0.0, [], 0]))
        pub.send_multipart(
            (TOPIC, (2).to_bytes(8, "big"), msgpack.packb([2.0, [_map_stored([2], "GPU")], 0]))
        )
        _wait(lambda: consumer.last_seq.get(WHO) == 2, timeout=3)
        pub.send_multipart(
            (TOPIC, (3).to_bytes(8, "big"), msgpack.packb([3.0, [_map_stored([3], "GPU")], 0]))
        )
        _wait(lambda: consumer.last_seq.get(WHO) == 3, timeout=3)  # the thread is free again
        s = idx.snapshot(50.0).pod("decode-0")
        assert s is not None
        assert (s.gaps, s.replayed) == (0, 1)
        assert s.blocks_by_tier[c.TIER_HBM] == 3  # 500 (replayed), 2 and 3
    finally:
        stop.set()
        consumer.stop()
        thread.join(5)
        pub.close(0)
        router.close(0)
        ctx.term()


def test_the_data_parallel_ranks_of_one_pod_keep_their_own_sequence() -> None:
    """Over real ZMQ. The data-parallel ranks of one vLLM pod publish the same topic from their
    own endpoints, each numbering from 0. Keyed by the topic alone, each rank's batch after the
    other's looked like an engine restart, and the pod's blocks were dropped again and again.
    Each rank has a cache of its own: a restart of one drops its blocks, not the other's."""
    ctx = zmq.Context()
    bound = [_bound_pub(ctx) for _ in range(2)]  # two ranks
    socks, pubs = [sock for sock, _ in bound], [KvPublisher(endpoint) for _, endpoint in bound]
    idx = KvTierIndex()
    consumer = KvEventsConsumer(pubs, idx, clock=lambda: 50.0, poll_ms=10)
    consumer.start()

    def send(seq: int, base: int, ranks: int = 2) -> None:
        for rank, sock in enumerate(socks[:ranks]):
            batch = msgpack.packb([0.0, [_map_stored([base + rank], "GPU")], rank])
            sock.send_multipart((TOPIC, seq.to_bytes(8, "big"), batch))

    try:
        seq, deadline = 0, time.monotonic() + 5
        while _hbm_blocks(idx) < 2:  # slow joiners: every rank counts up with the same block until read
            assert time.monotonic() < deadline, f"both ranks' blocks never held together: {_hbm_blocks(idx)}"
            send(seq, 100)
            seq += 1
            time.sleep(0.02)
        send(seq, 200)
        send(seq + 1, 300)
        _wait(lambda: _hbm_blocks(idx) == 6)
        assert consumer.restarts == 0
        snap = idx.snapshot(50.0).pod(WHO[0])
        assert snap is not None
        assert snap.gaps == 0
        # one rank's engine restarts (numbers from 0 again, empty cache): only its blocks go
        socks[1].send_multipart(
            (TOPIC, (0).to_bytes(8, "big"), msgpack.packb([0.0, [_map_stored([501], "GPU")], 1]))
        )
        # rank 0's 100, 200, 300 and rank 1's 501 (was 1: every rank's blocks went)
        _wait(lambda: consumer.restarts == 1 and _hbm_blocks(idx) == 4)
        consumer.remove_publisher(pubs[1])  # one rank's endpoint goes: its blocks go, the pod stays
        _wait(lambda: _hbm_blocks(idx) == 3)
        send(seq + 2, 400, ranks=1)
        _wait(lambda: _hbm_blocks(idx) == 4)  # 100, 200, 300, 400
    finally:
        consumer.stop()
        for sock in socks:
            sock.close(0)
        ctx.term()


def test_a_message_over_the_size_cap_is_never_read_and_the_publisher_is_read_again() -> None:
    """Over real ZMQ: a batch larger than `max_message_bytes` is never read whole into memory
    (ZMQ's MAXMSGSIZE drops that connection, and a connecting socket does not retry after it:
    the publisher was lost for good). The consumer subscribes again and reads the publisher's
    next batches; the number it skipped is a gap."""
    ctx = zmq.Context()
    pub, endpoint = _bound_pub(ctx)
    idx = KvTierIndex()
    consumer = KvEventsConsumer(
        [KvPublisher(endpoint)],
        idx,
        clock=lambda: 50.0,
        poll_ms=10,
        max_message_bytes=65_536,
    )
    consumer.start()

    def until_read(seq: int, block: int) -> int:
        """Send `block` under seq, seq + 1, ... until one is read (slow joiner, reconnect)."""
        deadline = time.monotonic() + 10
        before = consumer.last_seq.get(WHO, -1)
        while consumer.last_seq.get(WHO, -1) == before:
            assert time.monotonic() < deadline, "never read"
            batch = msgpack.packb([0.0, [_map_stored([block], "GPU")], 0])
            pub.send_multipart((TOPIC, seq.to_bytes(8, "big"), batch))
            seq += 1
            time.sleep(0.02)
        return seq

    try:
        seq = until_read(0, 1)
        huge = msgpack.packb([0.0, [_map_stored(list(range(100_000, 120_000)), "GPU")], 0])
        assert len(huge) > 65_536
        pub.send_multipart((TOPIC, seq.to_bytes(8, "big"), huge))
        until_read(seq + 1, 2)
        assert _hbm_blocks(idx) == 2  # the huge batch's 20,000 blocks were never applied
        assert consumer.reconnects >= 1
        snap = idx.snapshot(50.0).pod(WHO[0])
        assert snap is not None
        assert snap.gaps >= 1
    finally:
        consumer.stop()
        pub.close(0)
        ctx.term()
