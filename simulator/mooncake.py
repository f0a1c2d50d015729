"""Replay of the Mooncake FAST'25 traces (../shared/data/mooncake/*.jsonl).

Each line: `timestamp` (ms from start), `input_length`, `output_length`, `hash_ids`
(remapped prefix-block hashes, 512 tokens per block). The trace has no tenant field.

Tenant rule (documented in docs/simulator.md): the tenant key is the request's first hash id
that is not a *shared root*. In the conversation trace every request starts with block 0
(a global system prompt shared by all), so block 0 says nothing about who is asking; the next
block is the conversation's own root, shared by all turns of one conversation. That key is
folded to `tenants` buckets by CRC-32 (stable across runs and Python versions) and named
`mc-NN`. Requests of one conversation therefore always belong to the same tenant and keep
their prefix affinity, while tenant cardinality stays bounded.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

from simulator.workload import RequestSpec

ENV_MOONCAKE_DIR = "PD_OBSERVER_MOONCAKE_DIR"
TRACES = {"conversation": "conversation_trace.jsonl", "synthetic": "synthetic_trace.jsonl"}
DEFAULT_SHARED_ROOTS: tuple[int, ...] = (0,)


class TraceFormatError(ValueError):
    """A trace line that is not a Mooncake record: says which file and line, and what."""


def default_dir() -> Path:
    """`$PD_OBSERVER_MOONCAKE_DIR`, else ../shared/data/mooncake relative to the repo."""
    env = os.environ.get(ENV_MOONCAKE_DIR)
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "mooncake"


def trace_path(trace: str, directory: str | Path | None = None) -> Path:
    """Path of a named trace (`conversation` | `synthetic`) or of a given .jsonl file."""
    if trace.endswith(".jsonl"):
        return Path(trace)
    if trace not in TRACES:
        raise ValueError(f"unknown Mooncake trace {trace!r}; expected one of {sorted(TRACES)}")
    path = Path(directory) if directory is not None else default_dir()
    return path / TRACES[trace]


def tenant_of(hash_ids: list[int], tenants: int, shared_roots: tuple[int, ...] = DEFAULT_SHARED_ROOTS) -> str:
    """Fold the first non-shared block id to one of `tenants` names."""
    key = next((h for h in hash_ids if h not in shared_roots), hash_ids[0] if hash_ids else 0)
    return f"mc-{zlib.crc32(str(key).encode()) % max(1, tenants):02d}"


def replay(
    trace: str,
    *,
    directory: str | Path | None = None,
    tenants: int = 8,
    time_scale: float = 1.0,
    start: float = 0.0,
    horizon: float | None = None,
    limit: int | None = None,
    shared_roots: tuple[int, ...] = DEFAULT_SHARED_ROOTS,
) -> Iterator[RequestSpec]:
    """Stream a trace as RequestSpecs; arrival = start + timestamp_s / time_scale.

    `horizon` stops at that arrival offset (seconds, after scaling); `limit` after N requests.
    """
    path = trace_path(trace, directory)
    if path.is_dir():
        raise TraceFormatError(f"{path} is a directory, not a trace file")
    if not path.is_file():
        raise FileNotFoundError(f"Mooncake trace not found: {path} (set {ENV_MOONCAKE_DIR})")
    name = path.stem.replace("_trace", "")
    n = 0  # requests so far (blank lines are skipped, so not the line number)
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            if limit is not None and n >= limit:
                return
            try:
                row = json.loads(line)
                if not isinstance(row, dict):  # the handler below names the line
                    raise TypeError(f"not a JSON object but a {type(row).__name__}")
                if not isinstance(row.get("hash_ids", []), list):
                    raise TypeError("hash_ids is not a list")
                arrival = start + float(row["timestamp"]) / 1000.0 / time_scale
                hash_ids = [int(h) for h in row["hash_ids"]]
                prompt, output = int(row["input_length"]), int(row["output_length"])
            except json.JSONDecodeError as exc:
                raise TraceFormatError(f"{path} line {lineno}: not JSON ({exc.msg})") from exc
            except KeyError as exc:
                raise TraceFormatError(f"{path} line {lineno}: no field {exc.args[0]!r}") from exc
            except (TypeError, ValueError, AttributeError) as exc:
                raise TraceFormatError(f"{path} line {lineno}: {exc}") from exc
            for field, value in (("input_length", prompt), ("output_length", output)):
                if value < 0:
                    raise TraceFormatError(f"{path} line {lineno}: {field} is negative ({value})")
            if not math.isfinite(arrival) or arrival < start:
                raise TraceFormatError(f"{path} line {lineno}: timestamp must be a number of ms >= 0")
            if horizon is not None and arrival - start >= horizon:
                return
            yield RequestSpec(
                request_id=f"mc-{name}-{n:06d}",
                tenant=tenant_of(hash_ids, tenants, shared_roots),
                arrival=arrival,
                prompt_tokens=max(1, prompt),  # a 0 (the trace's minimum output is 1) is one token
                output_tokens=max(1, output),
                block_hashes=tuple(hash_ids),
            )
            n += 1
