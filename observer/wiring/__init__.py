"""Composition root for `pd-observer demo`, `simulate` and `replay`.

It assembles the service (observer.api), the digital twin (simulator), the alert rules
(alerts.export) and, once it exists, the autoscaler. Nothing below observer.wiring imports it.
"""
