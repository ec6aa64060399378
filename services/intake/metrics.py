"""Intake's metrics. Request latency comes from the shared HTTP shell; consume-loop and
outbox metrics from the shared consumer and relay."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from prometheus_client import CollectorRegistry, Counter

Outcome = Literal["accepted", "rejected", "rate_limited", "duplicate"]
INVALID_CATEGORY = "invalid"


class IntakeMetrics:
    """Reports by category and outcome."""

    def __init__(self, registry: CollectorRegistry, *, categories: Iterable[str]) -> None:
        self._categories = frozenset(categories)
        self.reports = Counter(
            "intake_reports_total",
            "Reports posted, by category and outcome.",
            ["category", "outcome"],
            registry=registry,
        )

    def count(self, *, category: object, outcome: Outcome) -> None:
        """Count one posted report; unknown categories share one label to keep it small."""
        label = category if isinstance(category, str) and category in self._categories else None
        self.reports.labels(label or INVALID_CATEGORY, outcome).inc()
