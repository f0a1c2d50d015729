"""Metric and KV-event sources: Prometheus, direct scrape, vLLM KV events, pod discovery.

Each returns frozen snapshots stamped with the time they were read; a failing or stale source
gives unknown (None) values, never zeros. See docs/sources.md.
"""
