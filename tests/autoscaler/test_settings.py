"""AutoscalerSettings: parsing from observer Settings, defaults, cross-field validation."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from autoscaler.settings import from_settings, parse
from observer import conventions as c
from observer.config import ConfigError, load_settings


def pool(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "llama",
        "namespace": "llm",
        "prefill": {"target": {"name": "llama-prefill"}, "max": 6, "gpus_per_replica": 1},
        "decode": {"target": {"kind": "LeaderWorkerSet", "name": "llama-decode"}, "gpus_per_replica": 2},
        "gpu_budget": 12,
    }
    base.update(kw)
    return base


def test_from_observer_settings_builds_the_policy_config(tmp_path: Any) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "autoscaler:\n  mode: dry-run\n  pools:\n  - name: llama\n    prefill: {target: {name: p}}\n"
        "    decode: {target: {name: d}, min: 2}\n"
    )
    s = from_settings(load_settings(cfg, env={}))
    assert s.mode == "dry-run"
    assert s.field_manager == c.K8S_FIELD_MANAGER
    pc = s.policy_config().pools["llama"]
    assert pc.roles[c.ROLE_DECODE].min_replicas == 2
    assert pc.scale_down_window_seconds == 300.0
    assert s.retry.backoff_seconds == (0.5, 1.0, 2.0, 4.0)
    # the decider lever and the fleet budget: documented defaults reach the policy config
    assert pc.decider.enabled
    assert pc.decider.max_decode_share == 0.25
    assert pc.decider.baseline_tokens is None
    assert s.policy_config().gpu_budget is None
    # the cache-residency floor is on by default
    assert (pc.cache_spill_target, pc.cache_settle_seconds, pc.cache_spill_smoothing) == (0.05, 120.0, 0.3)


def test_cache_residency_settings_reach_the_policy_and_null_turns_it_off() -> None:
    on = parse({"pools": [pool(cache_spill_target=0.1, cache_settle_seconds=60, cache_spill_smoothing=1)]})
    pc = on.policy_config().pools["llama"]
    assert (pc.cache_spill_target, pc.cache_settle_seconds, pc.cache_spill_smoothing) == (0.1, 60.0, 1.0)
    off = parse({"pools": [pool(cache_spill_target=None, decode_kv_target=None)]})
    assert off.policy_config().pools["llama"].cache_spill_target is None
    assert off.policy_config().pools["llama"].decode_kv_target is None
    assert parse({"pools": [pool()]}).policy_config().pools["llama"].decode_kv_target == 0.9


def test_queueing_floor_setting_reaches_the_policy_and_null_turns_it_off() -> None:
    def share(**kw: Any) -> float | None:
        return parse({"pools": [pool(**kw)]}).policy_config().pools["llama"].prefill_wait_share

    assert share() == 0.25
    assert share(prefill_wait_share=0.1) == 0.1
    assert share(prefill_wait_share=None) is None
    with pytest.raises(ConfigError, match="prefill_wait_share"):
        parse({"pools": [pool(prefill_wait_share=0)]})


def test_fleet_budget_and_decider_settings_reach_the_policy() -> None:
    s = parse(
        {
            "gpu_budget": 9,
            "pools": [pool(gpu_budget=None, decider={"baseline_tokens": 256, "max_decode_share": 0.5})],
        }
    )
    cfg = s.policy_config()
    assert cfg.gpu_budget == 9
    assert (cfg.pools["llama"].decider.baseline_tokens, cfg.pools["llama"].decider.max_decode_share) == (
        256,
        0.5,
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"pools": [pool(gpu_budget=2)]}, "minimum replicas need 3 GPUs"),
        ({"pools": [pool(), pool()]}, "duplicate pool names"),
        ({"pools": [pool(prefill={"target": {"name": "x"}, "min": 5, "max": 2})]}, "min (5) > max (2)"),
        (
            {"pools": [pool(decode={"target": {"kind": "CustomResource", "name": "x"}})]},
            "needs group, version",
        ),
        ({"mode": "yolo"}, "autoscaler.mode"),
        ({"pools": [pool(weights={"bounds": {"queue-scorer": [3, 1]}})]}, "low <= high"),
        ({"gpu_budget": 5, "pools": [pool(), pool(name="b")]}, "need 6 GPUs > gpu_budget 5"),
        ({"pools": [pool(decider={"max_decode_share": 1.5})]}, "max_decode_share"),
        ({"pools": [pool(decider={"baseline_tokens": 0})]}, "baseline_tokens"),
        ({"pools": [pool(cache_spill_target=1.0)]}, "cache_spill_target"),
        ({"pools": [pool(cache_spill_smoothing=0)]}, "cache_spill_smoothing"),
        (
            {"pools": [pool(decode={"target": {"kind": "LLMInferenceService", "name": "x"}})]},
            "LLMInferenceService owns both roles",
        ),
        ({"lease": {"duration_seconds": 15}}, "lease.duration_seconds (15) must be at least 2 x interval"),
        ({"retry": {"max_retry_after_seconds": -1}}, "max_retry_after_seconds"),
    ],
)
def test_bad_config_is_one_clear_line(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match="invalid configuration: autoscaler") as err:
        parse(raw)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_lease_duration_defaults_to_four_intervals_and_retry_after_cap_reaches_the_loop() -> None:
    assert parse({}).lease_duration_seconds == 60.0
    assert parse({"interval_seconds": 30}).lease_duration_seconds == 120.0
    assert parse({"interval_seconds": 30, "lease": {"duration_seconds": 90}}).lease_duration_seconds == 90.0
    policy = parse({"retry": {"backoff_seconds": [1, 2], "max_retry_after_seconds": 5}}).retry_policy()
    assert (policy.backoff_seconds, policy.max_retry_after_seconds) == ((1.0, 2.0), 5.0)


def test_every_config_example_in_the_docs_loads() -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "autoscaler.md"
    blocks = re.findall(r"```yaml\n(autoscaler:\n.*?)```", docs.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 3
    for block in blocks:
        parse(yaml.safe_load(block)["autoscaler"])  # raises ConfigError naming the field
