"""Emitters: turn the fleet model's events into the real protocols (OTLP, Prometheus, KV events).

Each emitter implements `simulator.events.FleetSink`; `fanout.Fanout` combines several.
"""
