"""`serve`'s KV-event subscriptions follow the discovered fleet, over real ZMQ and a Kubernetes
PodList over HTTP: a pod that appears after the start is subscribed, a pod that is gone is
unsubscribed and forgotten by the index, and an engine that restarts (its sequence numbers
start again from 0) is read again, with its old blocks dropped.

Before, the publishers were fixed when `serve` started: a pod added by a scale-up or replaced
by a rollout (a new IP) was never read, gone pods kept their index slots, and a restarted
engine's batches were all taken for duplicates until its sequence passed the old one."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest
import zmq

from observer import conventions as c
from observer.config import Settings
from observer.signals.service import SignalService
from tests.support.httpstub import Seen, serve_http
from tests.support.procs import free_port

MODEL = "m"


def _pod(name: str, ip: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "llm", "labels": {c.K8S_LABEL_ROLE: "decode"}},
        "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]},
    }


def _stored(*hashes: int) -> bytes:
    return msgpack.packb([0.0, [{"type": "BlockStored", "block_hashes": list(hashes), "medium": "GPU"}], 0])


def _until(pred: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


class Engine:
    """One vLLM engine's KV publisher: a PUB socket on the pod's IP and the configured port."""

    def __init__(self, ctx: zmq.Context[Any], pod: str, ip: str, port: int) -> None:
        self.pod, self.topic = pod, f"kv@{pod}@{MODEL}".encode()
        self.sock = ctx.socket(zmq.PUB)
        self.sock.bind(f"tcp://{ip}:{port}")

    def send(self, seq: int, payload: bytes) -> None:
        self.sock.send_multipart((self.topic, seq.to_bytes(8, "big"), payload))


@pytest.fixture
def zctx() -> Iterator[zmq.Context[Any]]:
    ctx: zmq.Context[Any] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def test_kv_subscriptions_follow_the_discovered_fleet(zctx: zmq.Context[Any]) -> None:
    port = free_port()
    fleet = {"kind": "PodList", "items": [_pod("vllm-a", "127.0.0.2")]}

    def answer(req: Seen) -> tuple[int, bytes]:
        return 200, json.dumps(fleet).encode()

    a = Engine(zctx, "vllm-a", "127.0.0.2", port)
    b = Engine(zctx, "vllm-b", "127.0.0.3", port)  # not in the fleet yet
    with serve_http(answer) as (url, _):
        settings = Settings(
            sources={
                "metrics": "none",
                "discovery": "kubernetes",
                "kubernetes": {
                    "api_url": url,
                    "namespace": "llm",
                    "kv_events_port": port,
                    "token_file": None,
                    "ca_file": None,
                },
                "kv_events": {"enabled": True},
            }
        )
        svc = SignalService.from_settings(settings)
        consumer, index = svc.kv_consumer, svc.kv_index
        assert consumer is not None
        assert index is not None
        svc.start()
        try:

            def pods() -> set[str]:
                return {p.pod for p in index.snapshot(time.time()).pods}

            def read(engine: Engine, seq: int, payload: bytes) -> None:
                """Send until it is read (a new subscription takes a moment: slow joiner)."""
                _until(
                    lambda: engine.send(seq, payload) or consumer.last_seq.get((engine.pod, MODEL)) == seq,
                    f"{engine.pod} seq {seq} not read",
                )

            read(a, 1, _stored(1, 2))
            assert pods() == {"vllm-a"}

            fleet["items"] = [_pod("vllm-b", "127.0.0.3")]  # a rollout: a replaced by b
            svc.run_once()
            assert [p.endpoint for p in consumer.publishers] == [f"tcp://127.0.0.3:{port}"]
            read(b, 1, _stored(10, 11, 12))
            _until(lambda: pods() == {"vllm-b"}, f"the gone pod is still indexed: {pods()}")
            assert (("vllm-a", MODEL) in consumer.last_seq) is False

            for seq in range(2, 6):
                b.send(seq, _stored(20 + seq))
            _until(lambda: consumer.last_seq.get(("vllm-b", MODEL)) == 5, "b's batches not read")
            s = index.snapshot(time.time()).pod("vllm-b")
            assert s is not None
            assert s.blocks_by_tier[c.TIER_HBM] == 7

            restarts = consumer.restarts  # the slow joiner's repeats of seq 1 looked like restarts
            b.send(0, _stored(99))  # the engine restarted: numbering from 0, an empty cache
            _until(lambda: consumer.restarts == restarts + 1, "the restart was taken for a duplicate")
            s = index.snapshot(time.time()).pod("vllm-b")
            assert s is not None
            assert s.blocks_by_tier[c.TIER_HBM] == 1
            b.send(1, _stored(100))
            _until(lambda: consumer.last_seq.get(("vllm-b", MODEL)) == 1, "after the restart")
            assert consumer.restarts == restarts + 1
            assert consumer.dropped()[c.KV_DROP_MALFORMED] == 0
        finally:
            svc.stop()
