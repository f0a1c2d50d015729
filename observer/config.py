"""Settings: one pydantic model, defaults documented in docs/configuration.md.

Sources, highest precedence first: explicit overrides (CLI flags), `PD_OBSERVER_*` environment
variables (nested with `__`, e.g. `PD_OBSERVER_SERVER__PORT=9090`), the YAML file given with
`--config`, then the defaults below. The environment is read when `load_settings` is called,
never at import.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.exceptions import SettingsError

from observer import conventions as c
from observer.model import SloSpec
from observer.sections import Section


class ConfigError(Exception):
    """Invalid configuration; the message is one line naming the bad field."""


# After `server.shutdown_grace_seconds`, the time a stopping `serve` or `autoscale` has left for
# its last steps (the exit log); a process still running then exits at once, status 1.
SHUTDOWN_EXIT_MARGIN_SECONDS = 2.0


class ServerSettings(Section):
    host: str = Field("0.0.0.0", description="listen address")
    port: int = Field(8080, ge=0, le=65535, description="one port for OTLP ingest, API and /metrics")
    auth_token: str | None = Field(
        None,
        description="Bearer token required on ingest, API, /metrics and /openapi.json when set "
        "(then /docs and /redoc are not served); /healthz, /readyz stay open. Surrounding "
        "whitespace is dropped; empty or with inner whitespace is refused",
    )
    max_body_bytes: int = Field(16 * 1024 * 1024, gt=0, description="cap on the compressed request body")
    max_decompressed_bytes: int = Field(64 * 1024 * 1024, gt=0, description="cap after gunzip (413)")
    max_inflight_body_bytes: int = Field(
        256 * 1024 * 1024,
        gt=0,
        description="request body bytes held at once over all requests (uploading or being "
        "processed); a chunk past it is answered 429 with Retry-After",
    )

    @field_validator("auth_token")
    @classmethod
    def _token(cls, v: str | None) -> str | None:
        if v is None:
            return None
        v = v.strip()
        if not v or any(ch.isspace() for ch in v):
            raise ValueError("must be a non-empty token without whitespace (unset it to turn auth off)")
        return v

    ingest_queue_size: int = Field(64, gt=0, description="OTLP batches waiting to be written; 429 past it")
    max_queued_spans: int = Field(
        131072,
        gt=0,
        description=(
            "engine spans decoded and waiting to be written, over all queued batches (what bounds "
            "their memory and their wait for the writer); a batch past it is answered "
            "429 with Retry-After, except into an empty queue"
        ),
    )
    retry_after_seconds: int = Field(2, ge=1, description="Retry-After sent with 429/503")
    decode_workers: int = Field(2, ge=1, description="threads decoding OTLP bodies off the event loop")
    shutdown_grace_seconds: float = Field(
        10.0,
        ge=0,
        description="on SIGTERM: time to write the batches already accepted (those left are "
        "answered 503) and to stop the autoscaler (its lease released); the process exits by "
        "this + 2 s, so keep it 2 s under the pod's terminationGracePeriodSeconds",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="JSON log level")
    gc_gen0_threshold: int = Field(
        50_000,
        ge=0,
        description="Python cyclic-GC generation-0 threshold for `serve` (CPython's default 700 costs "
        "~0.5 µs/span on ingest); startup objects are frozen out of the GC; 0 keeps the interpreter's",
    )


class IngestSettings(Section):
    engine_span_names: tuple[str, ...] = Field(
        c.DEFAULT_ENGINE_SPAN_NAMES, description="span names that are vLLM engine spans"
    )
    engine_marker_attribute: str = Field(
        c.DEFAULT_ENGINE_MARKER_ATTR, description="any span with it is an engine span"
    )
    tenant_keys: tuple[str, ...] = Field(
        c.DEFAULT_TENANT_KEYS, description="tenant attribute keys, first found wins (span, resource, trace)"
    )
    model_keys: tuple[str, ...] = Field(
        c.DEFAULT_MODEL_KEYS, description="model attribute keys, first found wins"
    )
    pod_keys: tuple[str, ...] = Field(c.DEFAULT_POD_KEYS, description="resource keys naming the pod")
    role_keys: tuple[str, ...] = Field(
        c.DEFAULT_ROLE_KEYS, description="resource keys naming the P/D role (then service.name suffix)"
    )
    input_token_keys: tuple[str, ...] = Field(
        c.DEFAULT_INPUT_TOKEN_KEYS, description="prompt token count keys"
    )
    output_token_keys: tuple[str, ...] = Field(
        c.DEFAULT_OUTPUT_TOKEN_KEYS, description="output token count keys"
    )
    max_pending_traces: int = Field(100_000, gt=0, description="traces held waiting for a P/D partner")
    pending_timeout_seconds: float = Field(30.0, gt=0, description="flush a P/D half after this long")
    replica_id: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        description=("name on the P/D halves this replica holds; default: the hostname (the pod name)"),
    )
    replica_gone_after_seconds: float = Field(
        60.0, gt=0, description="a replica with no heartbeat this long is gone: others take its P/D halves"
    )
    max_spans_per_batch: int = Field(100_000, gt=0, description="spans in one OTLP request; more is 413")
    max_clock_skew_seconds: float = Field(
        300.0,
        gt=0,
        allow_inf_nan=False,
        description="an engine span ending more than this after the receiver's clock is rejected",
    )


class AggregationSettings(Section):
    windows_seconds: tuple[Annotated[int, Field(gt=0)], ...] = Field(
        (60, 300, 3600),
        min_length=1,
        description="windows exported as gauges; the longest bounds API windows",
    )
    fine_bucket_seconds: int = Field(10, gt=0, description="bucket width for windows up to fine_horizon")
    fine_horizon_seconds: int = Field(300, gt=0, description="windows up to this use fine buckets")
    coarse_bucket_seconds: int = Field(60, gt=0, description="bucket width for longer windows")
    max_tenants: int = Field(1000, gt=0, description="tenants tracked individually; the rest fold to `other`")
    max_models: int = Field(100, gt=0, description="models tracked individually; the rest fold to `other`")
    sketch_relative_accuracy: float = Field(
        0.005, gt=0, lt=0.05, description="quantile sketch relative accuracy"
    )
    sketch_max_bins: int = Field(2048, ge=64, description="sketch bin cap (lowest bins collapse past it)")

    @property
    def max_window_seconds(self) -> int:
        return max(self.windows_seconds)

    @model_validator(mode="after")
    def _check(self) -> AggregationSettings:
        if self.fine_horizon_seconds % self.fine_bucket_seconds:
            raise ValueError("fine_horizon_seconds must be a multiple of fine_bucket_seconds")
        if self.coarse_bucket_seconds % self.fine_bucket_seconds:
            raise ValueError("coarse_bucket_seconds must be a multiple of fine_bucket_seconds")
        return self


class StoreSettings(Section):
    url: str = Field(
        "sqlite:///pd-observer.db", description="SQLAlchemy URL; postgresql+psycopg://... for production"
    )
    record_retention_seconds: int = Field(
        24 * 3600, gt=0, description="how long raw request records are kept"
    )
    rollup_retention_seconds: int = Field(
        30 * 24 * 3600, gt=0, description="how long per-minute rollups are kept"
    )
    maintenance_interval_seconds: float = Field(60.0, gt=0, description="rollup + retention job period")
    write_batch_max: int = Field(32, gt=0, description="OTLP batches grouped into one transaction")
    group_commit_max_wait_ms: float = Field(
        50.0,
        ge=0,
        description=(
            "group commit linger: while more OTLP batches are being decoded, the writer waits up to "
            "this long (from taking the first batch) for them to join the transaction; never waits "
            "when nothing else is in flight (light load); 0 disables"
        ),
    )
    group_commit_max_spans: int = Field(
        16_384,
        gt=0,
        description=(
            "engine spans (each gives at most one record) per transaction above which the writer "
            "stops adding batches to a group"
        ),
    )
    write_timeout_seconds: float = Field(
        5.0,
        ge=0,
        description=(
            "an OTLP batch not committed within this is answered 503 with Retry-After (a copy "
            "written meanwhile is not counted twice), and /readyz is 503 while a write runs longer; "
            "0: no limit"
        ),
    )


_SURROGATE = re.compile("[\ud800-\udfff]")


class SloSettings(Section):
    name: str = Field(min_length=1, max_length=120, pattern=r"^[A-Za-z0-9_.:-]+$")
    sli: Literal["ttft", "itl", "e2e", "error"]
    objective: float = Field(gt=0, lt=1, allow_inf_nan=False)
    # finite: an infinite threshold cannot be judged (and JSON has no form for it)
    threshold_seconds: float | None = Field(None, gt=0, allow_inf_nan=False)
    tenants: tuple[str, ...] = ()
    description: str = ""

    @field_validator("tenants", "description")
    @classmethod
    def _storable(cls, v: str | tuple[str, ...]) -> str | tuple[str, ...]:
        # PostgreSQL text holds no NUL, UTF-8 no lone surrogate (PUT /api/v1/slos was a 500)
        for text in (v,) if isinstance(v, str) else v:
            if "\x00" in text or _SURROGATE.search(text):
                raise ValueError("must not contain NUL or lone surrogate characters")
        return v

    @model_validator(mode="after")
    def _check(self) -> SloSettings:
        if self.sli != c.SLI_ERROR and self.threshold_seconds is None:
            raise ValueError(f"latency SLO {self.name!r} needs threshold_seconds")
        if self.sli == c.SLI_ERROR and self.threshold_seconds is not None:
            raise ValueError(f"availability SLO {self.name!r} takes no threshold_seconds")
        return self

    def to_spec(self) -> SloSpec:
        return SloSpec(
            name=self.name,
            sli=self.sli,
            objective=self.objective,
            threshold_seconds=self.threshold_seconds,
            tenants=self.tenants,
            description=self.description,
        )


DEFAULT_SLOS: tuple[SloSettings, ...] = (
    SloSettings(
        name="ttft-2s",
        sli="ttft",
        objective=0.99,
        threshold_seconds=2.0,
        description="99% of requests see their first token within 2 s",
    ),
    SloSettings(
        name="itl-100ms",
        sli="itl",
        objective=0.99,
        threshold_seconds=0.1,
        description="99% of requests stream at <= 100 ms mean inter-token latency",
    ),
    SloSettings(
        name="availability",
        sli="error",
        objective=0.999,
        description="99.9% of requests finish without error",
    ),
)


# The explicit overrides (CLI flags) of the `load_settings` call in progress: a settings source of
# their own, ranked above the environment (`Settings.settings_customise_sources`).
_OVERRIDES: ContextVar[Mapping[str, Any] | None] = ContextVar("pd_observer_settings_overrides", default=None)


class Settings(BaseSettings):
    """All of pd-observer's knobs. Sections are optional in the YAML file."""

    model_config = SettingsConfigDict(
        env_prefix=c.ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    server: ServerSettings = ServerSettings()
    ingest: IngestSettings = IngestSettings()
    aggregation: AggregationSettings = AggregationSettings()
    store: StoreSettings = StoreSettings()
    slos: tuple[SloSettings, ...] = DEFAULT_SLOS
    # Sections owned by later components are free-form until those components land.
    sources: dict[str, Any] = Field(default_factory=dict)
    signals: dict[str, Any] = Field(default_factory=dict)
    alerts: dict[str, Any] = Field(default_factory=dict)
    dashboards: dict[str, Any] = Field(default_factory=dict)
    autoscaler: dict[str, Any] = Field(default_factory=dict)
    # No `simulator` section: the twin is configured by its command-line flags, so an unknown
    # top-level key (including `simulator:`) is refused like any other.

    @field_validator("slos")
    @classmethod
    def _unique_slos(cls, v: tuple[SloSettings, ...]) -> tuple[SloSettings, ...]:
        if len(v) > c.MAX_SLOS:  # the same bound as PUT /api/v1/slos
            raise ValueError(f"at most {c.MAX_SLOS} SLOs (got {len(v)})")
        names = [s.name for s in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate SLO names: {', '.join(dupes)}")
        return v

    @model_validator(mode="after")
    def _cross(self) -> Settings:
        if self.store.record_retention_seconds < self.aggregation.max_window_seconds:
            raise ValueError(
                "store.record_retention_seconds must cover the longest aggregation window "
                f"({self.aggregation.max_window_seconds} s): windows are rebuilt from records on restart"
            )
        if self.server.max_decompressed_bytes < self.server.max_body_bytes:
            raise ValueError("server.max_decompressed_bytes must be >= server.max_body_bytes")
        if self.server.max_inflight_body_bytes < self.server.max_body_bytes:
            raise ValueError("server.max_inflight_body_bytes must be >= server.max_body_bytes")
        return self

    def slo_specs(self) -> tuple[SloSpec, ...]:
        return tuple(s.to_spec() for s in self.slos)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init kwargs carry the YAML file merged with CLI overrides; env beats the file, and the
        # overrides (`load_settings(overrides=...)`, i.e. command-line flags) beat env.
        overrides = InitSettingsSource(settings_cls, init_kwargs=dict(_OVERRIDES.get() or {}))
        return (overrides, env_settings, init_settings)


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _origin(
    path: tuple[Any, ...], file_origin: str, overrides: Mapping[str, Any] | None, environ: Mapping[str, str]
) -> str:
    """Where the value at `path` came from, by precedence: a command-line option, else a
    `PD_OBSERVER_*` variable (the field's own, or one setting a section holding it), else the file."""
    keys: list[str] = []
    for part in path:
        if not isinstance(part, str):
            break  # a list index: the variable or option sets the whole list
        keys.append(part)
    node: Any = overrides or {}
    for key in keys:
        if not isinstance(node, Mapping) or key not in node:
            break
        node = node[key]
    else:
        if keys:
            return " in the command-line options"
    names = {name.upper(): name for name in environ}
    for n in range(len(keys), 0, -1):
        name = (c.ENV_PREFIX + "__".join(keys[:n])).upper()
        if name in names:
            return f" in environment variable {names[name]}"
    return file_origin


def _format_error(
    err: ValidationError,
    origin: str,
    section: str | None = None,
    where: Callable[[tuple[Any, ...]], str] | None = None,
) -> str:
    first = err.errors()[0]
    path = ((section,) if section else ()) + tuple(first["loc"])
    if where is not None:
        origin = where(path)
    loc = ".".join(str(p) for p in path) or "(root)"
    msg = first["msg"].removeprefix("Value error, ")
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"invalid configuration{origin}: {loc}: {msg}{more}"


# The free-form sections of `Settings` whose models live in other packages (or upper layers):
# `load_settings(sections={"autoscaler": AutoscalerSettings.model_validate, ...})` validates them
# with the core, so every section's error is the same one line naming the file and the field.
SectionParser = Callable[[Any], object]

# PD_OBSERVER_* variables read outside the settings model (not reported as unknown).
OTHER_ENV_VARS: frozenset[str] = frozenset(
    {
        c.ENV_PREFIX + "NATIVE_DECODE",  # observer.ingest.fastpath: 0 forces the Python decoder
        c.ENV_PREFIX + "MOONCAKE_DIR",  # simulator.mooncake: where the shared traces are
        c.ENV_PREFIX + "TOKEN",  # the README's Collector example reads it for its Bearer header
        c.ENV_PREFIX + "UPDATE_GOLDENS",  # tests: rewrite golden files
        c.ENV_PREFIX + "VENV",  # scripts/dev.sh
    }
)


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` merges are YAML's own way of repeating keys
            key = self.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {seen[key]})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: str | Path) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"config file {path} is a directory, not a YAML file") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start})") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = str(getattr(exc, "problem", None) or "")
        if problem.startswith("duplicate key"):
            raise ConfigError(f"config file {path}{where}: {problem}") from exc
        raise ConfigError(f"config file {path} is not valid YAML{where}") from exc


def _env_error(err: SettingsError, environ: Mapping[str, str]) -> str:
    """One line naming the PD_OBSERVER_* variable whose value is not the JSON its field needs."""
    m = re.search(r'field "([^"]+)"', str(err))
    field = m.group(1) if m else ""
    top = (c.ENV_PREFIX + field).upper()
    names = sorted(k for k in environ if k.upper() == top or k.upper().startswith(top + "__"))
    doc = getattr(err.__cause__, "doc", None)
    bad = [k for k in names if environ[k] == doc] or names
    name = bad[0] if bad else top
    return (
        f"invalid configuration in environment variable {name}: not valid JSON "
        f"(lists and sections are JSON, e.g. {c.ENV_PREFIX}AGGREGATION__WINDOWS_SECONDS='[60,300]')"
    )


def unknown_env_vars(environ: Mapping[str, str] | None = None) -> list[str]:
    """`PD_OBSERVER_*` variables that neither the settings nor anything else reads, each with
    a hint (e.g. `PD_OBSERVER_STORE_URL (did you mean PD_OBSERVER_STORE__URL?)`)."""
    environ = os.environ if environ is None else environ
    sections = [name.upper() for name in Settings.model_fields]
    out = []
    for key in sorted(environ):
        upper = key.upper()
        if not upper.startswith(c.ENV_PREFIX) or upper in OTHER_ENV_VARS:
            continue
        rest = upper[len(c.ENV_PREFIX) :]
        if any(rest == s or rest.startswith(s + "__") for s in sections):
            continue
        hint = next(
            (
                f" (did you mean {c.ENV_PREFIX}{s}__{rest[len(s) + 1 :]}?)"
                for s in sections
                if rest.startswith(s + "_")
            ),
            "",
        )
        out.append(key + hint)
    return out


def load_settings(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    sections: Mapping[str, SectionParser] | None = None,
) -> Settings:
    """Load settings from an optional YAML file, the environment and CLI overrides.

    `sections` validates free-form sections (name -> e.g. `Model.model_validate`) as part of
    loading. Raises ConfigError with one line naming the bad field (or file, or variable).
    """
    data: dict[str, Any] = {}
    origin = ""
    if path is not None:
        origin = f" in {path}"
        raw = _read_yaml(path)
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a YAML mapping at the top level")
        data = raw
    if overrides:
        data = _merge(data, overrides)
    saved: dict[str, str] | None = None
    if env is not None:
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(env)
    environ = dict(os.environ if env is None else env)

    def where(path: tuple[Any, ...]) -> str:
        return _origin(path, origin, overrides, environ)

    token = _OVERRIDES.set(overrides)
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, origin, where=where)) from exc
    except SettingsError as exc:
        raise ConfigError(_env_error(exc, os.environ)) from exc
    finally:
        _OVERRIDES.reset(token)
        if saved is not None:
            os.environ.clear()
            os.environ.update(saved)
    for name, parse in (sections or {}).items():
        try:
            parse(getattr(settings, name))
        except ValidationError as exc:
            raise ConfigError(_format_error(exc, origin, name, where)) from exc
    return settings


def settings_reference() -> str:
    """Markdown reference of every core setting with its default (docs/configuration.md body)."""
    lines = [
        "| setting | env var | default | meaning |",
        "|---|---|---|---|",
    ]
    sections: tuple[tuple[str, type[BaseModel]], ...] = (
        ("server", ServerSettings),
        ("ingest", IngestSettings),
        ("aggregation", AggregationSettings),
        ("store", StoreSettings),
    )
    for section, model in sections:
        for name, info in model.model_fields.items():
            default = info.default
            if isinstance(default, tuple):
                shown = "[" + ", ".join(str(v) for v in default) + "]"
            elif default is None:
                shown = "(unset)"
            else:
                shown = str(default)
            env = f"{c.ENV_PREFIX}{section.upper()}__{name.upper()}"
            desc = (info.description or "").replace("|", "\\|")
            lines.append(f"| `{section}.{name}` | `{env}` | `{shown}` | {desc} |")
    return "\n".join(lines) + "\n"
