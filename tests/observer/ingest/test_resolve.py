"""observer.ingest.resolve: DESIGN §4 span resolution, pure (no mocks)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from observer import conventions as c
from observer.config import IngestSettings
from observer.ingest.otlp import decode_traces
from observer.ingest.resolve import ResolveConfig, resolve_batch
from observer.model import RejectReason, Span, TierTokens, TraceHints

from .otlp_builders import DECODE_RES, EPP_RES, PREFILL_RES, SpanSpec, encode, engine_attrs

CFG = ResolveConfig.from_settings(IngestSettings())
TRACE = "0af7651916cd43dd8448eb211c80319c"
_ids = itertools.count(1)


def span(
    attrs: dict[str, Any] | None = None,
    resource: dict[str, Any] | None = None,
    *,
    name: str = c.SPAN_VLLM_REQUEST,
    trace_id: str = TRACE,
    status: int = 0,
    start: float = 100.0,
    end: float = 101.0,
) -> Span:
    return Span(
        trace_id=trace_id,
        span_id=f"{next(_ids):016x}",
        parent_span_id="",
        name=name,
        kind=2,
        start_time=start,
        end_time=end,
        status_code=status,
        attributes=attrs if attrs is not None else {c.ATTR_PROMPT_TOKENS: 10},
        resource=resource if resource is not None else {},
    )


def one(s: Span, cfg: ResolveConfig = CFG):
    res = resolve_batch([s], cfg)
    assert res.rejected == 0, res.errors
    (eng,) = res.engine
    return eng


def test_vllm_prefill_and_decode_spans_from_real_encoding() -> None:
    tid = 0x0AF7651916CD43DD8448EB211C80319C
    body = encode(
        [
            SpanSpec(
                c.SPAN_VLLM_REQUEST,
                tid,
                100.0,
                100.4,
                engine_attrs(500, 1, request_id="p1", extra={c.ATTR_TIER_HIT[c.TIER_HBM]: 200}),
                PREFILL_RES,
            ),
            SpanSpec(
                c.SPAN_VLLM_REQUEST, tid, 100.5, 102.0, engine_attrs(500, 50, request_id="d1"), DECODE_RES
            ),
            SpanSpec(
                c.SPAN_EPP_GATEWAY,
                tid,
                99.9,
                102.1,
                {c.ATTR_FAIRNESS_ID: "acme", c.ATTR_EPP_PD_USED: True},
                EPP_RES,
            ),
            SpanSpec(c.SPAN_EPP_SCORING, tid, 99.95, 99.96, {}, EPP_RES),
        ]
    )
    res = resolve_batch(decode_traces(body, c.CT_PROTOBUF, None, 1 << 20, 100).spans, CFG)
    assert res.rejected == 0
    assert res.ignored == 1  # the scoring span carries nothing we use
    by_role = {e.role: e for e in res.engine}
    pre, dec = by_role[c.ROLE_PREFILL], by_role[c.ROLE_DECODE]
    assert pre.pod == "vllm-prefill-0"
    assert pre.request_id == "p1"
    assert pre.prompt_tokens == 500
    assert pre.cached == TierTokens(hbm=200)
    assert pre.tenant is None  # resolved at trace level from the hints
    assert pre.model == "llama-3-8b"
    assert dec.output_tokens == 50
    assert dec.queue == pytest.approx(0.01)
    assert dec.ttft == pytest.approx(0.12)
    assert res.hints[TRACE] == TraceHints(TRACE, tenant="acme", model="llama-3-8b", disaggregated=True)


def test_role_resolution_order() -> None:
    def role(res: dict[str, Any]) -> str | None:
        return one(span(resource=res)).role

    assert role({c.RES_LLMD_ROLE: "decode", c.RES_POD_LABEL_ROLE: "prefill"}) == c.ROLE_DECODE
    assert role({c.RES_POD_LABEL_ROLE: "Prefill"}) == c.ROLE_PREFILL
    assert role({c.RES_SERVICE_NAME: "my-model-decode"}) == c.ROLE_DECODE
    assert role({c.RES_SERVICE_NAME: "vllm-prefill"}) == c.ROLE_PREFILL
    assert role({c.RES_LLMD_ROLE: c.ROLE_BOTH, c.RES_SERVICE_NAME: "x-prefill"}) is None  # aggregated
    assert role({c.RES_SERVICE_NAME: "vllm"}) is None
    assert role({}) is None


def test_pod_and_model_fallbacks() -> None:
    e = one(span(resource={c.RES_SERVICE_INSTANCE: "inst-1"}))
    assert e.pod == "inst-1"
    assert e.model == c.UNKNOWN_MODEL
    e = one(span(resource={c.RES_POD_NAME: "pod-a", c.RES_SERVICE_INSTANCE: "inst-1"}))
    assert e.pod == "pod-a"
    assert one(span()).pod == c.UNKNOWN_POD
    attrs = {c.ATTR_PROMPT_TOKENS: 1, c.ATTR_REQUEST_MODEL: "req-model", c.ATTR_RESPONSE_MODEL: "resp-model"}
    assert one(span(attrs)).model == "resp-model"
    assert (
        one(span({c.ATTR_PROMPT_TOKENS: 1}, {c.ATTR_REQUEST_MODEL: "from-resource"})).model == "from-resource"
    )


def test_tenant_order_span_then_resource() -> None:
    attrs = {c.ATTR_PROMPT_TOKENS: 1, c.ATTR_USER_ID: "user", c.ATTR_FAIRNESS_ID: "fair"}
    assert one(span(attrs, {c.ATTR_TENANT_ID: "res-tenant"})).tenant == "fair"
    assert one(span({c.ATTR_PROMPT_TOKENS: 1}, {c.ATTR_TENANT_ID: "res-tenant"})).tenant == "res-tenant"
    assert one(span({c.ATTR_PROMPT_TOKENS: 1, c.ATTR_TENANT_ID: 42})).tenant == "42"
    assert one(span({c.ATTR_PROMPT_TOKENS: 1, c.ATTR_TENANT_ID: "  "})).tenant is None


def test_token_keys_and_tiers() -> None:
    e = one(span({c.ATTR_INPUT_TOKENS: 100, c.ATTR_PROMPT_TOKENS: 7, c.ATTR_OUTPUT_TOKENS: 9}))
    assert (e.prompt_tokens, e.output_tokens) == (100, 9)
    e = one(span({c.ATTR_PROMPT_TOKENS: "100", c.ATTR_COMPLETION_TOKENS: 3.0}))
    assert (e.prompt_tokens, e.output_tokens) == (100, 3)
    assert one(span({c.ATTR_PROMPT_TOKENS: 5})).output_tokens == 0
    tiers = {
        c.ATTR_TIER_HIT[c.TIER_HBM]: 10,
        c.ATTR_TIER_HIT[c.TIER_DISK]: 5,
        c.ATTR_TIER_HIT[c.TIER_REMOTE]: 1,
    }
    assert one(span({c.ATTR_PROMPT_TOKENS: 100, **tiers})).cached == TierTokens(hbm=10, disk=5, remote=1)
    assert one(span({c.ATTR_PROMPT_TOKENS: 100, c.ATTR_CACHED_TOKENS: 30})).cached == TierTokens(unknown=30)
    both = one(span({c.ATTR_PROMPT_TOKENS: 100, c.ATTR_CACHED_TOKENS: 30, **tiers})).cached
    assert both == TierTokens(hbm=10, disk=5, remote=1, unknown=14)
    assert both.total == 30
    # tiers adding up to more than the total: tiers win, nothing unknown
    more = one(span({c.ATTR_PROMPT_TOKENS: 100, c.ATTR_CACHED_TOKENS: 3, **tiers})).cached
    assert more == TierTokens(hbm=10, disk=5, remote=1)


@pytest.mark.parametrize(
    ("attrs", "reason"),
    [
        ({c.ATTR_COMPLETION_TOKENS: 5}, RejectReason.MISSING_TOKENS),
        ({c.ATTR_PROMPT_TOKENS: -1}, RejectReason.BAD_VALUE),
        ({c.ATTR_PROMPT_TOKENS: "many"}, RejectReason.BAD_VALUE),
        ({c.ATTR_PROMPT_TOKENS: 1.5}, RejectReason.BAD_VALUE),
        ({c.ATTR_PROMPT_TOKENS: True}, RejectReason.BAD_VALUE),
        ({c.ATTR_PROMPT_TOKENS: 10, c.ATTR_CACHED_TOKENS: 11}, RejectReason.BAD_VALUE),
        ({c.ATTR_PROMPT_TOKENS: 10, c.ATTR_TIER_HIT[c.TIER_DRAM]: -3}, RejectReason.BAD_VALUE),
        ({c.ATTR_PROMPT_TOKENS: 10, c.ATTR_LAT_TTFT: float("nan")}, RejectReason.BAD_VALUE),
        ({c.ATTR_PROMPT_TOKENS: 10, c.ATTR_LAT_QUEUE: -0.1}, RejectReason.BAD_VALUE),
        ({c.ATTR_PROMPT_TOKENS: 10, c.ATTR_LAT_E2E: (1, 2)}, RejectReason.BAD_VALUE),
    ],
)
def test_bad_engine_spans_are_rejected_others_kept(attrs: dict[str, Any], reason: RejectReason) -> None:
    good = span({c.ATTR_PROMPT_TOKENS: 10, c.ATTR_TENANT_ID: "t"})
    res = resolve_batch([span(attrs), good], CFG)
    assert res.rejected == 1
    assert [e.span_id for e in res.engine] == [good.span_id]
    assert len(res.errors) == 1
    assert reason.value in res.errors[0]


def test_error_request_id_and_latencies() -> None:
    assert one(span(status=c.OTLP_STATUS_ERROR)).error
    assert one(span({c.ATTR_PROMPT_TOKENS: 1, c.ATTR_ERROR_TYPE: "timeout"})).error
    assert not one(span(status=1)).error
    s = span()
    e = one(s)
    assert e.request_id == s.span_id
    assert (e.queue, e.prefill, e.decode, e.ttft, e.e2e) == (None, None, None, None, None)
    e = one(span({c.ATTR_PROMPT_TOKENS: 1, c.ATTR_LAT_DECODE: 2, c.ATTR_LAT_E2E: 2.5}))
    assert (e.decode, e.e2e) == (2.0, 2.5)
    assert (e.start_time, e.end_time) == (100.0, 101.0)


def test_engine_detection_by_name_or_marker_and_configurable() -> None:
    marked = span({c.ATTR_PROMPT_TOKENS: 1, c.ATTR_LAT_E2E: 1.0}, name="vllm.generate")
    unmarked = span({c.ATTR_PROMPT_TOKENS: 1}, name="vllm.generate")
    res = resolve_batch([marked, unmarked], CFG)
    assert [e.span_id for e in res.engine] == [marked.span_id]
    assert res.ignored == 1
    custom = ResolveConfig.from_settings(
        IngestSettings(engine_span_names=("vllm.generate",), tenant_keys=("org",), input_token_keys=("n_in",))
    )
    e = one(span({"n_in": 4, "org": "o1"}, name="vllm.generate"), custom)
    assert (e.prompt_tokens, e.tenant) == (4, "o1")


def test_hints_from_non_engine_spans() -> None:
    gw = span({c.ATTR_FAIRNESS_ID: "acme", c.ATTR_REQUEST_MODEL: "m1"}, name=c.SPAN_EPP_GATEWAY)
    pd = span({c.ATTR_EPP_PD_USED: "false"}, name=c.SPAN_EPP_PREPARE_PD)
    other_trace = "1" * 32
    sidecar = span({c.ATTR_SIDECAR_REQUEST_ID: "x"}, name=c.SPAN_SIDECAR_PREFILL, trace_id=other_trace)
    noise = span({"http.method": "POST"}, name="http")
    res = resolve_batch([gw, pd, sidecar, noise], CFG)
    assert res.engine == ()
    assert res.rejected == 0
    assert res.ignored == 1
    assert res.hints[TRACE] == TraceHints(TRACE, tenant="acme", model="m1", disaggregated=False)
    assert res.hints[other_trace] == TraceHints(other_trace, disaggregated=True)


def test_rejected_engine_span_still_gives_hints() -> None:
    res = resolve_batch([span({c.ATTR_TENANT_ID: "acme"})], CFG)
    assert res.rejected == 1
    assert res.hints[TRACE].tenant == "acme"
    assert res.ignored == 0
