"""vLLM KV cache events over ZMQ: per pod, per tier block counts, store/remove and demotion rates.

Wire format (field notes §4): PUB multipart `(topic, seq as 8-byte big-endian, msgpack batch)`,
topic `kv@<pod>@<model>`, batch `[ts, events, data_parallel_rank]` (or a map with `ts`/`events`).
Events are maps with a `"type"` key (vLLM >= ~0.26) or positional arrays `[tag, ...]` (older);
both are accepted. Replay: a DEALER sends `(b"", start_seq)` to the publisher's ROUTER, which
answers `(b"", seq, payload)` per buffered batch and ends with an empty payload.

Memory is bounded: at most `max_blocks_per_pod` block hashes tracked per pod (oldest dropped
first, the pod then reports `truncated=True` and its counts are lower bounds), at most
`max_pods` pods, rate buckets only over `rate_window_seconds`, the consumer's last sequence
number for at most `max_topics` topics, and at most `max_topics_per_publisher` topics per
publisher.

A batch numbered at or below its publisher's last one on a topic is an engine that restarted
(PUB/SUB does not deliver twice; vLLM numbers from 0 in each process): the blocks that publisher
reported for the pod are forgotten (not those of the pod's other data-parallel ranks) and its
batches applied from there.

A publisher is untrusted: the pod and model of a topic go through `clean_value`
(observer/sources/untrusted.py), and a batch that is not the expected shape (a non-list of
events, unhashable or too deeply nested block hashes, a non-number timestamp, a sequence frame
that is not 8 bytes, ...) is one `decode_errors`, never an exception in the consumer thread. A
replay applies each missing number once and reads at most min(gap, `max_replay_batches`) + 1
replies.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import zmq
from zmq.utils.monitor import recv_monitor_message

from observer import conventions as c
from observer.sources.untrusted import Clean, ValueCleaner, clean_value

log = logging.getLogger(__name__)

MEDIA: tuple[str, ...] = (c.KV_MEDIUM_GPU, c.KV_MEDIUM_CPU, c.KV_MEDIUM_STORAGE)  # fastest first
END_SEQ = (-1).to_bytes(8, "big", signed=True)


@dataclass(frozen=True, slots=True)
class KvEventRecord:
    kind: str  # conventions.KV_EVENT_*
    block_hashes: tuple[Hashable, ...] = ()
    medium: str = c.KV_MEDIUM_GPU


@dataclass(frozen=True, slots=True)
class KvBatch:
    ts: float
    events: tuple[KvEventRecord, ...]
    dp_rank: int | None = None


# how deeply a block hash may nest lists (vLLM's are an int, bytes, or a short tuple of them):
# deeper is malformed, not a RecursionError that would end the consumer thread
MAX_HASH_DEPTH = 8
SEQ_BYTES = 8  # the sequence frame: an 8-byte big-endian number
# The largest message read from a publisher (ZMQ's MAXMSGSIZE): a larger one is never held
# whole; ZMQ drops that connection (for good: a connecting socket does not retry after it), so
# the consumer subscribes again. One 128k-token prompt's BlockStored is 0.73 MB (docs/sources.md).
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def _hashable(v: Any, depth: int = 0) -> Hashable:
    if isinstance(v, list):
        if depth >= MAX_HASH_DEPTH:
            raise ValueError(f"a block hash nested deeper than {MAX_HASH_DEPTH}")
        return tuple(_hashable(x, depth + 1) for x in v)
    return v  # type: ignore[no-any-return]


def _medium(v: Any) -> str:
    if isinstance(v, bytes):
        v = v.decode()
    return v if isinstance(v, str) and v in MEDIA else c.KV_MEDIUM_GPU


def decode_event(raw: Any) -> KvEventRecord | None:
    """One event in either encoding; None for an event kind we do not track."""
    if isinstance(raw, Mapping):
        kind = raw.get("type")
        hashes = raw.get("block_hashes") or ()
        medium = raw.get("medium")
    elif isinstance(raw, list | tuple) and raw:
        kind = raw[0]
        if (
            kind == c.KV_EVENT_BLOCK_STORED
        ):  # [tag, hashes, parent, token_ids, block_size, lora_id, medium, ...]
            hashes = raw[1] if len(raw) > 1 else ()
            medium = raw[6] if len(raw) > 6 else None
        elif kind == c.KV_EVENT_BLOCK_REMOVED:  # [tag, hashes, medium]
            hashes = raw[1] if len(raw) > 1 else ()
            medium = raw[2] if len(raw) > 2 else None
        else:
            hashes, medium = (), None
    else:
        return None
    if isinstance(kind, bytes):
        kind = kind.decode()
    if kind not in (c.KV_EVENT_BLOCK_STORED, c.KV_EVENT_BLOCK_REMOVED, c.KV_EVENT_ALL_CLEARED):
        return None
    block_hashes = tuple(_hashable(h) for h in hashes)  # TypeError: not a sequence
    hash(block_hashes)  # TypeError: a hash that cannot key the index (a map)
    return KvEventRecord(str(kind), block_hashes, _medium(medium))


def decode_batch(payload: bytes) -> KvBatch:
    """A msgpack event batch. Raises ValueError when it is not one, whatever the payload holds."""
    try:
        raw = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several types
        raise ValueError(f"not msgpack: {exc}") from exc
    if isinstance(raw, Mapping):
        ts, events, rank = raw.get("ts", 0.0), raw.get("events", ()), raw.get("data_parallel_rank")
    elif isinstance(raw, list | tuple) and len(raw) >= 2:
        ts, events, rank = raw[0], raw[1], (raw[2] if len(raw) > 2 else None)
    else:
        raise ValueError("batch is neither [ts, events, rank] nor a map")
    try:
        decoded = tuple(e for e in (decode_event(x) for x in events or ()) if e is not None)
        return KvBatch(float(ts or 0.0), decoded, int(rank) if isinstance(rank, int) else None)
    except (TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise ValueError(f"malformed batch: {type(exc).__name__}") from exc


def parse_topic(topic: bytes, clean: Clean = clean_value) -> tuple[str, str] | None:
    """`kv@<pod>@<model>` -> (pod, model), both through `clean`; the model may itself contain `@`."""
    text = topic.decode(errors="replace")
    if not text.startswith(c.KV_TOPIC_PREFIX):
        return None
    pod, _, model = text[len(c.KV_TOPIC_PREFIX) :].partition(c.KV_TOPIC_SEPARATOR)
    return (clean(pod), clean(model)) if pod else None


@dataclass(frozen=True, slots=True)
class PodKvSample:
    """One pod's tier residency from KV events. Tiers are conventions.TIER_* names."""

    pod: str
    model: str
    time: float
    blocks_by_tier: Mapping[str, int]
    store_rate_by_tier: Mapping[str, float]  # blocks/s
    remove_rate_by_tier: Mapping[str, float]  # blocks/s
    demotion_rate_by_tier: Mapping[str, float]  # blocks/s moved down out of the tier
    last_event_time: float | None
    gaps: int  # batches lost (not recovered by replay)
    replayed: int  # batches recovered by replay
    truncated: bool  # the block cap was hit: counts are lower bounds


@dataclass(frozen=True, slots=True)
class KvSnapshot:
    source: str
    time: float
    pods: tuple[PodKvSample, ...]

    def pod(self, name: str) -> PodKvSample | None:
        return next((p for p in self.pods if p.pod == name), None)


@dataclass
class _Cache:
    """One engine's blocks (a data-parallel rank has a cache of its own)."""

    tiers: dict[str, OrderedDict[Hashable, None]] = field(
        default_factory=lambda: {m: OrderedDict() for m in MEDIA}
    )
    recently_removed: OrderedDict[Hashable, str] = field(default_factory=OrderedDict)


@dataclass
class _PodState:
    model: str
    caches: dict[Hashable, _Cache] = field(default_factory=dict)  # by part (publisher)
    buckets: deque[tuple[float, dict[str, int]]] = field(default_factory=deque)
    last_event_time: float | None = None
    gaps: int = 0
    replayed: int = 0
    truncated: bool = False


class KvTierIndex:
    """Block residency per pod and tier, fed with decoded batches. Thread-safe, bounded.

    A pod's blocks are kept per part: the engine that reported them (the consumer passes the
    publisher's endpoint; the data-parallel ranks of one pod each publish from their own). A pod's
    counts are the sum over its parts, and `forget(pod, part)` drops one engine's blocks (it
    restarted, or its publisher is gone) and keeps the others'.
    """

    def __init__(
        self,
        max_blocks_per_pod: int = 200_000,
        max_pods: int = 1024,
        rate_window_seconds: float = 60.0,
        bucket_seconds: float = 5.0,
    ) -> None:
        self.max_blocks_per_pod = max_blocks_per_pod
        self.max_pods = max_pods
        self.rate_window_seconds = rate_window_seconds
        self.bucket_seconds = bucket_seconds
        self.dropped_pods = 0
        self._pods: dict[str, _PodState] = {}
        self._lock = threading.Lock()

    def _state(self, pod: str, model: str) -> _PodState | None:
        st = self._pods.get(pod)
        if st is None:
            if len(self._pods) >= self.max_pods:
                self.dropped_pods += 1
                return None
            st = self._pods[pod] = _PodState(model)
        return st

    def _count(self, st: _PodState, key: str, n: int, at: float) -> None:
        start = at - at % self.bucket_seconds
        if not st.buckets or st.buckets[-1][0] != start:
            st.buckets.append((start, {}))
        b = st.buckets[-1][1]
        b[key] = b.get(key, 0) + n
        horizon = at - self.rate_window_seconds - self.bucket_seconds
        while st.buckets and st.buckets[0][0] < horizon:
            st.buckets.popleft()

    def _total(self, st: _PodState) -> int:
        return sum(len(t) for cache in st.caches.values() for t in cache.tiers.values())

    def apply(self, pod: str, model: str, batch: KvBatch, received_at: float, part: Hashable = None) -> None:
        with self._lock:
            st = self._state(pod, model)
            if st is None:
                return
            st.last_event_time = received_at
            cache = st.caches.get(part) or st.caches.setdefault(part, _Cache())
            for ev in batch.events:
                self._apply_event(st, cache, ev, received_at)

    def _apply_event(self, st: _PodState, cache: _Cache, ev: KvEventRecord, at: float) -> None:
        tier = cache.tiers[ev.medium]
        rank = MEDIA.index(ev.medium)
        if ev.kind == c.KV_EVENT_ALL_CLEARED:
            n = len(tier)
            tier.clear()
            self._count(st, "removed:" + ev.medium, n, at)
            return
        for h in ev.block_hashes:
            if ev.kind == c.KV_EVENT_BLOCK_STORED:
                if h in tier:
                    tier.move_to_end(h)
                    continue
                tier[h] = None
                self._count(st, "stored:" + ev.medium, 1, at)
                came_from = cache.recently_removed.pop(h, None)
                if came_from is not None and MEDIA.index(came_from) < rank:
                    self._count(st, "demoted:" + came_from, 1, at)
                self._enforce_cap(st)
            else:  # removed
                if h not in tier:
                    continue
                del tier[h]
                self._count(st, "removed:" + ev.medium, 1, at)
                if any(h in cache.tiers[m] for m in MEDIA[rank + 1 :]):
                    self._count(st, "demoted:" + ev.medium, 1, at)
                else:
                    cache.recently_removed[h] = ev.medium
                    while len(cache.recently_removed) > max(1, self.max_blocks_per_pod // 4):
                        cache.recently_removed.popitem(last=False)

    def _enforce_cap(self, st: _PodState) -> None:
        while self._total(st) > self.max_blocks_per_pod:
            biggest = max((t for cache in st.caches.values() for t in cache.tiers.values()), key=len)
            biggest.popitem(last=False)
            st.truncated = True

    def record_gap(self, pod: str, model: str, lost: int, replayed: int) -> None:
        with self._lock:
            st = self._state(pod, model)
            if st is not None:
                st.gaps += lost
                st.replayed += replayed

    def forget(self, pod: str, part: Hashable = None) -> None:
        """Drop the blocks `part` reported for `pod`; the pod goes (counters, rates and its
        `max_pods` slot) with its last part."""
        with self._lock:
            st = self._pods.get(pod)
            if st is None:
                return
            st.caches.pop(part, None)
            if not st.caches:
                del self._pods[pod]

    def snapshot(self, now: float) -> KvSnapshot:
        with self._lock:
            pods = []
            for name, st in sorted(self._pods.items()):
                since = now - self.rate_window_seconds
                sums: dict[str, int] = {}
                for start, b in st.buckets:
                    if start + self.bucket_seconds > since and start <= now:
                        for k, v in b.items():
                            sums[k] = sums.get(k, 0) + v
                w = self.rate_window_seconds

                def rates(prefix: str, sums: dict[str, int] = sums, w: float = w) -> dict[str, float]:
                    return {c.KV_MEDIUM_TO_TIER[m]: sums.get(f"{prefix}:{m}", 0) / w for m in MEDIA}

                pods.append(
                    PodKvSample(
                        pod=name,
                        model=st.model,
                        time=now,
                        blocks_by_tier={
                            c.KV_MEDIUM_TO_TIER[m]: sum(len(cache.tiers[m]) for cache in st.caches.values())
                            for m in MEDIA
                        },
                        store_rate_by_tier=rates("stored"),
                        remove_rate_by_tier=rates("removed"),
                        demotion_rate_by_tier=rates("demoted"),
                        last_event_time=st.last_event_time,
                        gaps=st.gaps,
                        replayed=st.replayed,
                        truncated=st.truncated,
                    )
                )
            return KvSnapshot(c.SOURCE_KV_EVENTS, now, tuple(pods))


@dataclass(frozen=True, slots=True)
class KvPublisher:
    """One vLLM publisher: its PUB endpoint and optional ROUTER replay endpoint."""

    endpoint: str
    replay_endpoint: str | None = None


class KvEventsConsumer:
    """Subscribes to publishers in its own thread; `stop()` ends it cleanly.

    Publishers may also come and go while it runs (pods scaled up/down): `add_publisher` /
    `remove_publisher` are thread-safe and take effect within one poll (`poll_ms`); at most
    `max_publishers` are subscribed at once (further ones are refused and counted).
    Sequence numbers are kept per publisher and topic (pod, model as cleaned), at most
    `max_topics` of them (the oldest forgotten first: its next batch is taken as a first one, no
    gap counted): the data-parallel ranks of one vLLM pod publish the same topic from their own
    endpoints, each numbering from 0. `last_seq` is the view by (pod, model).
    One publisher (one vLLM engine) reports at most `max_topics_per_publisher` distinct topics:
    a batch on a further one is dropped and counted in `refused_topics`, so that a misconfigured
    or hostile publisher cannot take the index's `max_pods` slots from the rest of the fleet.
    """

    def __init__(
        self,
        publishers: Sequence[KvPublisher],
        index: KvTierIndex,
        *,
        clock: Callable[[], float] = time.time,
        poll_ms: int = 50,
        replay_timeout_ms: int = 500,
        topic_prefix: str = c.KV_TOPIC_PREFIX,
        max_publishers: int = 1024,
        max_topics: int = 4096,
        max_topics_per_publisher: int = 8,
        max_replay_batches: int = 10_000,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.publishers = tuple(publishers)
        self.max_message_bytes = max_message_bytes
        self.reconnects = 0  # subscriptions made again after their connection closed
        self.max_topics = max_topics
        self.max_topics_per_publisher = max_topics_per_publisher
        self.max_replay_batches = max_replay_batches
        self.refused_topics = 0
        self.restarts = 0  # topics whose sequence started again (the publisher restarted)
        self._topics_of: dict[KvPublisher, set[tuple[str, str]]] = {}  # the consumer thread's
        self.cleaner = ValueCleaner(c.SOURCE_KV_EVENTS)  # pods and models of the topics
        self.max_publishers = max_publishers
        self.refused_publishers = 0
        self._changes: deque[tuple[bool, KvPublisher]] = deque()
        self._changes_lock = threading.Lock()
        self.index = index
        self._clock = clock
        self._poll_ms = poll_ms
        self._replay_timeout_ms = replay_timeout_ms
        self._prefix = topic_prefix.encode()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        # (publisher, pod, model) -> last sequence number; the consumer thread's
        self._seq: dict[tuple[KvPublisher, str, str], int] = {}
        self.decode_errors = 0

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._run, name="kv-events", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=5)

    def add_publisher(self, publisher: KvPublisher) -> bool:
        """Subscribe to one more publisher (no-op when already subscribed). False when refused
        (`max_publishers` reached)."""
        with self._changes_lock:
            if publisher in self.publishers:
                return True
            if len(self.publishers) >= self.max_publishers:
                self.refused_publishers += 1
                return False
            self.publishers = (*self.publishers, publisher)
            self._changes.append((True, publisher))
            return True

    def sync(self, publishers: Iterable[KvPublisher]) -> None:
        """Subscribe to exactly `publishers` (the fleet as discovered now): the new ones are
        added (within `max_publishers`), the ones missing removed."""
        want = tuple(dict.fromkeys(publishers))
        for pub in [p for p in self.publishers if p not in want]:
            self.remove_publisher(pub)
        for pub in want:
            if pub not in self.publishers:
                self.add_publisher(pub)

    def remove_publisher(self, publisher: KvPublisher) -> None:
        """Unsubscribe from a publisher (its pod is gone). The pods of its topics are forgotten:
        sequence and index (a new pod reusing the name starts afresh), unless another publisher
        still reports them."""
        with self._changes_lock:
            if publisher not in self.publishers:
                return
            self.publishers = tuple(p for p in self.publishers if p != publisher)
            self._changes.append((False, publisher))

    def dropped(self) -> dict[str, int]:
        """Batches not applied so far, by reason (`conventions.KV_DROP_REASONS`)."""
        return {
            c.KV_DROP_MALFORMED: self.decode_errors,
            c.KV_DROP_TOPIC_LIMIT: self.refused_topics,
            c.KV_DROP_POD_LIMIT: self.index.dropped_pods,
        }

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        ctx = zmq.Context()
        subs: dict[zmq.Socket[bytes], KvPublisher] = {}
        monitors: dict[zmq.Socket[bytes], zmq.Socket[bytes]] = {}  # SUB socket <-> its monitor, both ways
        poller = zmq.Poller()

        def subscribe(pub: KvPublisher) -> None:
            s: zmq.Socket[bytes] = ctx.socket(zmq.SUB)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.RCVHWM, 10_000)
            s.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
            s.setsockopt(zmq.SUBSCRIBE, self._prefix)
            mon = s.get_monitor_socket(zmq.EVENT_DISCONNECTED)
            s.connect(pub.endpoint)
            subs[s] = pub
            monitors[s], monitors[mon] = mon, s
            poller.register(s, zmq.POLLIN)
            poller.register(mon, zmq.POLLIN)

        def close(s: zmq.Socket[bytes]) -> None:
            mon = monitors.pop(s)
            del monitors[mon], subs[s]
            for sock in (s, mon):
                poller.unregister(sock)
            s.disable_monitor()
            mon.close(linger=0)
            s.close(linger=0)

        try:
            with self._changes_lock:
                initial = self.publishers
                self._changes.clear()
            for pub in initial:
                subscribe(pub)
            self._ready.set()
            while not self._stop.is_set():
                with self._changes_lock:
                    changes = list(self._changes)
                    self._changes.clear()
                for added, pub in changes:
                    if added:
                        subscribe(pub)
                        continue
                    self._forget_topics(pub, self._topics_of.pop(pub, set()))
                    for sock in [k for k, v in subs.items() if v == pub]:
                        close(sock)
                for sock, _ in poller.poll(self._poll_ms):
                    if sock in subs:
                        self._on_message(ctx, subs[sock], sock.recv_multipart())
                    elif sock in monitors and recv_monitor_message(sock)["event"] == zmq.EVENT_DISCONNECTED:
                        # the publisher went away (it restarts: ZMQ would retry) or sent a
                        # message past max_message_bytes (ZMQ would not): subscribe again
                        sub = monitors[sock]
                        pub = subs[sub]
                        close(sub)
                        subscribe(pub)
                        self.reconnects += 1
        finally:
            self._ready.set()
            for s in list(subs):
                close(s)
            ctx.term()

    @property
    def last_seq(self) -> dict[tuple[str, str], int]:
        """(pod, model) -> the last sequence number read on that topic (from any of its
        publishers)."""
        return {(pod, model): seq for (_, pod, model), seq in list(self._seq.items())}

    def _forget_topics(self, pub: KvPublisher, topics: set[tuple[str, str]]) -> None:
        for pod, model in topics:  # the pod goes from the index with its last publisher
            self._seq.pop((pub, pod, model), None)
            self.index.forget(pod, pub)

    def _on_message(self, ctx: zmq.Context[Any], pub: KvPublisher, frames: list[bytes]) -> None:
        if len(frames) != 3:
            self.decode_errors += 1
            return
        topic, seq_bytes, payload = frames
        who = parse_topic(topic, self.cleaner)
        if who is None:
            return
        topics = self._topics_of.setdefault(pub, set())
        if who not in topics:
            if len(topics) >= self.max_topics_per_publisher:
                self.refused_topics += 1
                return
            topics.add(who)
        pod, model = who
        if len(seq_bytes) != SEQ_BYTES:  # a longer one overflowed the replay request (thread ended)
            self.decode_errors += 1
            return
        seq = int.from_bytes(seq_bytes, "big")
        key = (pub, pod, model)
        last = self._seq.get(key)
        if last is not None and seq <= last:
            # PUB/SUB never delivers a batch twice (replays are applied apart): the engine
            # restarted and numbers from 0 again, with an empty cache. Its old blocks go (not
            # those of the pod's other data-parallel ranks).
            self.restarts += 1
            self.index.forget(pod, pub)
            last = None
        if last is not None and seq > last + 1:
            missed = seq - last - 1
            recovered = self._replay(ctx, pub, (pod, model), last + 1, seq) if pub.replay_endpoint else 0
            self.index.record_gap(pod, model, missed - recovered, recovered)
        self._apply(pub, pod, model, payload)
        self._seq[key] = seq
        if len(self._seq) > self.max_topics:
            del self._seq[next(iter(self._seq))]

    def _apply(self, pub: KvPublisher, pod: str, model: str, payload: bytes) -> None:
        try:
            batch = decode_batch(payload)
        except ValueError:
            self.decode_errors += 1
            return
        self.index.apply(pod, model, batch, self._clock(), part=pub)

    def _replay(
        self, ctx: zmq.Context[Any], pub: KvPublisher, who: tuple[str, str], start: int, until: int
    ) -> int:
        """Ask the publisher's ROUTER for batches [start, until); returns how many were applied.

        Each number is applied once, and the answer is read only until the gap is filled, a
        batch at or past `until` arrives (the publisher answers in order), or
        min(until - start, `max_replay_batches`) + 1 frames came (vLLM buffers 10 000 batches):
        a publisher repeating or streaming batches cannot hold the consumer thread, nor count
        one lost batch as recovered twice."""
        pod, model = who
        s: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        applied: set[int] = set()
        budget = min(until - start, self.max_replay_batches) + 1
        try:
            s.connect(pub.replay_endpoint or "")
            s.send_multipart((b"", start.to_bytes(SEQ_BYTES, "big")))
            while budget > 0 and len(applied) < until - start and s.poll(self._replay_timeout_ms):
                budget -= 1
                frames = s.recv_multipart()
                if len(frames) != 3:
                    break
                _, seq_bytes, payload = frames
                if not payload or seq_bytes == END_SEQ:
                    break
                rseq = int.from_bytes(seq_bytes, "big")
                if rseq >= until:
                    break
                if start <= rseq and rseq not in applied:
                    self._apply(pub, pod, model, payload)
                    applied.add(rseq)
        except zmq.ZMQError as exc:
            log.warning("kv events replay from %s failed: %s", pub.replay_endpoint, exc)
        finally:
            s.close(linger=0)
        return len(applied)
