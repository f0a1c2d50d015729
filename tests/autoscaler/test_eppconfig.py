"""Scorer-weight edits inside EndpointPickerConfig YAML: surgical, verified by re-parsing."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.eppconfig import EppConfigError, edit_weights, read_weights
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


def test_read_weights_all_profiles_and_one_profile() -> None:
    assert read_weights(BLOCK) == {c.SCORER_QUEUE: 1.0, c.SCORER_PREFIX_CACHE: 2.0, c.SCORER_LOAD_AWARE: 1.0}
    assert read_weights(BLOCK, "decode")[c.SCORER_QUEUE] == 1.5


def test_edit_only_touches_the_scalars() -> None:
    out = edit_weights(BLOCK, {c.SCORER_QUEUE: 3.0}, profile="decode")
    assert out == BLOCK.replace("weight: 1.5", "weight: 3")
    out = edit_weights(BLOCK, {c.SCORER_QUEUE: 2.5})
    assert out == BLOCK.replace("weight: 1      #", "weight: 2.5      #").replace(
        "weight: 1.5", "weight: 2.5"
    )
    assert edit_weights(BLOCK, {c.SCORER_PREFIX_CACHE: 4}) == BLOCK.replace('weight: "2"', "weight: 4")


def test_refuses_what_it_cannot_edit_safely() -> None:
    with pytest.raises(EppConfigError, match="no explicit weight"):
        edit_weights(BLOCK, {c.SCORER_LOAD_AWARE: 2.0})
    with pytest.raises(EppConfigError, match="not in the config"):
        edit_weights(BLOCK, {c.SCORER_SESSION_AFFINITY: 2.0})
    with pytest.raises(EppConfigError, match="schedulingProfiles"):
        read_weights("plugins: []\n")
    with pytest.raises(EppConfigError, match="YAML"):
        read_weights("a: [\n")


@settings(max_examples=50, deadline=None)
@given(st.floats(0, 100, allow_nan=False).map(lambda x: round(x, 2)))
def test_round_trip(weight: float) -> None:
    out = edit_weights(BLOCK, {c.SCORER_PREFIX_CACHE: weight})
    assert read_weights(out, "decode")[c.SCORER_PREFIX_CACHE] == weight
    before, after = yaml.safe_load(BLOCK), yaml.safe_load(out)
    after["schedulingProfiles"][1]["plugins"][0]["weight"] = "2"
    assert before == after
