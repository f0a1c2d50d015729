"""KV events over real ZMQ sockets: PUB/SUB in both encodings, and ROUTER replay."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import zmq

from observer import conventions as c
from simulator.emit.kvevents import ENCODING_ARRAY, ENCODING_MAP, KvEventPublisher, kv_topic
from simulator.events import KvEvent

from .factories import T0, snapshot

POD = "pd-decode-0"
MODEL = "llama-3-70b"


def stored(t: float, hashes: tuple[int, ...], medium: str = c.KV_MEDIUM_GPU) -> KvEvent:
    return KvEvent(POD, MODEL, t, c.KV_EVENT_BLOCK_STORED, hashes, medium, parent_block_hash=7, block_size=16)


@pytest.fixture
def ctx() -> Iterator[zmq.Context[Any]]:
    context: zmq.Context[Any] = zmq.Context()
    yield context
    context.destroy(linger=0)


def _subscribe(ctx: zmq.Context[Any], pub: KvEventPublisher, url: str, topic: str) -> zmq.Socket[Any]:
    """Connect a SUB and publish probes until one arrives (PUB/SUB slow-joiner)."""
    sub: zmq.Socket[Any] = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
    sub.connect(url)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        pub.kv_events((KvEvent(POD, MODEL, T0, c.KV_EVENT_ALL_CLEARED),))
        if sub.poll(100):
            sub.recv_multipart()
            while sub.poll(50):  # drain probes
                sub.recv_multipart()
            return sub
    raise AssertionError("subscriber never joined")


@pytest.mark.parametrize("encoding", [ENCODING_MAP, ENCODING_ARRAY])
def test_pub_sub_multipart_frames_and_event_encoding(ctx: zmq.Context[Any], encoding: str) -> None:
    pub = KvEventPublisher(encoding=encoding)
    try:
        ep = pub.ensure_pod(POD, MODEL)
        assert ep.topic == kv_topic(POD, MODEL) == f"kv@{POD}@{MODEL}"
        sub = _subscribe(ctx, pub, ep.pub, ep.topic)
        pub.kv_events(
            (
                stored(T0 + 1, (11, 12)),
                KvEvent(POD, MODEL, T0 + 2, c.KV_EVENT_BLOCK_REMOVED, (11,), c.KV_MEDIUM_GPU),
                stored(T0 + 2, (11,), c.KV_MEDIUM_CPU),
            )
        )
        assert sub.poll(2000)
        topic, seq, payload = sub.recv_multipart()
        assert topic == ep.topic.encode()
        assert len(seq) == 8
        ts, events, rank = msgpack.unpackb(payload)
        assert ts == T0 + 2
        assert rank == 0
        assert len(events) == 3
        if encoding == ENCODING_MAP:
            assert events[0] == {
                "type": c.KV_EVENT_BLOCK_STORED,
                "block_hashes": [11, 12],
                "parent_block_hash": 7,
                "token_ids": [],
                "block_size": 16,
                "lora_id": None,
                "medium": c.KV_MEDIUM_GPU,
                "lora_name": None,
            }
            assert events[1] == {
                "type": c.KV_EVENT_BLOCK_REMOVED,
                "block_hashes": [11],
                "medium": c.KV_MEDIUM_GPU,
            }
            assert events[2]["medium"] == c.KV_MEDIUM_CPU
        else:
            assert events[0] == [c.KV_EVENT_BLOCK_STORED, [11, 12], 7, [], 16, None, c.KV_MEDIUM_GPU, None]
            assert events[1] == [c.KV_EVENT_BLOCK_REMOVED, [11], c.KV_MEDIUM_GPU]
        sub.close(0)
    finally:
        pub.close()


def test_sequence_numbers_and_replay_over_router(ctx: zmq.Context[Any]) -> None:
    pub = KvEventPublisher()
    try:
        ep = pub.ensure_pod(POD, MODEL)
        for i in range(5):  # published before anyone listens: lost for SUB, kept for replay
            assert pub.publish(POD, MODEL, T0 + i, [stored(T0 + i, (100 + i,))]) == i
        dealer = ctx.socket(zmq.DEALER)
        dealer.connect(ep.replay)
        dealer.send_multipart([b"", (2).to_bytes(8, "big")])
        got: list[tuple[int, Any]] = []
        while True:
            assert dealer.poll(3000), "replay did not answer"
            frames = dealer.recv_multipart()
            assert frames[0] == b""
            if frames[1] == c.KV_REPLAY_END_SEQ:
                assert frames[2] == b""
                break
            got.append((int.from_bytes(frames[1], "big"), msgpack.unpackb(frames[2])))
        assert [seq for seq, _ in got] == [2, 3, 4]
        assert [batch[1][0]["block_hashes"] for _, batch in got] == [[102], [103], [104]]
        assert pub.replays_served == 1
        dealer.close(0)
    finally:
        pub.close()


def test_replay_buffer_is_bounded_and_scaled_down_pods_close(ctx: zmq.Context[Any]) -> None:
    pub = KvEventPublisher(buffer_steps=3)
    try:
        pub.pods_sampled(T0, (snapshot(POD, c.ROLE_DECODE), snapshot("pd-decode-9", c.ROLE_DECODE)))
        assert set(pub.endpoints()) == {POD, "pd-decode-9"}
        ep = pub.endpoints()[POD]
        for i in range(10):
            pub.publish(POD, MODEL, T0 + i, [stored(T0 + i, (i,))])
        dealer = ctx.socket(zmq.DEALER)
        dealer.connect(ep.replay)
        dealer.send_multipart([b"", (0).to_bytes(8, "big")])
        seqs = []
        while True:
            assert dealer.poll(3000)
            frames = dealer.recv_multipart()
            if frames[1] == c.KV_REPLAY_END_SEQ:
                break
            seqs.append(int.from_bytes(frames[1], "big"))
        assert seqs == [7, 8, 9]  # a gap from 0: the subscriber must resynchronise
        pub.pods_sampled(T0 + 1, (snapshot(POD, c.ROLE_DECODE),))
        assert set(pub.endpoints()) == {POD}
        dealer.close(0)
    finally:
        pub.close()
