"""Several `serve` replicas on one database, each with its own P/D halves (docs/ingest.md,
"Several replicas"): a replica that starts takes back only its own halves; the halves of a
replica that stopped, or died, are taken over by the others and still pair with their partner."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import pytest
from prometheus_client import CollectorRegistry

from observer import conventions as c
from observer.config import load_settings
from observer.ingest.resolve import ResolvedBatch
from observer.model import EngineSpan, RequestRecord
from observer.pipeline import Pipeline
from observer.store import Store
from tests.observer.store.factories import engine_span

TIMEOUT = 30.0
GONE = 60.0


@dataclass
class Clock:
    now: float

    def __call__(self) -> float:
        return self.now


def replica(url: str, name: str, clock: Clock) -> Pipeline:
    settings = load_settings(
        None,
        overrides={
            "ingest": {
                "replica_id": name,
                "pending_timeout_seconds": TIMEOUT,
                "replica_gone_after_seconds": GONE,
            }
        },
        env={},
    )
    return Pipeline(settings=settings, store=Store.open(url), registry=CollectorRegistry(), clock=clock)


def request(i: int, end: float) -> tuple[EngineSpan, EngineSpan]:
    """The prefill and the decode half of request `i` (one trace)."""
    p = engine_span(i, end=end)
    d = replace(
        p,
        span_id=f"{i + 500:016x}",
        request_id=f"req-{i}",
        role=c.ROLE_DECODE,
        start_time=end + 0.1,
        end_time=end + 2.0,
        output_tokens=20,
        decode=1.8,
    )
    return p, d


def send(p: Pipeline, span: EngineSpan) -> None:
    p._write([ResolvedBatch((span,), {}, 0, (), 0)])


def tick(p: Pipeline, maintain: bool = False) -> None:
    p._expire_and_maintain(maintain)


def stored(p: Pipeline) -> list[RequestRecord]:
    return sorted(p.store.records_since(0.0), key=lambda r: r.request_id)


def adopted(p: Pipeline) -> float:
    return p.registry.get_sample_value(c.M_PENDING_ADOPTED + "_total") or 0.0


def test_a_starting_replica_leaves_the_live_halves_of_the_others_alone(db_url: str) -> None:
    """It restored every pending row of the database, and at its timeout flushed the other
    replica's live halves as incomplete: the same request was then stored twice (once
    incomplete, under the prefill's id) although its partner was stitched where it arrived."""
    clock = Clock(time.time())
    a = replica(db_url, "a", clock)
    a.recover()
    pre, dec = request(1, clock.now)
    send(a, pre)
    b = replica(db_url, "b", clock)
    b.recover()
    assert b.assembler.pending_count == 0
    clock.now += 1
    send(a, dec)
    clock.now += TIMEOUT + 1
    tick(a)
    tick(b)
    (r,) = stored(a)
    assert (r.request_id, r.complete) == ("req-1", True)
    assert b.registry.get_sample_value(c.M_TRACES_INCOMPLETE + "_total") == 0
    assert a.store.load_pending() == []


async def test_a_stopped_replicas_halves_are_taken_over_and_still_pair(db_url: str) -> None:
    """`stop` hands over (retire): at the next housekeeping tick another replica takes over the
    stopped one's halves, and the partner sent there (the trace moved with the load balancer)
    forms one complete record. They used to wait in the database until some replica restarted."""
    clock = Clock(time.time())
    a, b = replica(db_url, "a", clock), replica(db_url, "b", clock)
    await a.start()
    b.recover()
    pre, dec = request(2, clock.now)
    send(a, pre)
    await a.stop()
    clock.now += 1  # well within replica_gone_after_seconds: the retire makes it gone at once
    tick(b)
    assert adopted(b) == 1
    assert b.assembler.pending_spans() == (pre,)
    send(b, dec)
    (r,) = stored(b)
    assert (r.request_id, r.complete, r.prompt_tokens, r.output_tokens) == ("req-2", True, 1002, 20)
    assert b.store.load_pending() == []


def test_a_dead_replicas_halves_are_taken_over_once_its_heartbeat_is_old(db_url: str) -> None:
    clock = Clock(time.time())
    a, b = replica(db_url, "a", clock), replica(db_url, "b", clock)
    a.recover()
    b.recover()
    pre, dec = request(3, clock.now)
    send(a, pre)  # then a is killed: no stop, no retire
    clock.now += GONE - 5
    tick(b)
    assert b.assembler.pending_count == 0  # a may still be alive
    clock.now += 10
    tick(b)
    assert adopted(b) == 1
    send(b, dec)
    (r,) = stored(b)
    assert (r.request_id, r.complete) == ("req-3", True)


def test_a_replica_restarted_under_its_name_takes_back_its_own_halves_at_once(db_url: str) -> None:
    """A container restart in the same pod (same `ingest.replica_id`): its halves come back at
    startup even though its last heartbeat is recent, and the partner then pairs."""
    clock = Clock(time.time())
    a = replica(db_url, "a", clock)
    a.recover()
    pre, dec = request(4, clock.now)
    send(a, pre)
    clock.now += 2
    again = replica(db_url, "a", clock)  # kill -9 and restart
    again.recover()
    assert again.assembler.pending_spans() == (pre,)
    send(again, dec)
    (r,) = stored(again)
    assert r.complete


def test_a_clock_off_the_databases_is_exported_and_logged(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Heartbeats are written and read with each replica's own clock. Each maintenance measures
    this replica's clock against PostgreSQL's and warns past a quarter of
    replica_gone_after_seconds; SQLite (one host, one clock) has nothing to compare."""
    clock = Clock(time.time())
    p = replica(db_url, "a", clock)
    p.recover()
    offset = lambda: p.registry.get_sample_value(c.M_STORE_CLOCK_OFFSET)  # noqa: E731
    tick(p, maintain=True)
    assert abs(offset() or 0.0) < 5  # in step: no warning
    assert "clock is off" not in caplog.text
    clock.now += GONE / 4 + 5  # ahead of the database's by more than a quarter
    tick(p, maintain=True)
    if db_url.startswith("sqlite"):
        assert offset() == 0.0
        assert "clock is off" not in caplog.text
        return
    assert offset() == pytest.approx(GONE / 4 + 5, abs=5)
    (warning,) = [r for r in caplog.records if "clock is off" in r.getMessage()]
    assert warning.levelname == "WARNING"
    assert warning.__dict__["replica_id"] == "a"
