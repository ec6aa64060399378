"""What a run is told (endpoints, configuration) and what it saw (responders, offers, reports)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# What citizens report, by share.
CATEGORY_MIX: dict[str, float] = {
    "dispute": 0.18,
    "theft": 0.18,
    "suspicious": 0.14,
    "medical": 0.10,
    "violence": 0.08,
    "traffic": 0.08,
    "fraud": 0.08,
    "fire": 0.04,
    "missing_person": 0.04,
    "other": 0.08,
}


@dataclass(frozen=True)
class Endpoints:
    """Where the four services listen, and the tokens the simulator acts with."""

    intake: str
    dispatch: str
    locator: str
    notification: str
    dispatcher_token: str
    service_token: str


@dataclass(frozen=True)
class SimConfig:
    """What to simulate. Durations are real seconds unless named ``sim``."""

    duration_s: float = 60.0
    responders_per_kind: int = 15
    reports_per_s: float = 0.5
    accept_probability: float = 0.8
    decline_share: float = 0.5  # of the offers not accepted; the rest are ignored
    time_scale: float = 1.0
    ping_interval_s: float = 1.0
    ingest_lag_s: float = 1.0  # allowance for a ping to reach the geo index
    think_sim_s: tuple[float, float] = (3.0, 10.0)
    scene_sim_s: float = 120.0
    patrol_pace: float = 0.3  # share of the mode's speed while patrolling
    drain_timeout_s: float = 90.0
    offer_timeout_s: float = 30.0  # the system's, for expecting expiries
    category_mix: Mapping[str, float] = field(default_factory=lambda: dict(CATEGORY_MIX))
    plans_path: str | None = None
    seed: int = 1
    live: bool = True  # print a status line every few seconds
    cleanup: bool = True  # resolve leftover incidents and go off duty at the end


# --- what happened ------------------------------------------------------------------


@dataclass
class SimResponder:
    """One simulated responder: their app, their position and what they are doing."""

    responder_id: str
    token: str
    kind: str
    travel_mode: str
    skills: frozenset[str]
    speed_mps: float  # the expected ETA speed of the mode (rules.SPEEDS_KMH)
    at: tuple[float, float]
    waypoint: tuple[float, float]
    on_duty_at: float = math.inf
    odometer_m: float = 0.0
    holding: str | None = None  # the offer held right now (offered, or accepted and working)
    working: bool = False  # accepted: travelling to or at an incident
    track: list[tuple[float, float, float, float]] = field(default_factory=list)  # t, lat, lon, odo

    def position_at(self, t: float) -> tuple[tuple[float, float], float]:
        """Where they were at ``t`` (the last sample before it) and the odometer then."""
        best = self.track[0] if self.track else (0.0, self.at[0], self.at[1], 0.0)
        lo, hi = 0, len(self.track) - 1
        while lo <= hi:
            mid = (lo + hi) // 2
            if self.track[mid][0] <= t:
                best, lo = self.track[mid], mid + 1
            else:
                hi = mid - 1
        return (best[1], best[2]), best[3]


@dataclass
class OfferSeen:
    """An offer as it reached a responder's stream."""

    offer_id: str
    incident_id: str
    responder_id: str
    category: str
    location: tuple[float, float]
    claimed_at: float  # the offer event's occurred_at
    received_at: float
    eta_s: float
    expires_at: float
    outcome: str = "pending"  # accepted, declined, ignored, conflict, refused (busy)
    # The hold ends in the system between these two: not before the app asked (decline,
    # cleared) or the offer expired, and not after the app saw the answer.
    release_requested_at: float = math.inf
    released_at: float = math.inf


@dataclass
class PostedReport:
    """A report the citizen app got a 202 for."""

    report_id: str
    tracking_token: str
    category: str
    location: tuple[float, float]
    accepted_at: float


@dataclass
class Checks:
    """The correctness checks' findings; every list empty means all passed."""

    offers_checked: int = 0
    reports_checked: int = 0
    incidents_checked: int = 0
    waited_past_last_deadline: bool = False
    nearest_violations: list[str] = field(default_factory=list)
    double_bookings: list[str] = field(default_factory=list)
    lost_reports: list[str] = field(default_factory=list)
    unresolved_milestones: list[str] = field(default_factory=list)
    not_yet_due: int = 0

    @property
    def passed(self) -> bool:
        """Whether every check passed."""
        return not (
            self.nearest_violations
            or self.double_bookings
            or self.lost_reports
            or self.unresolved_milestones
        )


@dataclass
class SimResult:
    """What a run did and found."""

    reports: list[PostedReport]
    offers: list[OfferSeen]
    incidents: dict[str, dict[str, Any]]
    checks: Checks
    counters: Counter[str]
    table: str
    coverage: list[tuple[float, float]] = field(default_factory=list)  # (run s, T3 ratio)
