"""The metrics every consume loop reports, named after its service."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ConsumerMetrics:
    """The metrics every consume loop reports, named after its service."""

    def __init__(self, service: str, registry: CollectorRegistry) -> None:
        prefix = service.replace("-", "_")
        self.consumed = Counter(
            f"{prefix}_events_consumed_total",
            "Events taken off Kafka, by topic, type and outcome.",
            ["topic", "type", "outcome"],
            registry=registry,
        )
        self.lag = Gauge(
            f"{prefix}_consumer_lag_messages",
            "Messages on the topic not yet consumed by this service's group.",
            ["topic"],
            registry=registry,
        )
        self.handle_seconds = Histogram(
            f"{prefix}_event_handle_seconds",
            "Time to handle one batch of events from a topic.",
            ["topic"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=registry,
        )
        self.delivery_seconds = Histogram(
            f"{prefix}_event_delivery_seconds",
            "From an event's occurred_at to this service taking it off the topic (the sender's "
            "commit, its outbox relay and the broker hop), by topic.",
            ["topic"],
            buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.restarts = Counter(
            f"{prefix}_consumer_restarts_total",
            "Times a consume loop lost its consumer to a failure and started a new one.",
            ["topic"],
            registry=registry,
        )
