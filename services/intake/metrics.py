"""Intake's metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class IntakeMetrics:
    """Reports by category and outcome."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.reports = Counter(
            "intake_reports_total",
            "Reports posted, by category and outcome.",
            ["category", "outcome"],
            registry=registry,
        )
