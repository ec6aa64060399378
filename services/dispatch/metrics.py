"""Dispatch's metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class DispatchMetrics:
    """Incidents opened."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.incidents_opened = Counter(
            "dispatch_incidents_opened_total",
            "Incidents opened, by category.",
            ["category"],
            registry=registry,
        )
