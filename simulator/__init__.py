"""The fleet digital twin: a deterministic discrete-event model of an llm-d P/D fleet.

Modules: engine (simulated clock, event heap) · profile (+ profiles/*.yaml) · cache (tiered
prefix cache) · router (EPP scorers) · fleet (pods, routing, replicas, sampling) · workload
and mooncake (request streams) · scenarios (named, runnable `Twin`s) · actuation (what the
autoscaler calls) · events (the sink contract) · emit (OTLP / metrics / KV-event emitters).
Imports only `observer.conventions` from pd-observer. See docs/simulator.md.
"""
