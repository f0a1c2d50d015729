"""The pd-observer variant a benchmark command runs: `--warm-hold S` and `--tune FIELD=VALUE`,
shared by `benchmarks.control.run` and `benchmarks.control.trace` so an A/B in the docs is one
command on either."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from typing import Annotated, Any

from pydantic import TypeAdapter, ValidationError

from autoscaler.settings import WARM_START_HOLD_SECONDS, PoolSettings
from autoscaler.types import PoolConfig


@dataclass(frozen=True, slots=True)
class Variant:
    """pd-observer's warm-start hold (None = the product's default, `autoscaler.warm_start_hold_seconds`)
    and replaced PoolConfig fields."""

    warm_hold: float | None = None
    tune: tuple[tuple[str, float | int | None], ...] = ()

    @property
    def tune_map(self) -> dict[str, Any] | None:
        return dict(self.tune) or None

    def label(self) -> str:
        """`warm_hold=240 cache_spill_target=none`, or `default`."""
        parts = [] if self.warm_hold is None else [f"warm_hold={self.warm_hold:g}"]
        parts += [f"{k}={'none' if v is None else f'{v:g}'}" for k, v in self.tune]
        return " ".join(parts) or "default"


DEFAULT = Variant()


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--warm-hold",
        type=float,
        metavar="S",
        help=f"pd-observer's warm-start hold in s (default: the product's, {WARM_START_HOLD_SECONDS:g}; "
        "300 = its whole scale-down window)",
    )
    ap.add_argument(
        "--tune",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="replace a number field of pd-observer's PoolConfig (repeatable; 'none' turns a floor "
        "off), e.g. --tune decode_kv_target=none",
    )


def from_args(args: argparse.Namespace) -> Variant:
    """The variant of parsed `add_arguments` options; ValueError (one line) on a bad one."""
    if args.warm_hold is not None and args.warm_hold < 0:
        raise ValueError(f"--warm-hold must be ≥ 0, got {args.warm_hold:g}")
    tune = dict(_tune(t) for t in args.tune)
    types = {f.name: str(f.type) for f in fields(PoolConfig)}
    unknown = sorted(set(tune) - set(types))
    if unknown:
        raise ValueError(f"--tune: not a PoolConfig field: {', '.join(unknown)}")
    other = sorted(k for k in tune if not types[k].startswith(("float", "int")))
    if other:
        raise ValueError(f"--tune: not a number field of PoolConfig: {', '.join(other)}")
    fractional = sorted(
        k for k, v in tune.items() if types[k].startswith("int") and v is not None and v != int(v)
    )
    if fractional:
        raise ValueError(f"--tune: a whole number is needed for: {', '.join(fractional)}")
    tune = {k: int(v) if v is not None and types[k].startswith("int") else v for k, v in tune.items()}
    required = sorted(k for k, v in tune.items() if v is None and "None" not in types[k])
    if required:
        raise ValueError(f"--tune: cannot be turned off ('none'): {', '.join(required)}")
    for k, v in tune.items():
        _check_range(k, v)
    return Variant(args.warm_hold, tuple(tune.items()))


def _check_range(name: str, value: float | None) -> None:
    """The bounds a config file's `autoscaler.pools[*].<name>` has (`PoolSettings`), so a
    variant cannot run a policy no configuration could."""
    field = PoolSettings.model_fields.get(name)
    if field is None or value is None:
        return
    try:
        TypeAdapter(Annotated[field.annotation, *field.metadata]).validate_python(value)
    except ValidationError as exc:
        msg = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise ValueError(f"--tune {name}={value:g}: {msg}") from None


def _tune(text: str) -> tuple[str, float | None]:
    """`FIELD=VALUE` of --tune: a number, or `none`."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--tune takes FIELD=VALUE, got {text!r}")
    if value.strip().lower() == "none":
        return key, None
    try:
        return key, float(value)
    except ValueError:
        raise ValueError(f"--tune {key}: {value!r} is not a number or 'none'") from None
