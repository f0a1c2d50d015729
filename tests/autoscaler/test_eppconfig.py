"""Scorer-weight edits inside EndpointPickerConfig YAML: surgical, verified by re-parsing."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.eppconfig import (
    EppConfigError,
    edit_decider_threshold,
    edit_mapping,
    edit_weights,
    mapping_text,
    read_decider_threshold,
    read_weights,
)
from observer import conventions as c

BLOCK = """\
# header comment
schedulingProfiles:
  - name: prefill
    plugins:
      - pluginRef: prefill-filter
      - pluginRef: queue-scorer
        weight: 1      # keep me
  - name: decode
    plugins:
      - pluginRef: prefix-cache-scorer
        weight: "2"
      - pluginRef: queue-scorer
        weight: 1.5
      - pluginRef: load-aware-scorer
"""


AGREEING = BLOCK.replace("weight: 1.5", "weight: 1")  # queue-scorer 1 in both profiles


def test_read_weights_all_profiles_and_one_profile() -> None:
    assert read_weights(BLOCK, "decode") == {
        c.SCORER_PREFIX_CACHE: 2.0,
        c.SCORER_QUEUE: 1.5,
        c.SCORER_LOAD_AWARE: 1.0,
    }
    assert read_weights(BLOCK, "prefill") == {c.SCORER_QUEUE: 1.0}
    assert read_weights(AGREEING)[c.SCORER_QUEUE] == 1.0  # every profile, where they agree


def test_a_scorer_weighted_differently_per_profile_needs_the_profile_named() -> None:
    # the prefill profile's queue-scorer is 1, the decode profile's 1.5: neither read nor edit
    # may pick one and overwrite the other
    with pytest.raises(EppConfigError, match=r"queue-scorer has different weights .*epp\.profile"):
        read_weights(BLOCK)
    with pytest.raises(EppConfigError, match="different weights"):
        edit_weights(BLOCK, {c.SCORER_QUEUE: 2.0})
    with pytest.raises(EppConfigError, match=r"no scheduling profile 'decod' .*prefill, decode"):
        read_weights(BLOCK, "decod")


def test_edit_only_touches_the_scalars() -> None:
    out = edit_weights(BLOCK, {c.SCORER_QUEUE: 3.0}, profile="decode")
    assert out == BLOCK.replace("weight: 1.5", "weight: 3")
    out = edit_weights(AGREEING, {c.SCORER_QUEUE: 2.5})  # every profile, where they agree
    assert out == BLOCK.replace("weight: 1      #", "weight: 2.5      #").replace(
        "weight: 1.5", "weight: 2.5"
    )
    assert edit_weights(BLOCK, {c.SCORER_PREFIX_CACHE: 4}, "decode") == BLOCK.replace(
        'weight: "2"', "weight: 4"
    )


def test_refuses_what_it_cannot_edit_safely() -> None:
    with pytest.raises(EppConfigError, match="no explicit weight"):
        edit_weights(BLOCK, {c.SCORER_LOAD_AWARE: 2.0}, "decode")
    with pytest.raises(EppConfigError, match="not in the config"):
        edit_weights(BLOCK, {c.SCORER_SESSION_AFFINITY: 2.0}, "decode")
    with pytest.raises(EppConfigError, match="schedulingProfiles"):
        read_weights("plugins: []\n")
    with pytest.raises(EppConfigError, match="YAML"):
        read_weights("a: [\n")


@settings(max_examples=50, deadline=None)
@given(st.floats(0, 100, allow_nan=False).map(lambda x: round(x, 2)))
def test_round_trip(weight: float) -> None:
    out = edit_weights(BLOCK, {c.SCORER_PREFIX_CACHE: weight}, "decode")
    assert read_weights(out, "decode")[c.SCORER_PREFIX_CACHE] == weight
    before, after = yaml.safe_load(BLOCK), yaml.safe_load(out)
    after["schedulingProfiles"][1]["plugins"][0]["weight"] = "2"
    assert before == after


DECIDER = """\
apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins:
# the P/D decider: prefill locally below this many uncached tokens
- type: prefix-based-pd-decider   # keep me
  name: pd-decider
  parameters:
    nonCachedTokens: 16
- type: pd-profile-handler
  parameters: {deciderPluginName: pd-decider}
- {type: prefix-cache-scorer}
schedulingProfiles:
- name: decode
  plugins:
  - {pluginRef: prefix-cache-scorer, weight: 2}
"""


def test_read_decider_threshold() -> None:
    assert read_decider_threshold(DECIDER) == 16
    assert read_decider_threshold(BLOCK) is None  # no plugins list: no decider
    assert read_decider_threshold("plugins:\n- type: pd-profile-handler\n") is None
    # declared without the parameter: the EPP default, 0 (disaggregation off)
    assert read_decider_threshold(f"plugins:\n- type: {c.PD_DECIDER_PLUGIN}\n") == 0
    flow = '{"plugins": [{"type": "prefix-based-pd-decider", "parameters": {"nonCachedTokens": 256}}]}'
    assert read_decider_threshold(flow) == 256


@pytest.mark.parametrize(
    ("value", "message"),
    [('"16"', "not an integer"), ("16.5", "not an integer"), ("true", "not an integer"), ("-1", "negative")],
)
def test_read_decider_rejects_bad_values(value: str, message: str) -> None:
    with pytest.raises(EppConfigError, match=message):
        read_decider_threshold(DECIDER.replace("nonCachedTokens: 16", f"nonCachedTokens: {value}"))


def test_two_deciders_are_refused() -> None:
    two = DECIDER.replace("- {type: prefix-cache-scorer}", f"- {{type: {c.PD_DECIDER_PLUGIN}, name: other}}")
    with pytest.raises(EppConfigError, match="2 prefix-based-pd-decider plugins"):
        read_decider_threshold(two)
    with pytest.raises(EppConfigError, match="2 prefix-based-pd-decider plugins"):
        edit_decider_threshold(two, 32)


def test_edit_decider_touches_only_the_scalar() -> None:
    out = edit_decider_threshold(DECIDER, 512)
    assert out == DECIDER.replace("nonCachedTokens: 16", "nonCachedTokens: 512")
    assert read_decider_threshold(out) == 512
    assert read_weights(out) == read_weights(DECIDER)
    quoted = DECIDER.replace("nonCachedTokens: 16", "nonCachedTokens: 0x10")  # YAML 1.1 int
    assert edit_decider_threshold(quoted, 8) == DECIDER.replace("nonCachedTokens: 16", "nonCachedTokens: 8")


def test_edit_decider_refusals() -> None:
    with pytest.raises(EppConfigError, match="no prefix-based-pd-decider"):
        edit_decider_threshold(BLOCK, 32)
    bare = f"plugins:\n- type: {c.PD_DECIDER_PLUGIN}\n  name: pd\n"
    with pytest.raises(EppConfigError, match=r"no explicit parameters\.nonCachedTokens"):
        edit_decider_threshold(bare, 32)
    with pytest.raises(EppConfigError, match=r"no explicit parameters\.nonCachedTokens"):
        edit_decider_threshold(bare + "  parameters: {}\n", 32)
    with pytest.raises(EppConfigError, match="turns disaggregation off"):
        edit_decider_threshold(DECIDER, 0)
    with pytest.raises(EppConfigError, match="not an integer"):
        edit_decider_threshold(DECIDER.replace("nonCachedTokens: 16", 'nonCachedTokens: "16"'), 32)


_COMMENT = st.text(st.characters(categories=("L", "N", "P", "S", "Zs"), max_codepoint=0x2FF), max_size=30)


@settings(max_examples=60, deadline=None)
@given(tokens=st.integers(1, 10**7), old=st.integers(0, 10**7), comment=_COMMENT)
def test_decider_round_trip_keeps_every_other_byte(tokens: int, old: int, comment: str) -> None:
    text = DECIDER.replace("nonCachedTokens: 16", f"nonCachedTokens: {old}   # {comment}").replace(
        "# keep me", f"# {comment}"
    )
    assert read_decider_threshold(text) == old
    out = edit_decider_threshold(text, tokens)
    assert out == text.replace(f"nonCachedTokens: {old}   #", f"nonCachedTokens: {tokens}   #")
    assert read_decider_threshold(out) == tokens


@settings(max_examples=40, deadline=None)
@given(tokens=st.integers(1, 10**6), weight=st.floats(0, 50, allow_nan=False).map(lambda x: round(x, 2)))
def test_mapping_edits_as_kserve_inline_holds_it(tokens: int, weight: float) -> None:
    doc = yaml.safe_load(DECIDER)
    new = edit_mapping(doc, lambda t: edit_decider_threshold(t, tokens))
    new = edit_mapping(new, lambda t: edit_weights(t, {c.SCORER_PREFIX_CACHE: weight}))
    assert read_decider_threshold(mapping_text(new)) == tokens
    assert read_weights(mapping_text(new)) == {c.SCORER_PREFIX_CACHE: weight}
    new["plugins"][0]["parameters"]["nonCachedTokens"] = 16
    new["schedulingProfiles"][0]["plugins"][0]["weight"] = 2
    assert new == doc  # nothing else moved
    with pytest.raises(EppConfigError, match="not a mapping"):
        edit_mapping("plugins: []", lambda t: t)  # type: ignore[arg-type]


# -- hostile or unusual but legal YAML --------------------------------------------------------
ONE = "schedulingProfiles:\n- name: decode\n  plugins:\n  - pluginRef: queue-scorer\n    weight: {w}\n"


def test_an_anchored_weight_is_refused_not_a_crash() -> None:
    # rewriting `&w 2` dropped the anchor its alias needs: PyYAML's ComposerError (not an
    # EppConfigError) escaped the edit, and with it the controller's tick
    shared = (
        "schedulingProfiles:\n- name: decode\n  plugins:\n"
        "  - {pluginRef: prefix-cache-scorer, weight: &w 2}\n"
        "  - {pluginRef: queue-scorer, weight: *w}\n"
    )
    assert read_weights(shared) == {c.SCORER_PREFIX_CACHE: 2.0, c.SCORER_QUEUE: 2.0}  # reading is fine
    for weights in ({c.SCORER_QUEUE: 3}, {c.SCORER_PREFIX_CACHE: 3, c.SCORER_QUEUE: 3}):
        with pytest.raises(EppConfigError, match=r"weight of .* at line 4 carries a YAML anchor"):
            edit_weights(shared, weights)
    tagged = DECIDER.replace("nonCachedTokens: 16", "nonCachedTokens: !!int &n 16\n    other: *n")
    assert read_decider_threshold(tagged) == 16
    with pytest.raises(EppConfigError, match="nonCachedTokens at line 8 carries a YAML anchor"):
        edit_decider_threshold(tagged, 32)


def test_alias_bombs_and_deep_nesting_are_refused_quickly() -> None:
    import time

    # "billion laughs": ~500 bytes, 10^9 nodes expanded; the edit's round-trip comparison of
    # the two loaded documents walked all of them (~7x longer per level: seconds here, hours
    # at 12 levels)
    lol = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 10) + "]\n" for i in range(8)
    )
    started = time.monotonic()
    with pytest.raises(EppConfigError, match="more than 1000000 nodes once its aliases are expanded"):
        edit_weights(lol + ONE.format(w=1), {c.SCORER_QUEUE: 2})
    with pytest.raises(EppConfigError, match="more than 1000000 nodes"):
        read_decider_threshold(lol + ONE.format(w=1))
    assert time.monotonic() - started < 1.0
    # a recursive alias: the loaded document contains itself (RecursionError on comparison)
    with pytest.raises(EppConfigError, match="recursive alias at line 1"):
        edit_weights("x: &a [*a]\n" + ONE.format(w=1), {c.SCORER_QUEUE: 2})
    # nesting past Python's recursion limit (RecursionError out of PyYAML's composer)
    with pytest.raises(EppConfigError, match="nested too deeply"):
        read_weights("x: " + "[" * 3000 + "]" * 3000 + "\n" + ONE.format(w=1))
    # a shared anchor elsewhere in a normal-sized config is fine
    shared = "defaults: &d {a: 1}\nx: *d\n" + ONE.format(w=1)
    assert edit_weights(shared, {c.SCORER_QUEUE: 2}) == shared.replace("weight: 1", "weight: 2")


def test_duplicate_and_merge_keys_are_refused_not_misread() -> None:
    # a duplicate `weight` read as its first value (1), while PyYAML loads the last (5) and
    # the EPP's Go decoder refuses the document; the edit then failed as "did not round-trip"
    dup = ONE.format(w="1\n    weight: 5")
    with pytest.raises(EppConfigError, match="duplicate key 'weight' at line 6"):
        read_weights(dup)
    with pytest.raises(EppConfigError, match="duplicate key 'weight'"):
        edit_weights(dup, {c.SCORER_QUEUE: 2})
    with pytest.raises(EppConfigError, match="duplicate key 'nonCachedTokens'"):
        read_decider_threshold(
            DECIDER.replace("nonCachedTokens: 16", "nonCachedTokens: 16\n    nonCachedTokens: 8")
        )
    # a weight merged in with `<<` read as the default 1 (the EPP sees 3)
    merged = "x: &d {weight: 3}\n" + ONE.format(w=1).replace("    weight: 1\n", "    <<: *d\n")
    with pytest.raises(EppConfigError, match="merge key << at line 6 is not supported"):
        read_weights(merged)


@pytest.mark.parametrize("weight", ["nan", "inf", "-inf", "-3", "'-0.5'"])
def test_a_weight_that_is_not_a_finite_non_negative_number_is_refused(weight: str) -> None:
    # they were read as NaN / inf / negative weights and handed to the policy
    with pytest.raises(EppConfigError, match="weight of queue-scorer is not a finite number >= 0"):
        read_weights(ONE.format(w=weight))
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(EppConfigError, match="weights must be finite numbers >= 0"):
            edit_weights(ONE.format(w=1), {c.SCORER_QUEUE: bad})


def test_plugins_referenced_by_name_are_keyed_by_their_type() -> None:
    # `pluginRef` names a plugin of the top-level list (its `name`, else its `type`): the
    # scorers were keyed by the instance name, so `prefix-cache-scorer` was "not in the config"
    # and an unweighted `q` (a queue-scorer, default weight 1) was left out
    named = (
        "plugins:\n- type: prefix-cache-scorer\n  name: prefix\n- {type: queue-scorer, name: q}\n"
        "- type: kv-cache-utilization-scorer\n"
        "schedulingProfiles:\n- name: decode\n  plugins:\n  - pluginRef: prefix\n    weight: 2  # cache\n"
        "  - pluginRef: q\n  - {pluginRef: kv-cache-utilization-scorer, weight: 1}\n"
    )
    assert read_weights(named) == {
        c.SCORER_PREFIX_CACHE: 2.0,
        c.SCORER_QUEUE: 1.0,
        c.SCORER_KV_UTILIZATION: 1.0,
    }
    out = edit_weights(named, {c.SCORER_PREFIX_CACHE: 4, c.SCORER_KV_UTILIZATION: 0.5})
    assert out == named.replace("weight: 2  #", "weight: 4  #").replace("weight: 1}", "weight: 0.5}")
    with pytest.raises(EppConfigError, match="queue-scorer has no explicit weight"):
        edit_weights(named, {c.SCORER_QUEUE: 2})
    new = edit_mapping(yaml.safe_load(named), lambda t: edit_weights(t, {c.SCORER_PREFIX_CACHE: 3}))
    assert new["schedulingProfiles"][0]["plugins"][0] == {"pluginRef": "prefix", "weight": 3}


def test_crlf_bom_unicode_and_flow_style_keep_every_other_byte() -> None:
    crlf = DECIDER.replace("\n", "\r\n")
    assert edit_decider_threshold(crlf, 64) == crlf.replace("nonCachedTokens: 16", "nonCachedTokens: 64")
    text = "\ufeff# réglé 🎉\r\n" + ONE.format(w="1   # 权重 🎉").replace("\n", "\r\n")
    assert edit_weights(text, {c.SCORER_QUEUE: 2.5}) == text.replace("weight: 1 ", "weight: 2.5 ")
    flow = '{"schedulingProfiles": [{"name": "d", "plugins": [{"pluginRef": "queue-scorer", "weight": 1}]}]}'
    assert edit_weights(flow, {c.SCORER_QUEUE: 7}) == flow.replace('"weight": 1', '"weight": 7')
