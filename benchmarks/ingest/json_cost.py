"""What an OTLP/JSON body costs `json.loads`, for the receiver's object-and-array limit
(`conventions.MAX_JSON_CONTAINERS`, docs/ingest.md):

    python -m benchmarks.ingest.json_cost

Prints the objects and arrays per span of real vLLM-shaped spans (encoded by the OpenTelemetry
SDK, turned into OTLP/JSON by protobuf's JSON mapping), and the peak memory (tracemalloc) of
parsing a million dense objects, the worst case the limit bounds.
"""

from __future__ import annotations

import gzip
import json
import time
import tracemalloc

from google.protobuf.json_format import MessageToJson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from observer import conventions as c
from tests.support.otel import Req, VllmSpans, encode


def containers(body: bytes) -> int:
    return body.count(b"{") + body.count(b"[")


def main() -> None:
    sp = VllmSpans()
    for i in range(50):
        start = time.time() - 5
        sp.aggregated(Req(f"t{i % 5}", prompt=100, output=5, start=start, cached={"hbm": 50}))
        sp.pd_pair(Req(f"t{i % 5}", prompt=100, output=5, start=start, cached={"hbm": 50}))
    msg = ExportTraceServiceRequest()
    msg.ParseFromString(encode(sp.take()))
    spans = sum(len(ss.spans) for rs in msg.resource_spans for ss in rs.scope_spans)
    body = MessageToJson(msg).encode()
    per_span = containers(body) / spans
    print(f"real spans: {per_span:.1f} objects and arrays, {len(body) / spans:.0f} bytes per span")
    print(f"  -> the limit ({c.MAX_JSON_CONTAINERS:,}) admits ~{c.MAX_JSON_CONTAINERS / per_span:,.0f} spans")
    for unit in (b"{},", b'{"a":1},'):
        dense = b'{"resourceSpans":[{"x":[' + unit * c.MAX_JSON_CONTAINERS + b"{}]}]}"
        tracemalloc.start()
        parsed = json.loads(dense)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        del parsed
        print(
            f"{c.MAX_JSON_CONTAINERS:,} x {unit.decode()!r}: body {len(dense) / 2**20:.1f} MiB "
            f"({len(gzip.compress(dense, 9)) / 1024:.0f} KiB gzip), json.loads peak {peak / 2**20:.0f} MiB"
        )


if __name__ == "__main__":
    main()
