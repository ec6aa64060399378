"""Volunteer-locator's metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

QUERY_BUCKETS = (
    0.0005,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.004,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)
LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0)


class LocatorMetrics:
    """Responders on duty and available, ping ingest, and query and claim latency."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.on_duty = Gauge(
            "volunteer_locator_responders_on_duty",
            "Responders on duty, by kind.",
            ["kind"],
            registry=registry,
        )
        self.available = Gauge(
            "volunteer_locator_responders_available",
            "Responders on duty, free and placed in the geo index, by kind.",
            ["kind"],
            registry=registry,
        )
        self.pings = Counter(
            "volunteer_locator_pings_ingested_total",
            "Location pings taken off responder-locations, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.ping_lag = Histogram(
            "volunteer_locator_ping_lag_seconds",
            "From a ping's recorded_at to its position being in the geo index.",
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        self.nearest_seconds = Histogram(
            "volunteer_locator_nearest_duration_seconds",
            "Time to answer a nearest-responders query inside the service.",
            buckets=QUERY_BUCKETS,
            registry=registry,
        )
        self.claim_seconds = Histogram(
            "volunteer_locator_claim_duration_seconds",
            "Time to find and book a responder inside the service.",
            buckets=QUERY_BUCKETS,
            registry=registry,
        )
        self.redis_rebuilds = Counter(
            "volunteer_locator_redis_rebuilds_total",
            "Times the index was rebuilt from the database because Redis came back empty or"
            " with another epoch, by reason.",
            ["reason"],
            registry=registry,
        )
        self.claims = Counter(
            "volunteer_locator_claims_total",
            "Claims by outcome: claimed, none_available, unavailable, released, expired.",
            ["outcome"],
            registry=registry,
        )
