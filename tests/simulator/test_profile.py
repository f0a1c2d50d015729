import pytest

from observer import conventions as c
from simulator.profile import load_profile, profile_from_dict


def test_default_profile_is_plausible() -> None:
    p = load_profile()
    assert 10_000 <= 1.0 / p.prefill.seconds_per_token <= 100_000  # tok/s per replica
    step = p.decode.step_overhead_s + 32 * p.decode.seconds_per_seq + 100_000 * p.decode.seconds_per_kv_token
    assert 0.015 <= step <= 0.040
    assert 60 <= p.cold_start_s <= 120
    assert set(p.epp.weights) <= {c.SCORER_PREFIX_CACHE, c.SCORER_QUEUE, c.SCORER_KV_UTILIZATION}


def test_overrides_and_validation() -> None:
    p = load_profile("default", {"cache": {"hbm_blocks": 7}, "prefill": {"replicas": 1}})
    assert (p.cache.hbm_blocks, p.prefill.replicas, p.decode.replicas) == (7, 1, 4)
    with pytest.raises(ValueError, match="unknown key"):
        profile_from_dict({"cache": {"hbm": 1}})
    with pytest.raises(ValueError, match="must be > 0"):
        profile_from_dict({"nixl_bytes_per_s": 0})
    with pytest.raises(ValueError, match="not found"):
        load_profile("no-such-profile")
