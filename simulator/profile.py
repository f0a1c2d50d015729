"""Fleet profiles: every physical parameter of the twin, loaded from a documented YAML file.

`load_profile()` reads `simulator/profiles/<name>.yaml` (default `default`) or a path, merges
optional overrides (scenarios use them) and validates. Pure apart from reading the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from observer import conventions as c

PROFILES_DIR = Path(__file__).with_name("profiles")


@dataclass(frozen=True, slots=True)
class PrefillProfile:
    """Batched prefill: step time = step_overhead_s + seconds_per_token * uncached tokens."""

    replicas: int = 4
    step_overhead_s: float = 0.015
    seconds_per_token: float = 2.5e-5
    max_batched_tokens: int = 16384


@dataclass(frozen=True, slots=True)
class DecodeProfile:
    """Continuous batching: step = overhead + per_seq * batch + per_kv_token * resident KV."""

    replicas: int = 4
    step_overhead_s: float = 0.012
    seconds_per_seq: float = 1.5e-4
    seconds_per_kv_token: float = 1.0e-8
    max_num_seqs: int = 256
    kv_capacity_tokens: int = 400_000
    local_prefill_seconds_per_token: float = 2.5e-5


@dataclass(frozen=True, slots=True)
class CacheProfile:
    """Per-pod tiered prefix cache, in blocks of `Profile.block_tokens` tokens."""

    hbm_blocks: int = 800
    dram_blocks: int = 4000
    disk_blocks: int = 16000
    decode_hbm_blocks: int = 400
    decode_dram_blocks: int = 2000
    decode_disk_blocks: int = 0
    dram_load_bytes_per_s: float = 8e9
    disk_load_bytes_per_s: float = 2e9


@dataclass(frozen=True, slots=True)
class EppProfile:
    """Endpoint Picker: scorer weights, restart delay for a weight change, P/D decider."""

    weights: Mapping[str, float] = field(
        default_factory=lambda: {
            c.SCORER_PREFIX_CACHE: 2.0,
            c.SCORER_QUEUE: 1.0,
            c.SCORER_KV_UTILIZATION: 1.0,
        }
    )
    restart_delay_s: float = 30.0
    non_cached_tokens: int = 512
    routing_overhead_s: float = 0.002


@dataclass(frozen=True, slots=True)
class Profile:
    """Everything physical about one model pool."""

    name: str = "default"
    model: str = "meta-llama/Llama-3.1-8B-Instruct"
    pool: str = "llama-8b"
    block_tokens: int = 512
    kv_bytes_per_token: int = 131_072
    nixl_bytes_per_s: float = 25e9
    cold_start_s: float = 90.0
    sample_interval_s: float = 5.0
    kv_events: bool = True
    kv_event_buffer: int = 100_000
    prefill: PrefillProfile = field(default_factory=PrefillProfile)
    decode: DecodeProfile = field(default_factory=DecodeProfile)
    cache: CacheProfile = field(default_factory=CacheProfile)
    epp: EppProfile = field(default_factory=EppProfile)

    def __post_init__(self) -> None:
        _validate(self)


T = TypeVar("T")


def _build(cls: type[T], data: Mapping[str, Any], where: str) -> T:
    assert is_dataclass(cls)
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"profile: unknown key(s) {unknown} in {where or 'top level'}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        f = known[name]
        sub = {
            "prefill": PrefillProfile,
            "decode": DecodeProfile,
            "cache": CacheProfile,
            "epp": EppProfile,
        }.get(name)
        if sub is not None and cls is Profile:
            if not isinstance(value, Mapping):
                raise ValueError(f"profile: `{name}` must be a mapping")
            kwargs[name] = _build(sub, value, name)
        elif f.name == "weights":
            kwargs[name] = {str(k): float(v) for k, v in dict(value).items()}
        else:
            kwargs[name] = value
    return cls(**kwargs)


def _validate(p: Profile) -> None:
    positive = {
        "block_tokens": p.block_tokens,
        "kv_bytes_per_token": p.kv_bytes_per_token,
        "nixl_bytes_per_s": p.nixl_bytes_per_s,
        "sample_interval_s": p.sample_interval_s,
        "prefill.seconds_per_token": p.prefill.seconds_per_token,
        "prefill.max_batched_tokens": p.prefill.max_batched_tokens,
        "decode.max_num_seqs": p.decode.max_num_seqs,
        "decode.kv_capacity_tokens": p.decode.kv_capacity_tokens,
        "cache.dram_load_bytes_per_s": p.cache.dram_load_bytes_per_s,
        "cache.disk_load_bytes_per_s": p.cache.disk_load_bytes_per_s,
    }
    for name, value in positive.items():
        if not value > 0:
            raise ValueError(f"profile: `{name}` must be > 0 (got {value})")
    non_negative = {
        "prefill.replicas": p.prefill.replicas,
        "decode.replicas": p.decode.replicas,
        "cold_start_s": p.cold_start_s,
        "epp.restart_delay_s": p.epp.restart_delay_s,
        "cache.hbm_blocks": p.cache.hbm_blocks,
        "cache.dram_blocks": p.cache.dram_blocks,
        "cache.disk_blocks": p.cache.disk_blocks,
    }
    for name, value in non_negative.items():
        if value < 0:
            raise ValueError(f"profile: `{name}` must be >= 0 (got {value})")
    if p.decode.replicas < 1:
        raise ValueError("profile: `decode.replicas` must be >= 1")
    if any(w < 0 for w in p.epp.weights.values()):
        raise ValueError("profile: scorer weights must be >= 0")


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge (overrides win); used for scenario-specific profile tweaks."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def profile_from_dict(data: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> Profile:
    """Build and validate a Profile from plain data."""
    return _build(Profile, merge(data, overrides or {}), "")


def load_profile(name_or_path: str | Path = "default", overrides: Mapping[str, Any] | None = None) -> Profile:
    """Load a bundled profile by name (`default`) or a YAML file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ValueError(f"profile not found: {path}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, Mapping):
        raise ValueError(f"profile {path}: top level must be a mapping")
    return profile_from_dict(data, overrides)
