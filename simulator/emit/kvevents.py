"""vLLM KV cache events from the twin, over real ZMQ (field notes §4).

Like vLLM's `ZmqEventPublisher`, every pod gets its own PUB socket and its own ROUTER replay
socket (bound on loopback, ephemeral ports; see `endpoints()`):

- PUB, multipart `(topic, seq, payload)`: topic `kv@<pod>@<model>`, `seq` an 8-byte big-endian
  per-pod sequence number from 0, payload msgpack `[ts, events, data_parallel_rank]`.
- Events: msgpack MAPs with a `"type"` key (vLLM >= ~0.26), or with `encoding="array"` the
  older positional arrays `[tag, field...]`:
  `BlockStored{block_hashes, parent_block_hash, token_ids, block_size, lora_id, medium, lora_name}`,
  `BlockRemoved{block_hashes, medium}`, `AllBlocksCleared{}`. `token_ids` is empty (the twin
  tracks blocks, not tokens).
- Replay (vLLM's protocol): a DEALER sends `[b"", start_seq as 8-byte big-endian]`; the
  ROUTER answers one `[b"", seq, payload]` per retained batch with seq >= start_seq, then
  `[b"", END_SEQ, b""]` where END_SEQ is -1 as 8-byte signed big-endian. The last
  `buffer_steps` batches per pod are retained.

Replay requests are served by one daemon thread; the PUB sockets are used only by the
thread that calls the sink (the simulation).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import msgpack
import zmq

from observer import conventions as c
from simulator.events import ArrivedRequest, CompletedRequest, FleetEvent, KvEvent, PodSnapshot

ENCODING_MAP: Final = "map"
ENCODING_ARRAY: Final = "array"
ENCODINGS: Final = (ENCODING_MAP, ENCODING_ARRAY)
_TYPE_KEY: Final = "type"


def kv_topic(pod: str, model: str) -> str:
    """The vLLM topic of a pod's KV events: `kv@<pod>@<model>`."""
    return f"{c.KV_TOPIC_PREFIX}{pod}{c.KV_TOPIC_SEPARATOR}{model}"


def encode_event(event: KvEvent, encoding: str = ENCODING_MAP) -> Any:
    """One event as vLLM serialises it (map with "type", or positional array)."""
    if event.kind == c.KV_EVENT_BLOCK_STORED:
        fields: list[tuple[str, Any]] = [
            ("block_hashes", list(event.block_hashes)),
            ("parent_block_hash", event.parent_block_hash),
            ("token_ids", []),
            ("block_size", event.block_size),
            ("lora_id", None),
            ("medium", event.medium),
            ("lora_name", None),
        ]
    elif event.kind == c.KV_EVENT_BLOCK_REMOVED:
        fields = [("block_hashes", list(event.block_hashes)), ("medium", event.medium)]
    elif event.kind == c.KV_EVENT_ALL_CLEARED:
        fields = []
    else:
        raise ValueError(f"unknown KV event kind {event.kind!r}")
    if encoding == ENCODING_ARRAY:
        return [event.kind, *(v for _, v in fields)]
    return {_TYPE_KEY: event.kind, **dict(fields)}


def encode_batch(
    ts: float, events: Iterable[KvEvent], encoding: str = ENCODING_MAP, dp_rank: int = 0
) -> bytes:
    """The msgpack payload `[ts, events, data_parallel_rank]`."""
    payload: bytes = msgpack.packb([ts, [encode_event(e, encoding) for e in events], dp_rank])
    return payload


@dataclass(frozen=True, slots=True)
class PodEndpoints:
    """Where a subscriber connects for one pod."""

    pod: str
    model: str
    topic: str
    pub: str  # tcp://127.0.0.1:PORT
    replay: str


class _PodPublisher:
    def __init__(self, ctx: zmq.Context[Any], host: str, pod: str, model: str, buffer_steps: int) -> None:
        self.pub = ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.setsockopt(zmq.SNDHWM, 100_000)
        pub_port = self.pub.bind_to_random_port(f"tcp://{host}")
        self.router = ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        replay_port = self.router.bind_to_random_port(f"tcp://{host}")
        self.topic = kv_topic(pod, model).encode()
        self.seq = 0
        self.buffer: deque[tuple[int, bytes]] = deque(maxlen=buffer_steps)
        self.endpoints = PodEndpoints(
            pod=pod,
            model=model,
            topic=self.topic.decode(),
            pub=f"tcp://{host}:{pub_port}",
            replay=f"tcp://{host}:{replay_port}",
        )

    def close(self) -> None:
        self.pub.close(0)
        self.router.close(0)


class KvEventPublisher:
    """A `FleetSink` publishing the twin's KV events per pod, vLLM-style (see module doc)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        encoding: str = ENCODING_MAP,
        buffer_steps: int = 10_000,
        data_parallel_rank: int = 0,
        max_pods: int = 1024,
    ) -> None:
        if encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {encoding!r}; expected {ENCODINGS}")
        self.encoding = encoding
        self._host = host
        self._buffer_steps = buffer_steps
        self._dp_rank = data_parallel_rank
        self._max_pods = max_pods
        self._ctx: zmq.Context[Any] = zmq.Context()
        self._lock = threading.Lock()
        self._pods: dict[str, _PodPublisher] = {}
        self._closing: list[_PodPublisher] = []
        self._stop = threading.Event()
        self.published_batches = 0
        self.replays_served = 0
        self._thread = threading.Thread(target=self._serve_replay, name="twin-kv-replay", daemon=True)
        self._thread.start()

    # -- endpoints ------------------------------------------------------------------------------
    def ensure_pod(self, pod: str, model: str) -> PodEndpoints:
        """Create (or return) the pod's sockets, so subscribers can connect before events."""
        with self._lock:
            pp = self._pods.get(pod)
            if pp is None:
                if len(self._pods) >= self._max_pods:
                    raise RuntimeError(f"more than {self._max_pods} pods publishing KV events")
                pp = self._pods[pod] = _PodPublisher(self._ctx, self._host, pod, model, self._buffer_steps)
            return pp.endpoints

    def endpoints(self) -> dict[str, PodEndpoints]:
        with self._lock:
            return {name: pp.endpoints for name, pp in self._pods.items()}

    # -- FleetSink ----------------------------------------------------------------------------
    def kv_events(self, events: tuple[KvEvent, ...]) -> None:
        by_pod: dict[str, list[KvEvent]] = {}
        for e in events:
            by_pod.setdefault(e.pod, []).append(e)
        for pod, evs in by_pod.items():
            self.publish(pod, evs[0].model, max(e.time for e in evs), evs)

    def publish(self, pod: str, model: str, ts: float, events: Iterable[KvEvent]) -> int:
        """Publish one batch for `pod`; returns its sequence number."""
        self.ensure_pod(pod, model)
        payload = encode_batch(ts, events, self.encoding, self._dp_rank)
        with self._lock:
            pp = self._pods[pod]
            seq = pp.seq
            pp.seq += 1
            pp.buffer.append((seq, payload))
        pp.pub.send_multipart((pp.topic, seq.to_bytes(8, "big"), payload))
        self.published_batches += 1
        return seq

    def pods_sampled(self, now: float, pods: tuple[PodSnapshot, ...]) -> None:
        present = {p.pod for p in pods}
        for p in pods:
            self.ensure_pod(p.pod, p.model)
        with self._lock:  # scaled-down pods stop publishing; their sockets close
            for gone in [name for name in self._pods if name not in present]:
                self._closing.append(self._pods.pop(gone))

    def request_arrived(self, arrival: ArrivedRequest) -> None:
        return None

    def request_completed(self, request: CompletedRequest) -> None:
        return None

    def fleet_event(self, event: FleetEvent) -> None:
        return None

    # -- replay ---------------------------------------------------------------------------------
    def _serve_replay(self) -> None:
        poller = zmq.Poller()
        registered: dict[zmq.Socket[Any], _PodPublisher] = {}
        while not self._stop.is_set():
            with self._lock:
                current = {pp.router: pp for pp in self._pods.values()}
                closing, self._closing = self._closing, []
            for sock in [s for s in registered if s not in current]:
                poller.unregister(sock)
                del registered[sock]
            for pp in closing:
                pp.close()
            for sock, pp in current.items():
                if sock not in registered:
                    poller.register(sock, zmq.POLLIN)
                    registered[sock] = pp
            if not registered:
                self._stop.wait(0.02)
                continue
            for sock, _ in poller.poll(timeout=20):
                self._answer(sock, registered[sock])
        for sock in registered:
            poller.unregister(sock)

    def _answer(self, sock: zmq.Socket[Any], pp: _PodPublisher) -> None:
        frames = sock.recv_multipart()
        if len(frames) != 3:  # [identity, b"", start_seq]
            return
        identity, _, start = frames
        start_seq = int.from_bytes(start, "big")
        with self._lock:
            retained = [(seq, buf) for seq, buf in pp.buffer if seq >= start_seq]
        for seq, buf in retained:
            sock.send_multipart((identity, b"", seq.to_bytes(8, "big"), buf))
        # counted before the end marker goes out: a client that has read the marker sees the count
        # (counted after it, tests/simulator/emit/test_kvevents.py read 0 now and then)
        self.replays_served += 1
        sock.send_multipart((identity, b"", c.KV_REPLAY_END_SEQ, b""))

    def close(self) -> None:
        """Stop the replay thread and close every socket."""
        self._stop.set()
        self._thread.join(timeout=5)
        with self._lock:
            pods = [*self._pods.values(), *self._closing]
            self._pods.clear()
            self._closing = []
        for pp in pods:
            pp.close()
        self._ctx.term()
