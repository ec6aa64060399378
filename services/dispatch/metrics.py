"""Dispatch's metrics (docs/contract.md, 1-3-5 targets). Labels stay low-cardinality: no ids."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.dispatch.grids import GridInfo

RESPONSE_BUCKETS = (30, 60, 120, 180, 240, 300, 600, 1200)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def describe_grids(metrics: DispatchMetrics, grids: Iterable[GridInfo]) -> None:
    """Publish the grid → office map, so dashboards can roll grids up by office."""
    for info in grids:
        metrics.grid_info.labels(info.grid, info.office or "none", info.zone_tier or "none").set(1)
    metrics.grid_info.labels("none", "none", "none").set(1)


def grid_label(grid: str | None) -> str:
    """Incidents outside every grid share one label."""
    return grid or "none"


class DispatchMetrics:
    """Incidents, offers, the 1-3-5 stages and dispatch latency."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.grid_info = Gauge(
            "dispatch_grid_info",
            "Always 1: which office and zone tier each grid belongs to, for joins by office.",
            ["grid", "office", "zone_tier"],
            registry=registry,
        )
        self.incidents_opened = Counter(
            "dispatch_incidents_opened_total",
            "Incidents opened, by category and grid.",
            ["category", "grid"],
            registry=registry,
        )
        self.reports_merged = Counter(
            "dispatch_reports_merged_total",
            "Reports that joined an open incident, by category.",
            ["category"],
            registry=registry,
        )
        self.open_incidents = Gauge(
            "dispatch_open_incidents",
            "Incidents open now.",
            registry=registry,
        )
        self.oldest_open_age = Gauge(
            "dispatch_oldest_open_incident_age_seconds",
            "Age of the oldest open incident, from its first report.",
            registry=registry,
        )
        self.response_seconds = Histogram(
            "dispatch_response_seconds",
            "Seconds from the first report to each 1-3-5 stage being reached.",
            ["stage", "category", "grid"],
            buckets=RESPONSE_BUCKETS,
            registry=registry,
        )
        self.targets_met = Counter(
            "dispatch_targets_met_total",
            "1-3-5 stages met in time.",
            ["stage", "category", "grid"],
            registry=registry,
        )
        self.targets_breached = Counter(
            "dispatch_targets_breached_total",
            "1-3-5 stages whose deadline passed, counted at the deadline.",
            ["stage", "category", "grid"],
            registry=registry,
        )
        self.offers = Counter(
            "dispatch_offers_total",
            "Offers by outcome (offered, accepted, declined, expired, withdrawn) and kind.",
            ["outcome", "kind"],
            registry=registry,
        )
        self.no_responder = Counter(
            "dispatch_no_responder_total",
            "Red alarms: nobody is coming (no eligible responder free within the widest "
            "radius, and no other unit on its way), by category and grid.",
            ["category", "grid"],
            registry=registry,
        )
        self.slot_unfilled = Counter(
            "dispatch_slot_unfilled_total",
            "Amber notices: a plan slot nobody eligible could fill while another unit is "
            "coming, by category and grid.",
            ["category", "grid"],
            registry=registry,
        )
        self.dispatch_latency = Histogram(
            "dispatch_latency_seconds",
            "Seconds from a report being received to the incident's first offer.",
            ["category"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.claim_seconds = Histogram(
            "dispatch_claim_seconds",
            "One claim call to the locator, by outcome (claimed, nobody, impossible, unavailable).",
            ["outcome"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=registry,
        )
        self.claims_refused = Counter(
            "dispatch_claims_refused_total",
            "Claims the locator granted for a responder dispatch already holds (its index"
            " drifted); the next responder is tried at once.",
            registry=registry,
        )
        self.booking_resyncs = Counter(
            "dispatch_booking_resyncs_total",
            "Times dispatch restated who is booked to the locator, by reason (startup, periodic,"
            " empty or changed: the locator's Redis came back so, responder: a claim handed"
            " dispatch someone it holds).",
            ["reason"],
            registry=registry,
        )
        self.timers_fired = Counter(
            "dispatch_timers_fired_total",
            "Persisted timers fired, by kind.",
            ["kind"],
            registry=registry,
        )
        self.coverage_ratio = Gauge(
            "dispatch_coverage_ratio",
            "Share of coverage cells where a stage could be met now (tier-weighted for 'all').",
            ["office", "zone_tier", "stage"],
            registry=registry,
        )
        self.coverage_refreshed = Gauge(
            "dispatch_coverage_refreshed_timestamp_seconds",
            "When the coverage map was last recomputed (Unix time).",
            registry=registry,
        )
