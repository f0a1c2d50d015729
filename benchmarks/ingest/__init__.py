"""Ingest benchmark (issue 2): `python -m benchmarks.ingest.run`."""
