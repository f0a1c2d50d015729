"""The P/D assembler before the hot-path rewrite (commit 1fc8c7b), kept verbatim as the oracle
of tests/observer/ingest/test_assemble_equivalence.py and the A side of
`benchmarks/pipeline_stages_bench.py --reference`. Do not optimise this file."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from observer import conventions as c
from observer.ingest.resolve import merge_hints
from observer.model import EngineSpan, RequestRecord, TraceHints

__all__ = ["ReferenceAssembler"]


@dataclass(frozen=True, slots=True)
class _RefResult:
    records: tuple[RequestRecord, ...] = ()
    pending_added: tuple[EngineSpan, ...] = ()  # now pending: persist
    pending_released: tuple[str, ...] = ()  # span ids no longer pending: delete
    incomplete: int = 0  # records emitted with complete=False
    duplicates: int = 0  # engine spans seen before (same span id), dropped
    late: int = 0  # halves whose partner had already been flushed incomplete, dropped
    superseded: int = 0  # extra prefill attempts of an already stitched request, dropped


@dataclass(slots=True)
class _Trace:
    deadline: float
    hints: TraceHints | None
    prefill: list[EngineSpan] = field(default_factory=list)
    decode: list[EngineSpan] = field(default_factory=list)
    stitched_until: float | None = None  # latest decode start of a record stitched for this trace

    def empty(self) -> bool:
        return not self.prefill and not self.decode


@dataclass(slots=True)
class _Done:
    """What we remember about a trace that left the pending set."""

    flushed_roles: set[str] = field(default_factory=set)
    stitched_until: float | None = None


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

    def result(self) -> _RefResult:
        return _RefResult(
            records=tuple(self.records),
            pending_added=tuple(self.added.values()),
            pending_released=tuple(self.released),
            incomplete=self.incomplete,
            duplicates=self.duplicates,
            late=self.late,
            superseded=self.superseded,
        )


def _sum_opt(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def _tenant(hints: TraceHints | None, *spans: EngineSpan) -> str:
    for s in spans:
        if s.tenant:
            return s.tenant
    return (hints.tenant if hints else None) or c.UNKNOWN_TENANT


def _model(hints: TraceHints | None, *spans: EngineSpan) -> str:
    for s in spans:
        if s.model != c.UNKNOWN_MODEL:
            return s.model
    return (hints.model if hints else None) or c.UNKNOWN_MODEL


def _itl(decode: float | None, output_tokens: int) -> float | None:
    if decode is None or output_tokens <= 1:
        return None
    return decode / (output_tokens - 1)


def single_record(
    span: EngineSpan, hints: TraceHints | None, *, complete: bool = True, disaggregated: bool = False
) -> RequestRecord:
    """A request served by one engine (aggregated, decode-only, or an unpaired half)."""
    prefill_only = span.role == c.ROLE_PREFILL
    return RequestRecord(
        request_id=span.request_id,
        trace_id=span.trace_id,
        tenant=_tenant(hints, span),
        model=_model(hints, span),
        start_time=span.start_time,
        end_time=span.end_time,
        prompt_tokens=span.prompt_tokens,
        # an unpaired prefill half ran with max_tokens=1: its output is not the request's
        output_tokens=0 if prefill_only else span.output_tokens,
        cached=span.cached,
        ttft=None if prefill_only else span.ttft,
        itl=None if prefill_only else _itl(span.decode, span.output_tokens),
        e2e=None if prefill_only else (span.e2e if span.e2e is not None else span.end_time - span.start_time),
        queue=span.queue,
        prefill=span.prefill,
        kv_transfer=None,
        decode=None if prefill_only else span.decode,
        error=span.error,
        disaggregated=disaggregated,
        prefill_pod=None if span.role == c.ROLE_DECODE and disaggregated else span.pod,
        decode_pod=None if prefill_only else span.pod,
        complete=complete,
    )


def pair_record(prefill: EngineSpan, decode: EngineSpan, hints: TraceHints | None) -> RequestRecord:
    """One P/D request: tokens in from the prefill side, tokens out from the decode side."""
    ttft = None if decode.ttft is None else decode.start_time + decode.ttft - prefill.start_time
    return RequestRecord(
        request_id=decode.request_id,
        trace_id=decode.trace_id,
        tenant=_tenant(hints, prefill, decode),
        model=_model(hints, decode, prefill),
        start_time=prefill.start_time,
        end_time=decode.end_time,
        prompt_tokens=prefill.prompt_tokens,
        output_tokens=decode.output_tokens,
        cached=prefill.cached,
        ttft=ttft,
        itl=_itl(decode.decode, decode.output_tokens),
        e2e=decode.end_time - prefill.start_time,
        queue=_sum_opt(prefill.queue, decode.queue),
        prefill=prefill.prefill,
        kv_transfer=max(0.0, decode.start_time - prefill.end_time) + (decode.prefill or 0.0),
        decode=decode.decode,
        error=prefill.error or decode.error,
        disaggregated=True,
        prefill_pod=prefill.pod,
        decode_pod=decode.pod,
        complete=True,
    )


def _match_score(prefill: EngineSpan, decode: EngineSpan) -> tuple[int, int, float]:
    """Lower is better: same request id, then no error, then the smallest hand-over gap."""
    return (
        0 if prefill.request_id == decode.request_id else 1,
        int(prefill.error) + int(decode.error),
        abs(decode.start_time - prefill.end_time),
    )


class ReferenceAssembler:
    """Stitches P/D halves by trace id. Bounded: `max_pending` traces, `remember` span/trace ids."""

    def __init__(self, max_pending: int, timeout_seconds: float, remember: int = 100_000) -> None:
        if max_pending <= 0 or timeout_seconds <= 0 or remember <= 0:
            raise ValueError("max_pending, timeout_seconds and remember must be positive")
        self._max_pending = max_pending
        self._timeout = timeout_seconds
        self._remember = remember
        self._pending: OrderedDict[str, _Trace] = OrderedDict()  # oldest first
        self._seen: OrderedDict[str, None] = OrderedDict()  # span ids (dedupe)
        self._done: OrderedDict[str, _Done] = OrderedDict()  # traces that left pending

    @property
    def pending_count(self) -> int:
        """Traces waiting for a partner."""
        return len(self._pending)

    def pending_spans(self) -> tuple[EngineSpan, ...]:
        """Every pending half (what a store should hold)."""
        return tuple(s for t in self._pending.values() for s in (*t.prefill, *t.decode))

    # -- public entry points -----------------------------------------------------------------

    def add(self, engine: Sequence[EngineSpan], hints: Mapping[str, TraceHints], now: float) -> _RefResult:
        """Take one resolved batch; emit every request that is complete now."""
        call = _Call()
        for trace_id, hint in hints.items():
            tr = self._pending.get(trace_id)
            if tr is not None:
                tr.hints = merge_hints(tr.hints, hint)
                if tr.hints.disaggregated is False and tr.decode:
                    self._release_local_decodes(trace_id, tr, call)
        for span in engine:
            if span.span_id in self._seen:
                call.duplicates += 1
                continue
            self._remember_span(span.span_id)
            self._place(span, hints.get(span.trace_id), now, call)
        return call.result()

    def expire(self, now: float) -> _RefResult:
        """Flush traces whose partner did not come within the timeout (as incomplete records).

        Assumes `now` does not go backwards between calls (deadlines are checked oldest first)."""
        call = _Call()
        while self._pending:
            trace_id, tr = next(iter(self._pending.items()))
            if tr.deadline > now:
                break
            self._flush(trace_id, call)
        return call.result()

    def restore(self, pending: Sequence[EngineSpan], now: float) -> _RefResult:
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

    # -- internals ---------------------------------------------------------------------------

    def _hints_for(self, trace_id: str, hints: TraceHints | None) -> TraceHints | None:
        tr = self._pending.get(trace_id)
        held = tr.hints if tr is not None else None
        if held is None:
            return hints
        return held if hints is None else merge_hints(held, hints)

    def _remember_span(self, span_id: str) -> None:
        self._seen[span_id] = None
        if len(self._seen) > self._remember:
            self._seen.popitem(last=False)

    def _done_entry(self, trace_id: str) -> _Done:
        done = self._done.get(trace_id)
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
            done = self._done.get(trace_id)
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
        done = self._done.get(span.trace_id)
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
            done.flushed_roles.add(c.ROLE_PREFILL)
        for span in tr.decode:
            call.release(span)
            call.emit(single_record(span, tr.hints, complete=False, disaggregated=True))
            done.flushed_roles.add(c.ROLE_DECODE)
        tr.prefill.clear()
        tr.decode.clear()
        self._retire(trace_id, tr)
