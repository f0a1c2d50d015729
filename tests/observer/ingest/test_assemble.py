"""observer.ingest.assemble: P/D stitching, timeouts, bounds, duplicates, restore. Pure."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from observer import conventions as c
from observer.ingest.assemble import AssembleResult, TraceAssembler, record_key
from observer.model import EngineSpan, RequestRecord, TierTokens, TraceHints

_ids = itertools.count(1)


def eng(
    role: str | None,
    *,
    trace: str = "t1",
    start: float = 100.0,
    end: float = 100.5,
    prompt: int = 1000,
    output: int = 1,
    cached: TierTokens | None = None,
    queue: float | None = 0.02,
    prefill: float | None = 0.3,
    decode: float | None = None,
    ttft: float | None = None,
    e2e: float | None = None,
    tenant: str | None = None,
    model: str = "m",
    request_id: str | None = None,
    error: bool = False,
    span_id: str | None = None,
) -> EngineSpan:
    sid = span_id or f"{next(_ids):016x}"
    return EngineSpan(
        trace_id=trace,
        span_id=sid,
        request_id=request_id or sid,
        role=role,
        tenant=tenant,
        model=model,
        pod=f"{role or 'agg'}-pod",
        start_time=start,
        end_time=end,
        prompt_tokens=prompt,
        output_tokens=output,
        cached=cached or TierTokens(),
        queue=queue,
        prefill=prefill,
        decode=decode,
        ttft=ttft,
        e2e=e2e,
        error=error,
    )


def pd_pair(trace: str = "t1", **kw: object) -> tuple[EngineSpan, EngineSpan]:
    """Prefill 100.0-100.5 on the prefill pod; decode 100.6-103.0 (KV load 0.05, 21 tokens)."""
    p = eng(c.ROLE_PREFILL, trace=trace, start=100.0, end=100.5, cached=TierTokens(hbm=600, dram=100), **kw)  # type: ignore[arg-type]
    d = eng(
        c.ROLE_DECODE,
        trace=trace,
        start=100.6,
        end=103.0,
        output=21,
        queue=0.01,
        prefill=0.05,
        decode=2.0,
        ttft=0.08,
        e2e=2.4,
        cached=TierTokens(remote=1000),
        request_id=f"req-{trace}",
    )
    return p, d


def test_pd_pair_in_one_batch_is_one_record_with_phase_math() -> None:
    a = TraceAssembler(max_pending=10, timeout_seconds=30)
    p, d = pd_pair()
    res = a.add([d, p], {"t1": TraceHints("t1", tenant="acme")}, now=200)
    (r,) = res.records
    assert res.pending_added == ()
    assert res.pending_released == ()
    assert a.pending_count == 0
    assert r.request_id == "req-t1"  # the decode side's request id
    assert r.tenant == "acme"
    assert r.complete
    assert r.disaggregated
    assert (r.prompt_tokens, r.output_tokens) == (1000, 21)
    assert r.cached == TierTokens(hbm=600, dram=100)  # prefill side's hits, not the KV load
    assert r.queue == pytest.approx(0.03)
    assert r.prefill == pytest.approx(0.3)
    assert r.kv_transfer == pytest.approx(0.1 + 0.05)  # hand-over gap + decode-side KV load
    assert r.decode == pytest.approx(2.0)
    assert r.ttft == pytest.approx(100.6 + 0.08 - 100.0)
    assert r.e2e == pytest.approx(3.0)
    assert r.itl == pytest.approx(2.0 / 20)
    assert (r.start_time, r.end_time) == (100.0, 103.0)
    assert (r.prefill_pod, r.decode_pod) == ("prefill-pod", "decode-pod")
    assert record_key(r) == "t1/req-t1"


def test_pair_across_batches_reports_pending_changes() -> None:
    a = TraceAssembler(max_pending=10, timeout_seconds=30)
    p, d = pd_pair()
    first = a.add([d], {}, now=200)
    assert first.records == ()
    assert first.pending_added == (d,)
    assert a.pending_count == 1
    second = a.add([p], {}, now=201)
    (r,) = second.records
    assert second.pending_released == (d.span_id,)
    assert second.pending_added == ()
    assert r.output_tokens == 21
    assert a.pending_count == 0
    assert a.expire(now=10_000) == AssembleResult()


def test_single_engine_span_is_emitted_immediately() -> None:
    a = TraceAssembler(max_pending=10, timeout_seconds=30)
    s = eng(None, start=10, end=12, output=11, decode=1.0, ttft=0.5, tenant="t", queue=None)
    (r,) = a.add([s], {}, now=0).records
    assert r.complete
    assert not r.disaggregated
    assert r.kv_transfer is None
    assert r.e2e == 2.0  # no e2e attribute: span duration
    assert r.itl == pytest.approx(0.1)
    assert r.ttft == 0.5
    assert r.queue is None
    assert r.tenant == "t"
    (r1,) = a.add([eng(None, output=1, decode=0.2)], {}, now=0).records
    assert r1.itl is None  # one token: no inter-token gap
    assert r1.tenant == c.UNKNOWN_TENANT


def test_timeout_flushes_a_half_once_then_drops_its_late_partner() -> None:
    a = TraceAssembler(max_pending=10, timeout_seconds=30)
    p, d = pd_pair()
    assert a.add([p], {"t1": TraceHints("t1", tenant="acme")}, now=100).pending_added == (p,)
    assert a.expire(now=129.9).records == ()
    res = a.expire(now=130)
    (r,) = res.records
    assert res.incomplete == 1
    assert res.pending_released == (p.span_id,)
    assert not r.complete
    assert r.disaggregated
    assert r.tenant == "acme"  # hints remembered while pending
    assert (r.prompt_tokens, r.output_tokens, r.ttft, r.e2e) == (1000, 0, None, None)
    assert a.expire(now=1000).records == ()  # emitted once
    late = a.add([d], {}, now=140)
    assert late.records == ()
    assert late.late == 1
    assert late.pending_added == ()
    assert a.pending_count == 0


def test_decode_half_flushed_keeps_its_own_view() -> None:
    a = TraceAssembler(max_pending=10, timeout_seconds=5)
    _, d = pd_pair()
    a.add([d], {}, now=0)
    (r,) = a.expire(now=5).records
    assert not r.complete
    assert r.output_tokens == 21
    assert r.decode_pod == "decode-pod"
    assert r.prefill_pod is None


def test_max_pending_flushes_oldest_first() -> None:
    a = TraceAssembler(max_pending=2, timeout_seconds=30)
    halves = [pd_pair(trace=f"t{i}")[0] for i in range(3)]
    a.add(halves[:2], {}, now=0)
    res = a.add([halves[2]], {}, now=1)
    (r,) = res.records
    assert r.trace_id == "t0"
    assert not r.complete
    assert res.incomplete == 1
    assert res.pending_added == (halves[2],)
    assert res.pending_released == (halves[0].span_id,)
    assert a.pending_count == 2


def test_bound_holds_within_one_batch() -> None:
    a = TraceAssembler(max_pending=3, timeout_seconds=30)
    halves = [pd_pair(trace=f"t{i}")[0] for i in range(10)]
    res = a.add(halves, {}, now=0)
    assert a.pending_count == 3
    assert res.incomplete == 7
    # flushed in the same call: neither persisted nor to be deleted
    assert {s.span_id for s in res.pending_added} == {h.span_id for h in halves[7:]}
    assert res.pending_released == ()


def test_duplicate_spans_are_dropped() -> None:
    a = TraceAssembler(max_pending=10, timeout_seconds=30)
    p, d = pd_pair()
    s = eng(None, trace="t2")
    assert len(a.add([p, p, s], {}, now=0).records) == 1
    res = a.add([p, s, d, d], {}, now=1)  # a client retry resends the batch
    assert res.duplicates == 3
    assert len(res.records) == 1
    assert res.records[0].complete


def test_decode_only_when_epp_says_not_disaggregated() -> None:
    a = TraceAssembler(max_pending=10, timeout_seconds=30)
    _, d = pd_pair()
    (r,) = a.add([d], {"t1": TraceHints("t1", tenant="acme", disaggregated=False)}, now=0).records
    assert r.complete
    assert not r.disaggregated
    assert r.prefill == 0.05  # the decode pod prefilled locally
    assert r.kv_transfer is None
    assert (r.prefill_pod, r.decode_pod) == ("decode-pod", "decode-pod")
    # the hint arriving after the decode span releases it too
    _, d2 = pd_pair(trace="t2")
    assert a.add([d2], {}, now=0).pending_added == (d2,)
    res = a.add([], {"t2": TraceHints("t2", tenant="beta", disaggregated=False)}, now=1)
    (r2,) = res.records
    assert r2.complete
    assert r2.tenant == "beta"
    assert res.pending_released == (d2.span_id,)
    assert a.pending_count == 0


def test_tenant_from_hints_of_a_later_batch_while_pending() -> None:
    a = TraceAssembler(max_pending=10, timeout_seconds=30)
    p, d = pd_pair()
    a.add([p], {}, now=0)
    a.add([], {"t1": TraceHints("t1", tenant="from-epp", model="m2")}, now=1)
    (r,) = a.add([replace(d, model=c.UNKNOWN_MODEL)], {}, now=2).records
    assert r.tenant == "from-epp"
    assert r.model == "m"  # prefill side knew the model


def test_engine_tenant_beats_hints() -> None:
    a = TraceAssembler(max_pending=10, timeout_seconds=30)
    p, d = pd_pair()
    (r,) = a.add([p, replace(d, tenant="own")], {"t1": TraceHints("t1", tenant="hint")}, now=0).records
    assert r.tenant == "own"


def test_retried_prefill_is_superseded_not_counted() -> None:
    a = TraceAssembler(max_pending=10, timeout_seconds=30)
    failed = eng(c.ROLE_PREFILL, start=99.0, end=99.4, error=True)
    p, d = pd_pair()
    res = a.add([failed, p], {}, now=0)
    assert len(res.pending_added) == 2
    (r,) = a.add([d], {}, now=1).records
    assert not r.error  # paired with the successful attempt
    assert r.prefill_pod == "prefill-pod"
    assert r.start_time == 100.0
    res = a.expire(now=100)
    assert res.records == ()
    assert res.superseded == 1
    assert res.pending_released == (failed.span_id,)
    # a retry arriving after the request was stitched is dropped as well
    late_retry = eng(c.ROLE_PREFILL, start=98.0, end=98.5)
    res = a.add([late_retry], {}, now=101)
    assert res.records == ()
    assert res.superseded == 1
    assert a.pending_count == 0


def test_two_requests_in_one_trace_pair_by_request_id_then_time() -> None:
    a = TraceAssembler(max_pending=10, timeout_seconds=30)
    p1 = eng(c.ROLE_PREFILL, start=0, end=1, prompt=10, request_id="a")
    p2 = eng(c.ROLE_PREFILL, start=10, end=11, prompt=20, request_id="b")
    d2 = eng(c.ROLE_DECODE, start=11.1, end=12, output=5, request_id="b")
    d1 = eng(c.ROLE_DECODE, start=1.1, end=2, output=7, request_id="x")
    a.add([p1, p2], {}, now=0)
    (r2,) = a.add([d2], {}, now=0).records
    assert (r2.prompt_tokens, r2.output_tokens) == (20, 5)
    (r1,) = a.add([d1], {}, now=0).records
    assert (r1.prompt_tokens, r1.output_tokens) == (10, 7)
    assert a.pending_count == 0


def test_restore_after_restart_pairs_with_the_partner() -> None:
    a = TraceAssembler(max_pending=10, timeout_seconds=30)
    p, d = pd_pair()
    other = pd_pair(trace="t9")[1]
    store: dict[str, EngineSpan] = {}

    def persist(res: AssembleResult) -> None:
        for s in res.pending_added:
            store[s.span_id] = s
        for sid in res.pending_released:
            del store[sid]

    persist(a.add([p, other], {}, now=0))
    assert set(store) == {p.span_id, other.span_id}
    b = TraceAssembler(max_pending=10, timeout_seconds=30)  # kill -9, restart
    persist(b.restore(list(store.values()), now=50))
    assert b.pending_count == 2
    res = b.add([d], {}, now=51)
    persist(res)
    (r,) = res.records
    assert r.complete
    assert r.prompt_tokens == 1000
    assert set(store) == {other.span_id}
    res = b.expire(now=80)  # timeout restarted at restore time
    persist(res)
    assert res.incomplete == 1
    assert store == {}


def test_adopted_halves_pair_with_a_partner_held_here_and_their_rows_are_released() -> None:
    """A gone replica's half taken over while running: its partner came here meanwhile (the
    load balancer moved the trace), so they form one complete record, and both rows go."""
    a = TraceAssembler(max_pending=10, timeout_seconds=30)
    p, d = pd_pair()
    assert a.add([d], {}, now=100).pending_added == (d,)
    res = a.adopt([p], now=110)
    (r,) = res.records
    assert r.complete
    assert r.prompt_tokens == 1000
    assert r.output_tokens == 21
    assert set(res.pending_released) == {d.span_id, p.span_id}
    assert a.pending_count == 0


def test_adopted_half_without_partner_is_held_with_a_fresh_timeout_and_its_row_kept() -> None:
    a = TraceAssembler(max_pending=10, timeout_seconds=30)
    p, d = pd_pair()
    res = a.adopt([p], now=200)
    assert res.records == ()
    assert p.span_id not in res.pending_released
    assert a.pending_spans() == (p,)
    assert a.expire(now=229).records == ()
    assert a.add([d], {}, now=229).records[0].complete  # its partner, arriving later


def test_adopted_halves_not_held_afterwards_are_released() -> None:
    """Late (the partner was flushed here), or a duplicate of a half stitched here: nothing is
    held, so the adopted row is released; a duplicate of a half held here keeps its row."""
    a = TraceAssembler(max_pending=10, timeout_seconds=30)
    p, d = pd_pair()
    a.add([d], {}, now=100)
    a.expire(now=130)  # d flushed incomplete: p is late from now on
    late = a.adopt([p], now=140)
    assert (late.late, late.pending_released) == (1, (p.span_id,))
    held = pd_pair(trace="t2")[0]
    a.add([held], {}, now=150)
    dup = a.adopt([held], now=151)
    assert dup.duplicates == 1
    assert dup.pending_released == ()
    assert a.pending_spans() == (held,)


def test_invalid_construction() -> None:
    with pytest.raises(ValueError, match="positive"):
        TraceAssembler(max_pending=0, timeout_seconds=1)


# ---------------------------------------------------------------------------------------------
# Property: any batching/interleaving (with resends) yields each request exactly once
# ---------------------------------------------------------------------------------------------


def _requests(n_pd: int, n_single: int) -> tuple[list[EngineSpan], dict[str, tuple[int, int, int]]]:
    spans: list[EngineSpan] = []
    expected: dict[str, tuple[int, int, int]] = {}
    for i in range(n_pd):
        trace = f"pd{i}"
        p = eng(c.ROLE_PREFILL, trace=trace, start=i, end=i + 0.5, prompt=100 + i, cached=TierTokens(hbm=i))
        d = eng(c.ROLE_DECODE, trace=trace, start=i + 0.6, end=i + 2, output=10 + i, decode=1.0, ttft=0.1)
        spans += [p, d]
        expected[f"{trace}/{d.request_id}"] = (100 + i, 10 + i, i)
    for j in range(n_single):
        s = eng(None, trace=f"s{j}", prompt=7 + j, output=3, cached=TierTokens(unknown=j))
        spans.append(s)
        expected[f"s{j}/{s.request_id}"] = (7 + j, 3, j)
    return spans, expected


@settings(max_examples=120, deadline=None)
@given(
    n_pd=st.integers(0, 8),
    n_single=st.integers(0, 4),
    data=st.data(),
)
def test_any_batching_yields_each_request_exactly_once(n_pd: int, n_single: int, data: st.DataObject) -> None:
    spans, expected = _requests(n_pd, n_single)
    order = data.draw(st.permutations(spans))
    resends = data.draw(st.lists(st.sampled_from(spans), max_size=5)) if spans else []
    stream: list[EngineSpan] = list(order)
    for s in resends:  # client retries: the same span again, anywhere
        stream.insert(data.draw(st.integers(0, len(stream))), s)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    batches: list[Sequence[EngineSpan]] = [
        stream[i:j] for i, j in itertools.pairwise([0, *cuts, len(stream)])
    ]
    # a crash + restore at some batch boundary; the in-memory dedupe memory does not survive a
    # restart (the store dedupes on record_key), so resends and a restart are drawn separately
    restart_at = data.draw(st.integers(0, len(batches))) if not resends else len(batches)

    a = TraceAssembler(max_pending=max(1, n_pd), timeout_seconds=1_000)
    store: dict[str, EngineSpan] = {}
    records: list[RequestRecord] = []
    for k, batch in enumerate(batches):
        if k == restart_at:  # crash + restore from what was persisted
            a = TraceAssembler(max_pending=max(1, n_pd), timeout_seconds=1_000)
            res = a.restore(list(store.values()), now=float(k))
        else:
            res = AssembleResult()
        for r in (res, a.add(batch, {}, now=float(k))):
            records += r.records
            for s in r.pending_added:
                store[s.span_id] = s
            for sid in r.pending_released:
                del store[sid]
        assert set(store) == {s.span_id for s in a.pending_spans()}
    final = a.expire(now=10_000.0)
    records += final.records
    for sid in final.pending_released:
        del store[sid]

    assert store == {}
    assert a.pending_count == 0
    keys = [record_key(r) for r in records]
    assert len(keys) == len(set(keys)), "a request was counted twice"
    assert set(keys) == set(expected)
    assert all(r.complete for r in records)
    got = {record_key(r): (r.prompt_tokens, r.output_tokens, r.cached.total) for r in records}
    assert got == expected
    assert sum(r.prompt_tokens for r in records) == sum(v[0] for v in expected.values())
