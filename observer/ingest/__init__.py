"""OTLP ingest core: decode (otlp), span resolution (resolve), P/D stitching (assemble).

Pure/CPU functions; the receiver (observer.api) runs them in a thread pool and owns all I/O.
"""

from observer.ingest.assemble import AssembleResult, TraceAssembler, record_key
from observer.ingest.otlp import (
    BadRequest,
    DecodedBatch,
    IngestError,
    PayloadTooLarge,
    UnsupportedMediaType,
    decode_traces,
    encode_response,
    parse_and_walk,
)
from observer.ingest.resolve import ResolveConfig, ResolvedBatch, resolve_batch

__all__ = [
    "AssembleResult",
    "BadRequest",
    "DecodedBatch",
    "IngestError",
    "PayloadTooLarge",
    "ResolveConfig",
    "ResolvedBatch",
    "TraceAssembler",
    "UnsupportedMediaType",
    "decode_traces",
    "encode_response",
    "parse_and_walk",
    "record_key",
    "resolve_batch",
]
