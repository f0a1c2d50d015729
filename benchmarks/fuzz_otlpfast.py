"""Mutation fuzzer for the native OTLP decoder (observer/ingest/_otlpfast.c), not part of the tests.

Seeds are valid ExportTraceServiceRequest bodies encoded by the OpenTelemetry SDK's own OTLP
encoder (vLLM-shaped spans with the real attributes of observer.conventions, P/D pairs, the
benchmark workload). Each input is a mutation of a seed or of an input that found new coverage:
structure-aware (a wire-format tree with lengths recomputed: varint / fixed64 / string values
swapped for edge values, keys swapped for the keys that matter, fields duplicated, dropped,
re-tagged, spliced from other messages, repeated thousands of times, nested deep) or raw (bit
flips, truncation, length-field inflation, inserted bytes).

Oracles, for every input: no crash or sanitizer report (run the ASan build, see docs/ingest.md),
the native decode of an input under 1 MB takes under 1 s, and the native result equals the
Python path's (`decode_traces` + `resolve_batch`) as tests/observer/ingest/test_fastpath.py
defines it: None (fallback) or the same ResolvedBatch with the engine spans in the same order;
None whenever the Python path rejects a span or refuses the body (400/413).

    python -m benchmarks.fuzz_otlpfast --seconds 600 --seed 1 [--native /tmp/fuzz/asan/_otlpfast...so]

With --native, the extension is loaded from that file (e.g. the ASan/UBSan build); when it was
built with `-fsanitize-coverage=trace-pc` and the coverage shim (docs/ingest.md), inputs that
reach new edges of the C code join the corpus. The input being run is written to
OUT/current.bin first, so a sanitizer abort leaves it behind; differential failures and hangs are
written to OUT/ and counted, and the corpus to OUT/corpus/ at the end.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import importlib.machinery
import importlib.util
import math
import os
import random
import struct
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HANG_SECONDS = 1.0
MAX_INPUT = 1 << 20
COV_SIZE = 1 << 16


# ----------------------------------------------------------------------------- wire format tree

WT_VARINT, WT_I64, WT_LEN, WT_I32 = 0, 1, 2, 5


@dataclass
class Node:
    number: int
    wt: int
    value: int | bytes  # varint value, fixed bytes, or LEN payload when `children` is None
    # number 0: `value` is raw bytes written verbatim (copies of a field)
    children: list[Node] | None = None
    pad: int = 0  # extra (non-canonical) bytes in the tag's varint
    vpad: int = 0  # extra bytes in the length's (LEN) or the value's (VARINT) varint


def _varint(b: bytes, i: int) -> tuple[int, int]:
    v = shift = 0
    while True:
        if i >= len(b) or shift > 63:
            raise ValueError("varint")
        x = b[i]
        i += 1
        v |= (x & 0x7F) << shift
        if not x & 0x80:
            return v, i
        shift += 7


def enc_varint(v: int, pad: int = 0) -> bytes:
    """`v` as a varint, `pad` bytes longer than needed (0x80 continuations, then a 0x00)."""
    v &= (1 << 64) - 1
    if pad:
        b = bytearray(enc_varint(v))
        b[-1] |= 0x80
        return bytes(b) + b"\x80" * (pad - 1) + b"\x00"
    out = bytearray()
    while True:
        x = v & 0x7F
        v >>= 7
        if v:
            out.append(x | 0x80)
        else:
            out.append(x)
            return bytes(out)


def parse(b: bytes, depth: int = 0) -> list[Node]:
    """The fields of `b` as a message; LEN payloads that parse as messages get children."""
    out: list[Node] = []
    i = 0
    while i < len(b):
        tag, i = _varint(b, i)
        number, wt = tag >> 3, tag & 7
        if number == 0:
            raise ValueError("field 0")
        if wt == WT_VARINT:
            v, i = _varint(b, i)
            out.append(Node(number, wt, v))
        elif wt in (WT_I64, WT_I32):
            n = 8 if wt == WT_I64 else 4
            if i + n > len(b):
                raise ValueError("fixed")
            out.append(Node(number, wt, b[i : i + n]))
            i += n
        elif wt == WT_LEN:
            n, i = _varint(b, i)
            if i + n > len(b):
                raise ValueError("len")
            payload = b[i : i + n]
            i += n
            children = None
            if payload and depth < 12:
                try:
                    children = parse(payload, depth + 1)
                except ValueError:
                    children = None
            out.append(Node(number, wt, payload, children))
        else:
            raise ValueError("wire type")
    return out


def serialize(nodes: list[Node]) -> bytes:
    out = bytearray()
    for n in nodes:
        if n.number == 0:  # raw bytes, verbatim (a run of copies)
            assert isinstance(n.value, bytes)
            out += n.value
            continue
        out += enc_varint((n.number << 3) | n.wt, n.pad)
        if n.wt == WT_VARINT:
            assert isinstance(n.value, int)
            out += enc_varint(n.value, n.vpad)
        elif n.wt in (WT_I64, WT_I32):
            assert isinstance(n.value, bytes)
            out += n.value
        else:
            payload = serialize(n.children) if n.children is not None else n.value
            assert isinstance(payload, bytes)
            out += enc_varint(len(payload), n.vpad) + payload
    return bytes(out)


def walk(nodes: list[Node], acc: list[tuple[list[Node], int]]) -> list[tuple[list[Node], int]]:
    """Every (parent list, index) in the tree."""
    for i, n in enumerate(nodes):
        if n.number == 0:
            continue
        acc.append((nodes, i))
        if n.children is not None:
            walk(n.children, acc)
    return acc


def clone(nodes: list[Node]) -> list[Node]:
    return [
        Node(n.number, n.wt, n.value, None if n.children is None else clone(n.children), n.pad, n.vpad)
        for n in nodes
    ]


# ----------------------------------------------------------------------------- edge values


def _d(x: float) -> bytes:
    return struct.pack("<d", x)


VARINTS = [0, 1, 2, 3, 127, 128, 255, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**32 + 1, 2**32 + 2,
           2**53, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64 - 2, 10**9, 10**18]  # fmt: skip
DOUBLES = [0.0, -0.0, 0.5, 1.0, -1.0, 1e-300, 5e-324, float(2**32), float(2**32 + 1), 2.0**32 - 0.5,
           2.0**53, 2.0**63, 2.0**64, 1e300, math.inf, -math.inf, math.nan, -math.nan, 1e22, 1.5]  # fmt: skip
FIXED64 = (
    [_d(x) for x in DOUBLES]
    + [
        struct.pack("<Q", x)
        for x in (
            0,
            1,
            2**63 - 1,
            2**63,
            2**64 - 1,
            1_700_000_000 * 10**9,
            2**53 + 1,
            9_007_199_254_740_993_000,
        )
    ]
    + [b"\xff" * 8, b"\x00\x00\x00\x00\x00\x00\xf8\x7f", b"\x01\x00\x00\x00\x00\x00\xf0\x7f"]
)
STRINGS = [
    b"", b" ", b"\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f", b"\x00", b"a\x00b", b"prefill", b"decode", b" Prefill ",
    b"DECODE", b"prefill-decode", b"vllm-prefill", b"x-decode", b"-prefill", b"-Decode", b"true", b"TRUE",
    b" false ", b"yes", b"llm_request", b"llm_d.pd_proxy.prefill", b"\xc3\x9f", b"\xc2\xa0x\xe2\x80\x83",
    b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xf0\x9f\x98\x80", b"\xe2\x80\xa8", b"\x85",
    b"\xc2\x85", b"\xef\xbb\xbf", b"\xc4\xb0", b"\xe1\xba\x9e", b"\xe2\x84\xaa", b"\xc7\x85",
    b"\xff", b"\xc3",
    b"12", b"1e3", b"nan", b"A" * 300, b"\xc3\xa9" * 200, b"\x00" * 40, b"\xe2\x80\x83" * 3,
]  # fmt: skip
DEPTH_CHOICES = [8, 30, 47, 48, 49, 50, 60, 99, 100, 101, 120, 200, 1000]


@dataclass
class Context:
    keys: list[bytes]
    names: list[bytes]
    pool: list[Node] = field(default_factory=list)  # LEN nodes from the seeds, for splicing


def anyvalue(rng: random.Random, ctx: Context, depth: int = 0) -> bytes:
    k = rng.randrange(9)
    if k == 0:
        return b""
    if k == 1:
        return b"\x0a" + enc_varint(len(s := rng.choice(STRINGS))) + s
    if k == 2:
        return b"\x10" + enc_varint(rng.choice([0, 1, 2, 2**64 - 1]))
    if k == 3:
        return b"\x18" + enc_varint(rng.choice(VARINTS))
    if k == 4:
        return b"\x21" + rng.choice(FIXED64)
    if k == 7:
        return b"\x3a" + enc_varint(len(s := rng.choice(STRINGS))) + s
    if depth > 3:
        return b""
    inner = b"".join(
        (b"\x0a" + enc_varint(len(v := anyvalue(rng, ctx, depth + 1))) + v)
        if k == 5
        else (b"\x0a" + enc_varint(len(kv := keyvalue(rng, ctx, depth + 1))) + kv)
        for _ in range(rng.randrange(3))
    )
    return bytes([0x2A if k == 5 else 0x32]) + enc_varint(len(inner)) + inner


def keyvalue(rng: random.Random, ctx: Context, depth: int = 0) -> bytes:
    key = rng.choice(ctx.keys) if rng.random() < 0.8 else rng.choice(STRINGS)
    if rng.random() < 0.1 and b"." in key:
        key = key.rsplit(b".", 1)[0]  # a prefix of a key that matters (kvlist flattening)
    v = anyvalue(rng, ctx, depth)
    return b"\x0a" + enc_varint(len(key)) + key + b"\x12" + enc_varint(len(v)) + v


def deep(rng: random.Random, depth: int) -> bytes:
    """An AnyValue nested `depth` times (arrays / kvlists)."""
    v = b"\x18\x01"
    for _ in range(depth):
        if rng.random() < 0.5:
            inner = b"\x0a" + enc_varint(len(v)) + v  # ArrayValue.values
            v = b"\x2a" + enc_varint(len(inner)) + inner
        else:
            kv = b"\x0a\x01k\x12" + enc_varint(len(v)) + v
            inner = b"\x0a" + enc_varint(len(kv)) + kv  # KeyValueList.values
            v = b"\x32" + enc_varint(len(inner)) + inner
    return v


def mutate_tree(rng: random.Random, nodes: list[Node], ctx: Context) -> None:
    spots = walk(nodes, [])
    if not spots:
        nodes.append(Node(1, WT_LEN, b"", []))
        return
    parent, i = rng.choice(spots)
    n = parent[i]
    op = rng.randrange(15)
    if op == 14:  # non-canonical varints: a tag or a length / value up to 10 bytes
        if rng.random() < 0.5:
            n.pad = rng.randrange(1, 6)
        else:
            n.vpad = rng.randrange(1, 10)
    elif op == 0:  # value edge case for its wire type
        if n.wt == WT_VARINT:
            n.value = rng.choice(VARINTS)
        elif n.wt == WT_I64:
            n.value = rng.choice(FIXED64)
        elif n.wt == WT_I32:
            n.value = rng.choice([b"\0\0\0\0", b"\xff\xff\xff\xff", b"\x00\x00\xc0\x7f"])
        else:
            n.children = None
            n.value = rng.choice(STRINGS)
    elif op == 1 and n.wt == WT_LEN:  # a key that matters / an engine or sidecar name
        n.children = None
        n.value = rng.choice(ctx.keys + ctx.names)
    elif op == 2:  # duplicate
        parent.insert(i + rng.randrange(2), clone([n])[0])
    elif op == 3:  # drop
        del parent[i]
    elif op == 4:  # retag: other number or wire type
        if rng.random() < 0.5:
            n.number = rng.choice([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 100, 2**29 - 1])
        else:
            n.wt = rng.choice([0, 1, 2, 3, 4, 5, 6, 7])
            n.value = 0 if n.wt == WT_VARINT else bytes(8 if n.wt == WT_I64 else 4) if n.wt != WT_LEN else b""
            n.children = None
            if n.wt not in (0, 1, 2, 5):
                n.wt = rng.choice([0, 1, 2, 5])
                n.value = 0 if n.wt == 0 else bytes(8 if n.wt == 1 else 4) if n.wt != 2 else b""
    elif op == 5 and ctx.pool:  # splice a LEN node from a seed
        parent[i] = clone([rng.choice(ctx.pool)])[0]
    elif op == 6 and n.children is not None:  # new attribute / value
        n.children.insert(
            rng.randrange(len(n.children) + 1), Node(rng.choice([1, 2, 9]), WT_LEN, keyvalue(rng, ctx))
        )
    elif op == 7:  # many copies
        copies = rng.choice([2, 3, 17, 256, 1000, 5000])
        parent.insert(i, Node(0, -1, serialize([n]) * copies))
    elif op == 8:  # deep nesting in an attribute value
        v = deep(rng, rng.choice(DEPTH_CHOICES))
        kv = b"\x0a" + enc_varint(len(k := rng.choice(ctx.keys))) + k + b"\x12" + enc_varint(len(v)) + v
        parent.insert(i, Node(rng.choice([9, 1, 6, 2]), WT_LEN, kv))
    elif op == 9 and n.wt == WT_LEN and n.children is None and isinstance(n.value, bytes) and n.value:
        b = bytearray(n.value)  # byte edit inside a string / bytes
        j = rng.randrange(len(b))
        b[j] = rng.choice(
            [0, 0x20, 0x41, 0x61, 0x80, 0xC0, 0xC3, 0xED, 0xF4, 0xFF, b[j] ^ (1 << rng.randrange(8))]
        )
        n.value = bytes(b)
    elif op == 10:  # move
        m = parent.pop(i)
        parent.insert(rng.randrange(len(parent) + 1), m)
    elif op == 11 and n.children is not None:  # keep the bytes, forget the structure
        n.value = serialize(n.children)
        n.children = None
    elif op == 12 and n.wt == WT_LEN:  # an AnyValue of any kind in place
        n.children = None
        n.value = anyvalue(rng, ctx)
    else:  # status code / span kind / ids of unusual lengths
        if n.wt == WT_LEN:
            n.children = None
            n.value = rng.choice(
                [b"", bytes(8), bytes(16), b"\x01" * 7, b"\x01" * 8, b"\x01" * 16, b"\x01" * 17]
            )
        elif n.wt == WT_VARINT:
            n.value = rng.choice([0, 1, 2, 3, 2**32 + 2, 2**64 - 2, 2**31 + 2, 2**63 + 2])


def mutate_raw(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.choice([1, 1, 1, 2, 4, 8])):
        if not b:
            b += bytes([rng.randrange(256)])
            continue
        op = rng.randrange(7)
        j = rng.randrange(len(b))
        if op == 0:
            b[j] ^= 1 << rng.randrange(8)
        elif op == 1:
            b[j] = rng.choice([0, 0x7F, 0x80, 0xFF, 0x0A, 0x12, 0x22, 0x2A, 0x32, 0x3A, 0x39, 0x41])
        elif op == 2:
            del b[j:]
        elif op == 3:  # inflate or corrupt a varint (e.g. a length field)
            b[j : j + 1] = rng.choice(
                [
                    b"\xff\xff\xff\xff\x0f",
                    b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",
                    b"\x80" * 11,
                    b"\xff" * 10 + b"\x01",
                    enc_varint(rng.choice(VARINTS)),
                    bytes([b[j] + 1 & 0xFF]),
                    bytes([b[j] - 1 & 0xFF]),
                ]
            )
        elif op == 4:
            k = rng.randrange(len(b))
            b[j:j] = b[k : k + rng.randrange(1, 64)]
        elif op == 5:
            del b[j : j + rng.randrange(1, 16)]
        else:
            b[j:j] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
    return bytes(b)


# ----------------------------------------------------------------------------- seeds


def seeds() -> list[bytes]:
    """Valid bodies from the OpenTelemetry SDK's own encoder, with real attributes."""
    from benchmarks.ingest.workload import WorkloadSpec, batches
    from observer import conventions as c
    from tests.observer.ingest.otlp_builders import SpanSpec, encode, engine_attrs
    from tests.support import otel

    out: list[bytes] = []
    v = otel.VllmSpans()
    v.aggregated(otel.Req("acme", 1000, 20, cached={c.TIER_HBM: 300, c.TIER_DRAM: 100}, request_id="r-1"))
    v.pd_pair(otel.Req("beta", 4000, 50, cached_total=900, error=True))
    v.pd_pair(otel.Req(None, 800, 5, cached={c.TIER_DISK: 8}), tenant_on_epp_only=True)
    out.append(otel.encode(v.take()))
    v.pd_pair(otel.Req("Gamma ", 64, 1))
    out.append(otel.encode(v.take()))
    res = {c.RES_SERVICE_NAME: c.SERVICE_VLLM_PREFILL, c.RES_POD_NAME: "p-0", c.RES_LLMD_ROLE: "Prefill"}
    out.append(
        encode(
            [
                SpanSpec(c.SPAN_VLLM_REQUEST, 7, 1.0, 2.0, engine_attrs(100, 5, request_id="r1"), res),
                SpanSpec(
                    c.SPAN_EPP_GATEWAY, 7, 1.0, 2.0, {c.ATTR_TENANT_ID: "t", c.ATTR_EPP_PD_USED: "true"}, {}
                ),
                SpanSpec(
                    "other",
                    8,
                    1.0,
                    2.0,
                    {c.ATTR_LAT_E2E: 1, c.ATTR_PROMPT_TOKENS: 9.0},
                    {c.RES_SERVICE_NAME: "x-decode"},
                ),
                SpanSpec(c.SPAN_SIDECAR_PREFILL, 9, 1.0, 2.0, {c.ATTR_REQUEST_MODEL: "m"}, {}, error=True),
            ]
        )
    )
    out.extend(body for body, _ in batches(WorkloadSpec(1, 24, 20, seed=3), 1_800_000_000.0))
    return out


# ----------------------------------------------------------------------------- oracle


@dataclass
class Harness:
    native: Any  # the fastpath module, with the extension under test
    cfg: Any
    cov: Any = None  # ctypes array over the coverage map, or None
    seen: int = 0
    fallbacks: int = 0  # inputs the native decoder declined (None)

    def run(self, data: bytes, max_spans: int) -> tuple[str | None, bool]:
        """(failure description or None, new coverage)."""
        from observer.ingest.otlp import IngestError
        from observer.ingest.resolve import ResolvedBatch
        from tests.observer.ingest.otlp_builders import two_step

        if self.cov is not None:
            ctypes.memset(self.cov, 0, COV_SIZE)
        t0 = time.perf_counter()
        out = self.native.decode(data, max_spans, self.cfg)
        took = time.perf_counter() - t0
        new = False
        if self.cov is not None:
            cur = int.from_bytes(bytes(self.cov).translate(BUCKETS), "little")
            if cur & ~self.seen:
                self.seen |= cur
                new = True
        if took > HANG_SECONDS and len(data) < MAX_INPUT:
            return f"hang: native decode took {took:.2f} s", new
        got = None if out is None else ResolvedBatch(out[0], out[1], 0, (), out[2], out[3])
        try:
            ref: ResolvedBatch | None = two_step(data, max_spans=max_spans)
            refused = None
        except IngestError as exc:
            ref, refused = None, f"{type(exc).__name__}: {exc.message[:200]}"
        if got is None:
            self.fallbacks += 1
            return None, new
        if refused is not None:
            return f"native accepted a body the Python path refuses ({refused})", new
        assert ref is not None
        if ref.rejected:
            return f"native accepted a batch with rejects: {ref.errors[:2]}", new
        if got != ref:
            return f"differs: native {_diff(got, ref)}", new
        if [e.span_id for e in got.engine] != [e.span_id for e in ref.engine]:
            return "engine span order differs", new
        return None, new


def _diff(got: Any, ref: Any) -> str:
    if got.engine != ref.engine:
        for a, b in zip(got.engine, ref.engine, strict=False):
            if a != b:
                return f"engine span {a!r} vs Python {b!r}"
        return f"{len(got.engine)} engine spans vs Python {len(ref.engine)}"
    if dict(got.hints) != dict(ref.hints):
        for k in set(got.hints) | set(ref.hints):
            if got.hints.get(k) != ref.hints.get(k):
                return f"hints {got.hints.get(k)!r} vs Python {ref.hints.get(k)!r}"
    return f"ignored/rewritten {got.ignored}/{got.rewritten} vs Python {ref.ignored}/{ref.rewritten}"


# AFL-style hit-count buckets: every nonzero byte of the map to one bit per bucket
BUCKETS = bytes(
    0 if n == 0 else 1 if n == 1 else 2 if n == 2 else 4 if n == 3 else 8 if n < 8 else 16 if n < 16
    else 32 if n < 32 else 64 if n < 128 else 128
    for n in range(256)
)  # fmt: skip


def load(native_path: str | None) -> tuple[Any, Any]:
    """(fastpath module using the extension at `native_path` or the installed one, coverage map)."""
    cov = None
    if native_path:
        loader = importlib.machinery.ExtensionFileLoader("observer.ingest._otlpfast", native_path)
        spec = importlib.util.spec_from_file_location("observer.ingest._otlpfast", native_path, loader=loader)
        assert spec is not None
        mod = importlib.util.module_from_spec(spec)
        loader.exec_module(mod)
        sys.modules["observer.ingest._otlpfast"] = mod
        try:
            cov = (ctypes.c_ubyte * COV_SIZE).in_dll(ctypes.CDLL(native_path), "otlpfast_cov_map")
        except (OSError, ValueError):
            cov = None
    from observer.ingest import fastpath

    if native_path:
        fastpath._native = sys.modules["observer.ingest._otlpfast"]
        fastpath.compiled.cache_clear()
    return fastpath, cov


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=60.0, help="how long to fuzz (default 60)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ap.add_argument(
        "--native", help="load the extension from this .so (e.g. an ASan build) instead of the installed one"
    )
    ap.add_argument(
        "--out",
        default="/tmp/fuzz_otlpfast",
        help="where failures and current.bin go (default /tmp/fuzz_otlpfast)",
    )
    ap.add_argument("--reproduce", nargs="*", metavar="FILE", help="run the oracles on these inputs and exit")
    ap.add_argument("--stop-on-failure", action="store_true", help="stop at the first failure")
    args = ap.parse_args(argv)

    from observer.config import IngestSettings
    from observer.ingest.resolve import ResolveConfig

    fastpath, cov = load(args.native)
    cfg = ResolveConfig.from_settings(IngestSettings())
    if fastpath.compiled(cfg) is None:
        print("native decoder not built or disabled: nothing to fuzz", file=sys.stderr)
        return 2
    h = Harness(fastpath, cfg, cov)
    if args.reproduce is not None:
        bad = 0
        for name in args.reproduce:
            fail, _ = h.run(Path(name).read_bytes(), 1 << 20)
            print(f"{name}: {fail or 'ok'}")
            bad += fail is not None
        return 1 if bad else 0

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    from observer import conventions as c

    keys = sorted(
        {k.encode() for k in _config_keys(cfg)} | {c.ATTR_LAT_E2E.encode(), c.ATTR_TENANT_ID.encode()}
    )
    names = sorted(n.encode() for n in (*cfg.engine_span_names, *cfg.sidecar_span_names))
    ctx = Context(keys, names)
    corpus = seeds()
    trees = [parse(s) for s in corpus]
    for t in trees:
        ctx.pool.extend(n for parent, i in walk(t, []) if (n := parent[i]).wt == WT_LEN)
    for s in corpus:
        fail, _ = h.run(s, 1 << 20)
        assert fail is None, fail
    current = out / "current.bin"
    fd = os.open(current, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    execs = failures = 0
    kinds: dict[str, int] = {}
    start = time.monotonic()
    last = start
    while time.monotonic() - start < args.seconds:
        base = rng.choice(corpus)
        if rng.random() < 0.75:
            try:
                tree = parse(base)
            except ValueError:
                tree = []
            for _ in range(rng.choice([1, 1, 2, 3, 5])):
                mutate_tree(rng, tree, ctx)
            data = serialize(tree)
            if rng.random() < 0.15:
                data = mutate_raw(rng, data)
        else:
            data = mutate_raw(rng, base)
        if len(data) > MAX_INPUT:
            continue
        max_spans = 1 << 20 if rng.random() < 0.9 else rng.randrange(0, 8)
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, data)
        try:
            fail, new = h.run(data, max_spans)
        except Exception:  # an exception from the native decoder is a finding too
            fail, new = "exception: " + traceback.format_exc(limit=3).strip().splitlines()[-1], False
        execs += 1
        if new and len(corpus) < 5000:
            corpus.append(data)
        if fail is not None:
            failures += 1
            kind = fail.split(":")[0]
            kinds[kind] = kinds.get(kind, 0) + 1
            digest = hashlib.sha1(data).hexdigest()[:12]
            (out / f"fail-{digest}.bin").write_bytes(data)
            (out / f"fail-{digest}.txt").write_text(f"max_spans={max_spans}\n{fail}\n")
            if kinds[kind] <= 3:
                print(f"FAIL {digest} ({len(data)} bytes, max_spans={max_spans}): {fail[:400]}", flush=True)
            if args.stop_on_failure:
                break
        if time.monotonic() - last > 30:
            last = time.monotonic()
            print(
                f"[{last - start:6.0f}s] execs={execs} corpus={len(corpus)} failures={failures}", flush=True
            )
    os.close(fd)
    saved = out / "corpus"
    saved.mkdir(exist_ok=True)
    for data in corpus:
        (saved / hashlib.sha1(data).hexdigest()[:16]).write_bytes(data)
    elapsed = time.monotonic() - start
    print(
        f"done: {execs} execs in {elapsed:.0f} s ({execs / max(elapsed, 1e-9):.0f}/s), corpus {len(corpus)}, "
        f"coverage map {'on' if cov is not None else 'off'}, failures {failures} {kinds}, "
        f"fallbacks {h.fallbacks}",
        flush=True,
    )
    return 1 if failures else 0


def _config_keys(cfg: Any) -> list[str]:
    keys: list[str] = []
    for name in (
        "tenant_keys",
        "model_keys",
        "pod_keys",
        "role_keys",
        "input_token_keys",
        "output_token_keys",
    ):
        keys.extend(getattr(cfg, name))
    for name in ("engine_marker_attribute", "cached_tokens_key", "request_id_key", "error_type_key",
                 "disaggregation_key", "service_name_key"):  # fmt: skip
        keys.append(getattr(cfg, name))
    keys.extend(k for _, k in cfg.tier_keys)
    return keys


if __name__ == "__main__":
    sys.exit(main())
