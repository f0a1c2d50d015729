"""The base of every settings section (observer, sources, signals, autoscaler): unknown keys
refused, frozen, finite numbers only, and no `true`/`false` where a number is expected.

Pydantic's lax mode reads a YAML or JSON `true` as the number 1 (`server.port: true` listened on
port 1, an SLO threshold of `true` was 1 s). Strict mode would also refuse the strings that the
environment variables give (`PD_OBSERVER_SERVER__PORT=9090`), so only booleans are refused, and
only in fields whose type has no `bool` in it.
"""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


def _admits_bool(annotation: Any) -> bool:
    """Whether a value of this type may be a bool: `bool`, `Any`, or a type holding either, or a
    model (which checks its own fields)."""
    if annotation is bool or annotation is Any:
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_admits_bool(a) for a in get_args(annotation) if not isinstance(a, str | int | float))


def _holds_bool(value: object) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, list | tuple | set | frozenset):
        return any(_holds_bool(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_bool(v) for v in value.values())
    return False


class Section(BaseModel):
    # no .inf / .nan in any number: `gt=0` lets .inf through (a grace of .inf crashed serve)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_number(cls, value: object, info: ValidationInfo) -> object:
        if info.field_name is None or not _holds_bool(value):
            return value
        annotation = cls.model_fields[info.field_name].annotation
        if not _admits_bool(annotation):
            raise ValueError("expected a number or text, not true/false")
        return value
