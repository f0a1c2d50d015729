import math
import re

import pytest

from simulator import mooncake
from simulator.workload import (
    Burst,
    Diurnal,
    LengthDist,
    Poisson,
    TenantSpec,
    synthetic_workload,
    system_prompt_chain,
    tenant_stream,
)


def test_poisson_rate_and_determinism() -> None:
    spec = TenantSpec("t", Poisson(5.0), system_prompt_blocks=3)
    a = list(tenant_stream(spec, seed=7, horizon=2000.0))
    b = list(tenant_stream(spec, seed=7, horizon=2000.0))
    assert a == b
    assert len(a) == pytest.approx(10_000, rel=0.05)
    assert a != list(tenant_stream(spec, seed=8, horizon=2000.0))
    chain = system_prompt_chain("t", 3)
    for r in a[:50]:
        assert r.block_hashes[:3] == chain
        assert len(r.block_hashes) == math.ceil(r.prompt_tokens / 512)
    # only the system prompt is shared
    tails = [set(r.block_hashes[3:]) for r in a[:200]]
    assert sum(len(t) for t in tails) == len(set().union(*tails))


def test_burst_and_diurnal_shapes() -> None:
    burst = list(tenant_stream(TenantSpec("b", Burst(1.0, 20.0, 100.0, 200.0)), 1, horizon=300.0))
    inside = sum(1 for r in burst if 100 <= r.arrival < 200)
    assert inside > 5 * (len(burst) - inside)
    day = TenantSpec("d", Diurnal(10.0, 0.9, 1000.0, -math.pi / 2))
    reqs = list(tenant_stream(day, 1, horizon=1000.0))
    trough = sum(1 for r in reqs if r.arrival < 100 or r.arrival >= 900)
    peak = sum(1 for r in reqs if 400 <= r.arrival < 600)
    assert peak > 5 * trough


def test_merge_is_time_ordered_and_tenants_are_independent() -> None:
    t1 = TenantSpec("x", Poisson(2.0))
    t2 = TenantSpec("y", Poisson(3.0), start=10.0, end=50.0)
    merged = list(synthetic_workload([t1, t2], 3, horizon=100.0))
    assert [r.arrival for r in merged] == sorted(r.arrival for r in merged)
    ys = [r for r in merged if r.tenant == "y"]
    assert ys
    assert all(10.0 <= r.arrival < 50.0 for r in ys)
    alone = list(synthetic_workload([t1], 3, horizon=100.0))
    assert alone == [r for r in merged if r.tenant == "x"]


def test_length_dist_bounds() -> None:
    import random

    rng = random.Random(0)
    d = LengthDist(1000.0, 2.0, 10, 2000)
    values = [d.sample(rng) for _ in range(1000)]
    assert min(values) >= 10
    assert max(values) <= 2000
    assert LengthDist(50.0, 0.0).sample(rng) == 50


def test_mooncake_tenant_rule_and_replay(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert mooncake.tenant_of([0, 7402, 1], 8) == mooncake.tenant_of([0, 7402, 99], 8)
    assert mooncake.tenant_of([0], 8) == mooncake.tenant_of([0], 8)
    trace = tmp_path / "t.jsonl"
    trace.write_text(
        '{"timestamp": 0, "input_length": 1000, "output_length": 5, "hash_ids": [0, 1]}\n'
        '{"timestamp": 1500, "input_length": 600, "output_length": 0, "hash_ids": [0, 1]}\n'
        '{"timestamp": 9000, "input_length": 10, "output_length": 1, "hash_ids": [4]}\n'
    )
    reqs = list(mooncake.replay(str(trace), time_scale=2.0, start=10.0, horizon=4.0))
    assert [(r.arrival, r.prompt_tokens, r.output_tokens) for r in reqs] == [(10.0, 1000, 5), (10.75, 600, 1)]
    assert reqs[0].tenant == reqs[1].tenant
    with pytest.raises(ValueError, match="unknown Mooncake trace"):
        mooncake.trace_path("nope")
    with pytest.raises(FileNotFoundError):
        list(mooncake.replay("conversation", directory=tmp_path))
    (tmp_path / "conversation_trace.jsonl").mkdir()  # was "trace not found"
    with pytest.raises(mooncake.TraceFormatError, match="is a directory, not a trace file"):
        list(mooncake.replay("conversation", directory=tmp_path))


def test_mooncake_skips_blank_lines_and_refuses_negative_lengths(tmp_path) -> None:  # type: ignore[no-untyped-def]
    row = '{"timestamp": %d, "input_length": %d, "output_length": %d, "hash_ids": [0, 1]}\n'
    trace = tmp_path / "t.jsonl"
    trace.write_text("\n" + row % (0, 100, 5) + "   \n" + row % (10, 200, 6) + "\n\n")
    reqs = list(mooncake.replay(str(trace)))
    assert [(r.request_id, r.prompt_tokens) for r in reqs] == [("mc-t-000000", 100), ("mc-t-000001", 200)]
    assert [r.request_id for r in mooncake.replay(str(trace), limit=1)] == ["mc-t-000000"]
    for bad, message in [
        (row % (10, -500, -3), "line 3: input_length is negative (-500)"),
        (row % (10, 500, -3), "line 3: output_length is negative (-3)"),
        (row % (-10, 500, 3), "line 3: timestamp must be a number of ms >= 0"),
        ("[1, 2]", "line 3: not a JSON object but a list"),  # was "list indices must be integers"
        (
            '{"timestamp": 0, "input_length": 5, "output_length": 1, "hash_ids": "123"}',
            "hash_ids is not a list",
        ),
    ]:
        trace.write_text(row % (0, 1, 1) + "\n" + bad)
        with pytest.raises(mooncake.TraceFormatError, match=re.escape(message)) as err:
            list(mooncake.replay(str(trace)))
        assert str(err.value).count(str(trace)) == 1
