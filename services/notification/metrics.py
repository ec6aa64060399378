"""Notification's metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class NotificationMetrics:
    """Deliveries by channel and outcome, their latency, retries and stream rebuilds."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.deliveries = Counter(
            "notification_deliveries_total",
            "Deliveries finished, by channel and outcome (sent or failed).",
            ["channel", "outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            "notification_delivery_latency_seconds",
            "From the event's time to the message sent, by channel.",
            ["channel"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.retries = Counter(
            "notification_delivery_retries_total",
            "Attempts that failed and will be tried again, by channel.",
            ["channel"],
            registry=registry,
        )
        self.redis_rebuilds = Counter(
            "notification_redis_rebuilds_total",
            "Times the live streams were rebuilt from the delivery log because Redis came"
            " back empty or with another epoch, by reason.",
            ["reason"],
            registry=registry,
        )
        self.restored = Counter(
            "notification_stream_entries_restored_total",
            "Stream entries put back from the delivery log after Redis lost them.",
            registry=registry,
        )
