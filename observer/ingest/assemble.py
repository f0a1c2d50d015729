"""P/D stitching (DESIGN §4): engine spans -> one `RequestRecord` per served request.

`TraceAssembler` holds prefill/decode halves waiting for their partner, bounded in count and
time. Time is passed in (`now`); it never reads a clock and does no I/O. Every change to the
pending set is reported (`pending_added` / `pending_released`) so the caller can persist it in
the same transaction as the records and `restore()` it after a crash. Rules and phase math are
in docs/ingest.md.
"""

from __future__ import annotations

import operator
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from itertools import repeat
from types import MemberDescriptorType
from typing import Any

from observer import conventions as c
from observer.ingest.resolve import merge_hints
from observer.model import EngineSpan, RequestRecord, TierTokens, TraceHints

__all__ = ["AssembleResult", "TraceAssembler", "record_key"]

_PREFILL = c.ROLE_PREFILL
_DECODE = c.ROLE_DECODE
_UNKNOWN_MODEL = c.UNKNOWN_MODEL
_UNKNOWN_TENANT = c.UNKNOWN_TENANT
_NO_ROLES: frozenset[str] = frozenset()
_PREFILL_ROLE = frozenset((_PREFILL,))
_DECODE_ROLE = frozenset((_DECODE,))


def record_key(record: RequestRecord) -> str:
    """Deterministic dedupe key for the store: `<trace id>/<request id>`."""
    return f"{record.trace_id}/{record.request_id}"


@dataclass(frozen=True, slots=True)
class AssembleResult:
    records: tuple[RequestRecord, ...] = ()
    pending_added: tuple[EngineSpan, ...] = ()  # now pending: persist
    pending_released: tuple[str, ...] = ()  # span ids no longer pending: delete
    incomplete: int = 0  # records emitted with complete=False
    duplicates: int = 0  # engine spans seen before (same span id), dropped
    late: int = 0  # halves whose partner had already been flushed incomplete, dropped
    superseded: int = 0  # extra prefill attempts of an already stitched request, dropped


class _Trace:
    """A trace with halves waiting for their partner."""

    __slots__ = ("deadline", "decode", "hints", "prefill", "stitched_until")

    def __init__(
        self,
        deadline: float,
        hints: TraceHints | None,
        prefill: list[EngineSpan] | None = None,
        decode: list[EngineSpan] | None = None,
    ) -> None:
        self.deadline = deadline
        self.hints = hints
        self.prefill: list[EngineSpan] = [] if prefill is None else prefill
        self.decode: list[EngineSpan] = [] if decode is None else decode
        self.stitched_until: float | None = None  # latest decode start of a record stitched for this trace

    def empty(self) -> bool:
        return not self.prefill and not self.decode


class _Done:
    """What we remember about a trace that left the pending set."""

    __slots__ = ("flushed_roles", "stitched_until")

    def __init__(self, stitched_until: float | None = None) -> None:
        self.flushed_roles: frozenset[str] = _NO_ROLES  # replaced (never mutated) when a half is flushed
        self.stitched_until = stitched_until  # latest decode start stitched for the trace


class _Call:
    """Accumulates the outcome of one add/expire/restore call."""

    def __init__(self) -> None:
        self.records: list[RequestRecord] = []
        self.added: dict[str, EngineSpan] = {}
        self.released: list[str] = []
        self.incomplete = 0
        self.duplicates = 0
        self.late = 0
        self.superseded = 0

    def pend(self, span: EngineSpan) -> None:
        self.added[span.span_id] = span

    def release(self, span: EngineSpan) -> None:
        if self.added.pop(span.span_id, None) is None:
            self.released.append(span.span_id)

    def emit(self, record: RequestRecord) -> None:
        self.records.append(record)
        if not record.complete:
            self.incomplete += 1

    def result(self) -> AssembleResult:
        return AssembleResult(
            records=tuple(self.records),
            pending_added=tuple(self.added.values()),
            pending_released=tuple(self.released),
            incomplete=self.incomplete,
            duplicates=self.duplicates,
            late=self.late,
            superseded=self.superseded,
        )


_RECORD_FIELDS = (
    "request_id",
    "trace_id",
    "tenant",
    "model",
    "start_time",
    "end_time",
    "prompt_tokens",
    "output_tokens",
    "cached",
    "ttft",
    "itl",
    "e2e",
    "queue",
    "prefill",
    "kv_transfer",
    "decode",
    "error",
    "disaggregated",
    "prefill_pod",
    "decode_pod",
    "complete",
)
_RecordValues = tuple[
    str, str, str, str, float, float, int, int, TierTokens,
    float | None, float | None, float | None, float | None, float | None, float | None,
    float | None, bool, bool, str | None, str | None, bool,
]  # fmt: skip


def _record_builder() -> Callable[[_RecordValues], RequestRecord]:
    """`RequestRecord` from its values in `_RECORD_FIELDS` order, at a fraction of the frozen
    dataclass __init__ cost (one `object.__setattr__` per field, 21 fields, per record).

    The fast builder sets the slots directly through their descriptors, all in C; it is used only
    while RequestRecord is a slots dataclass with exactly these fields and no __post_init__, and
    yields an instance equal to ``RequestRecord(**fields)`` (tests/observer/ingest/test_assemble*).
    Otherwise the plain constructor is used."""
    names = tuple(f.name for f in fields(RequestRecord))
    descriptors = [RequestRecord.__dict__.get(n) for n in names]
    if (
        names != _RECORD_FIELDS
        or hasattr(RequestRecord, "__post_init__")
        or not all(isinstance(d, MemberDescriptorType) for d in descriptors)
    ):

        def plain(values: _RecordValues) -> RequestRecord:
            named: dict[str, Any] = dict(zip(_RECORD_FIELDS, values, strict=True))
            return RequestRecord(**named)

        return plain
    setters = tuple(d.__set__ for d in descriptors)  # type: ignore[union-attr]
    new = object.__new__
    call = operator.call
    drain = deque[None](maxlen=0).extend

    def fast(values: _RecordValues) -> RequestRecord:
        record: RequestRecord = new(RequestRecord)
        drain(map(call, setters, repeat(record), values))
        return record

    return fast


_build = _record_builder()


def single_record(
    span: EngineSpan, hints: TraceHints | None, *, complete: bool = True, disaggregated: bool = False
) -> RequestRecord:
    """A request served by one engine (aggregated, decode-only, or an unpaired half)."""
    model = span.model
    if model == _UNKNOWN_MODEL:
        model = (hints.model if hints is not None else None) or _UNKNOWN_MODEL
    pod = span.pod
    if span.role == _PREFILL:
        # an unpaired prefill half ran with max_tokens=1: its output is not the request's
        return _build((
            span.request_id, span.trace_id,
            span.tenant or (hints.tenant if hints is not None else None) or _UNKNOWN_TENANT, model,
            span.start_time, span.end_time, span.prompt_tokens, 0, span.cached,
            None, None, None, span.queue, span.prefill, None, None,
            span.error, disaggregated, pod, None, complete,
        ))  # fmt: skip
    out = span.output_tokens
    dec = span.decode
    e2e = span.e2e
    return _build((
        span.request_id, span.trace_id,
        span.tenant or (hints.tenant if hints is not None else None) or _UNKNOWN_TENANT, model,
        span.start_time, span.end_time, span.prompt_tokens, out, span.cached,
        span.ttft, None if dec is None or out <= 1 else dec / (out - 1),
        e2e if e2e is not None else span.end_time - span.start_time,
        span.queue, span.prefill, None, dec,
        span.error, disaggregated, None if disaggregated and span.role == _DECODE else pod, pod, complete,
    ))  # fmt: skip


def pair_record(prefill: EngineSpan, decode: EngineSpan, hints: TraceHints | None) -> RequestRecord:
    """One P/D request: tokens in from the prefill side, tokens out from the decode side."""
    ttft = decode.ttft
    model = decode.model
    if model == _UNKNOWN_MODEL:
        model = prefill.model
        if model == _UNKNOWN_MODEL:
            model = (hints.model if hints is not None else None) or _UNKNOWN_MODEL
    out = decode.output_tokens
    dec = decode.decode
    pq = prefill.queue
    dq = decode.queue
    gap = decode.start_time - prefill.end_time
    return _build((
        decode.request_id, decode.trace_id,
        prefill.tenant or decode.tenant or (hints.tenant if hints is not None else None) or _UNKNOWN_TENANT,
        model, prefill.start_time, decode.end_time, prefill.prompt_tokens, out, prefill.cached,
        None if ttft is None else decode.start_time + ttft - prefill.start_time,
        None if dec is None or out <= 1 else dec / (out - 1),
        decode.end_time - prefill.start_time,
        dq if pq is None else (pq if dq is None else pq + dq),
        prefill.prefill,
        (gap if gap > 0.0 else 0.0) + (decode.prefill or 0.0),
        dec, prefill.error or decode.error, True, prefill.pod, decode.pod, True,
    ))  # fmt: skip


def _match_score(prefill: EngineSpan, decode: EngineSpan) -> tuple[int, int, float]:
    """Lower is better: same request id, then no error, then the smallest hand-over gap."""
    return (
        0 if prefill.request_id == decode.request_id else 1,
        int(prefill.error) + int(decode.error),
        abs(decode.start_time - prefill.end_time),
    )


class TraceAssembler:
    """Stitches P/D halves by trace id. Bounded: `max_pending` traces, `remember` span/trace ids."""

    def __init__(self, max_pending: int, timeout_seconds: float, remember: int = 100_000) -> None:
        if max_pending <= 0 or timeout_seconds <= 0 or remember <= 0:
            raise ValueError("max_pending, timeout_seconds and remember must be positive")
        self._max_pending = max_pending
        self._timeout = timeout_seconds
        self._remember = remember
        self._pending: OrderedDict[str, _Trace] = OrderedDict()  # oldest first
        self._seen: set[str] = set()  # span ids (dedupe) ...
        self._seen_order: deque[str] = deque()  # ... oldest first
        # traces that left pending; a bare float is a `_Done` with only `stitched_until` (hot path)
        self._done: OrderedDict[str, _Done | float] = OrderedDict()

    @property
    def pending_count(self) -> int:
        """Traces waiting for a partner."""
        return len(self._pending)

    def pending_spans(self) -> tuple[EngineSpan, ...]:
        """Every pending half (what a store should hold)."""
        return tuple(s for t in self._pending.values() for s in (*t.prefill, *t.decode))

    # -- public entry points -----------------------------------------------------------------

    def add(
        self, engine: Sequence[EngineSpan], hints: Mapping[str, TraceHints], now: float
    ) -> AssembleResult:
        """Take one resolved batch; emit every request that is complete now.

        Hot path: the common cases (a single-engine span, the first half of a new trace, the
        partner of a half with exactly one candidate) are inlined here; every other case goes
        through `_place`, the general rules. Both give the same result (tests compare them)."""
        call = _Call()
        pending = self._pending
        if pending:
            for trace_id, batch_hint in hints.items():
                tr = pending.get(trace_id)
                if tr is not None:
                    tr.hints = merge_hints(tr.hints, batch_hint)
                    if tr.hints.disaggregated is False and tr.decode:
                        self._release_local_decodes(trace_id, tr, call)
        seen = self._seen
        seen_order = self._seen_order
        remember = self._remember
        done_map = self._done
        done_get = done_map.get
        get_hint = hints.get
        emit = call.records.append
        added = call.added
        released = call.released
        max_pending = self._max_pending
        deadline = now + self._timeout
        build = _build
        hint: TraceHints | None
        for span in engine:
            sid = span.span_id
            if sid in seen:
                call.duplicates += 1
                continue
            seen.add(sid)
            seen_order.append(sid)
            if len(seen_order) > remember:
                seen.remove(seen_order.popleft())
            trace_id = span.trace_id
            hint = get_hint(trace_id)
            role = span.role
            tr = pending.get(trace_id)
            if role is None:  # aggregated serving: one span, one record (single_record, inlined)
                if tr is not None and tr.hints is not None:
                    hint = tr.hints if hint is None else merge_hints(tr.hints, hint)
                model = span.model
                if model == _UNKNOWN_MODEL:
                    model = (hint.model if hint is not None else None) or _UNKNOWN_MODEL
                out = span.output_tokens
                dec = span.decode
                e2e = span.e2e
                pod = span.pod
                emit(build((
                    span.request_id, trace_id,
                    span.tenant or (hint.tenant if hint is not None else None) or _UNKNOWN_TENANT, model,
                    span.start_time, span.end_time, span.prompt_tokens, out, span.cached,
                    span.ttft, None if dec is None or out <= 1 else dec / (out - 1),
                    e2e if e2e is not None else span.end_time - span.start_time,
                    span.queue, span.prefill, None, dec, span.error, False, pod, pod, True,
                )))  # fmt: skip
                continue
            is_prefill = role == _PREFILL
            if tr is None:
                if done_get(trace_id) is not None:
                    self._place(span, hint, now, call)  # late, superseded or a retry: general rules
                    continue
                if not is_prefill and hint is not None and hint.disaggregated is False:
                    emit(single_record(span, hint))  # decode-only: the decode pod prefilled locally
                    continue
                while len(pending) >= max_pending:
                    self._flush(next(iter(pending)), call)
                if is_prefill:
                    pending[trace_id] = _Trace(deadline, hint, [span], [])
                else:
                    pending[trace_id] = _Trace(deadline, hint, [], [span])
                added[sid] = span
                continue
            candidates = tr.decode if is_prefill else tr.prefill
            if len(candidates) != 1:
                self._place(span, hint, now, call)
                continue
            best = candidates.pop()
            if hint is not None and hint is not tr.hints:  # merging hints with itself is a no-op
                tr.hints = merge_hints(tr.hints, hint)
            hint = tr.hints
            if added.pop(best.span_id, None) is None:
                released.append(best.span_id)
            if is_prefill:
                pre, dec_span = span, best
            else:
                pre, dec_span = best, span
            # pair_record, inlined
            start = dec_span.start_time
            ttft = dec_span.ttft
            model = dec_span.model
            if model == _UNKNOWN_MODEL:
                model = pre.model
                if model == _UNKNOWN_MODEL:
                    model = (hint.model if hint is not None else None) or _UNKNOWN_MODEL
            out = dec_span.output_tokens
            dec = dec_span.decode
            pq = pre.queue
            dq = dec_span.queue
            gap = start - pre.end_time
            emit(build((
                dec_span.request_id, trace_id,
                pre.tenant or dec_span.tenant
                or (hint.tenant if hint is not None else None) or _UNKNOWN_TENANT,
                model, pre.start_time, dec_span.end_time, pre.prompt_tokens, out, pre.cached,
                None if ttft is None else start + ttft - pre.start_time,
                None if dec is None or out <= 1 else dec / (out - 1),
                dec_span.end_time - pre.start_time,
                dq if pq is None else (pq if dq is None else pq + dq),
                pre.prefill,
                (gap if gap > 0.0 else 0.0) + (dec_span.prefill or 0.0),
                dec, pre.error or dec_span.error, True, pre.pod, dec_span.pod, True,
            )))  # fmt: skip
            stitched = tr.stitched_until
            tr.stitched_until = stitched = max(stitched or start, start)
            if not tr.prefill and not tr.decode:  # _retire, inlined
                del pending[trace_id]
                done = done_get(trace_id)
                if done is None:
                    done_map[trace_id] = stitched
                    if len(done_map) > remember:
                        done_map.popitem(last=False)
                elif isinstance(done, _Done):
                    done.stitched_until = max(done.stitched_until or stitched, stitched)
                else:
                    done_map[trace_id] = max(done or stitched, stitched)
        return call.result()

    def expire(self, now: float) -> AssembleResult:
        """Flush traces whose partner did not come within the timeout (as incomplete records).

        Assumes `now` does not go backwards between calls (deadlines are checked oldest first)."""
        call = _Call()
        while self._pending:
            trace_id, tr = next(iter(self._pending.items()))
            if tr.deadline > now:
                break
            self._flush(trace_id, call)
        return call.result()

    def restore(self, pending: Sequence[EngineSpan], now: float) -> AssembleResult:
        """Reload persisted halves after a restart; their timeout restarts at `now`."""
        call = _Call()
        for span in pending:
            if span.span_id in self._seen:
                continue
            self._remember_span(span.span_id)
            if span.role is None:
                call.emit(single_record(span, None))
                call.released.append(span.span_id)
                continue
            tr = self._trace(span.trace_id, None, now, call)
            (tr.prefill if span.role == c.ROLE_PREFILL else tr.decode).append(span)
        return call.result()

    def adopt(self, halves: Sequence[EngineSpan], now: float) -> AssembleResult:
        """Take over stored halves of a gone replica while running: each is placed as if it
        arrived now (`add`: paired with a partner held here, else held until `now + timeout`;
        late, superseded or a duplicate as usual). Every adopted half not held afterwards is in
        `pending_released`, since its row is stored (one held here stays stored as is)."""
        res = self.add(halves, {}, now)
        gone = [h.span_id for h in halves if not self._holds(h)]
        if not gone:
            return res
        return replace(res, pending_released=tuple(dict.fromkeys((*res.pending_released, *gone))))

    # -- internals ---------------------------------------------------------------------------

    def _holds(self, span: EngineSpan) -> bool:
        tr = self._pending.get(span.trace_id)
        if tr is None:
            return False
        return any(s.span_id == span.span_id for s in (*tr.prefill, *tr.decode))

    def _hints_for(self, trace_id: str, hints: TraceHints | None) -> TraceHints | None:
        tr = self._pending.get(trace_id)
        held = tr.hints if tr is not None else None
        if held is None:
            return hints
        return held if hints is None else merge_hints(held, hints)

    def _remember_span(self, span_id: str) -> None:
        self._seen.add(span_id)
        self._seen_order.append(span_id)
        if len(self._seen_order) > self._remember:
            self._seen.remove(self._seen_order.popleft())

    def _done_get(self, trace_id: str) -> _Done | None:
        done = self._done.get(trace_id)
        if done is None or isinstance(done, _Done):
            return done
        full = self._done[trace_id] = _Done(done)  # same place in the memory
        return full

    def _done_entry(self, trace_id: str) -> _Done:
        done = self._done_get(trace_id)
        if done is None:
            done = self._done[trace_id] = _Done()
            if len(self._done) > self._remember:
                self._done.popitem(last=False)
        return done

    def _trace(self, trace_id: str, hints: TraceHints | None, now: float, call: _Call) -> _Trace:
        tr = self._pending.get(trace_id)
        if tr is None:
            while len(self._pending) >= self._max_pending:
                self._flush(next(iter(self._pending)), call)
            done = self._done_get(trace_id)
            tr = _Trace(deadline=now + self._timeout, hints=hints)
            if done is not None:
                tr.stitched_until = done.stitched_until
            self._pending[trace_id] = tr
        elif hints is not None:
            tr.hints = merge_hints(tr.hints, hints)
        return tr

    def _place(self, span: EngineSpan, hints: TraceHints | None, now: float, call: _Call) -> None:
        if span.role is None:
            call.emit(single_record(span, self._hints_for(span.trace_id, hints)))
            return
        is_prefill = span.role == c.ROLE_PREFILL
        opposite = c.ROLE_DECODE if is_prefill else c.ROLE_PREFILL
        done = self._done_get(span.trace_id)
        if done is not None and span.trace_id not in self._pending:
            if opposite in done.flushed_roles:
                call.late += 1
                return
            if is_prefill and done.stitched_until is not None and span.end_time <= done.stitched_until:
                call.superseded += 1
                return
        tr = self._pending.get(span.trace_id)
        candidates = (tr.decode if is_prefill else tr.prefill) if tr is not None else []
        if tr is not None and candidates:
            if hints is not None:
                tr.hints = merge_hints(tr.hints, hints)
            best = min(
                candidates,
                key=(lambda d: _match_score(span, d)) if is_prefill else (lambda p: _match_score(p, span)),
            )
            candidates.remove(best)
            call.release(best)
            pre, dec = (span, best) if is_prefill else (best, span)
            call.emit(pair_record(pre, dec, tr.hints))
            tr.stitched_until = max(tr.stitched_until or dec.start_time, dec.start_time)
            if tr.empty():
                self._retire(span.trace_id, tr)
            return
        merged = self._hints_for(span.trace_id, hints)
        if not is_prefill and merged is not None and merged.disaggregated is False:
            call.emit(single_record(span, merged))  # decode-only: the decode pod prefilled locally
            return
        if (
            is_prefill
            and tr is not None
            and tr.stitched_until is not None
            and span.end_time <= tr.stitched_until
        ):
            call.superseded += 1
            return
        tr = self._trace(span.trace_id, hints, now, call)
        (tr.prefill if is_prefill else tr.decode).append(span)
        call.pend(span)

    def _release_local_decodes(self, trace_id: str, tr: _Trace, call: _Call) -> None:
        for span in tr.decode:
            call.release(span)
            call.emit(single_record(span, tr.hints))
        tr.decode.clear()
        if tr.empty():
            self._retire(trace_id, tr)

    def _retire(self, trace_id: str, tr: _Trace) -> None:
        del self._pending[trace_id]
        done = self._done_entry(trace_id)
        if tr.stitched_until is not None:
            done.stitched_until = max(done.stitched_until or tr.stitched_until, tr.stitched_until)

    def _flush(self, trace_id: str, call: _Call) -> None:
        tr = self._pending[trace_id]
        done = self._done_entry(trace_id)
        for span in tr.prefill:
            call.release(span)
            if tr.stitched_until is not None and span.end_time <= tr.stitched_until:
                call.superseded += 1  # a retried prefill of a request already stitched
                continue
            call.emit(single_record(span, tr.hints, complete=False, disaggregated=True))
            done.flushed_roles |= _PREFILL_ROLE
        for span in tr.decode:
            call.release(span)
            call.emit(single_record(span, tr.hints, complete=False, disaggregated=True))
            done.flushed_roles |= _DECODE_ROLE
        tr.prefill.clear()
        tr.decode.clear()
        self._retire(trace_id, tr)
