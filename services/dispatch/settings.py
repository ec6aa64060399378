"""Dispatch's configuration."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from pydantic import Field, field_validator

from shared.settings import ServiceSettings


class DispatchSettings(ServiceSettings):
    """Environment variables for dispatch."""

    service_name: str = "dispatch"
    port: int = 8002
    database_url: str = "sqlite+aiosqlite:///./.run/dispatch.db"
    locator_url: str = "http://127.0.0.1:8003"
    locator_timeout_s: float = Field(default=2.0, gt=0)

    offer_timeout_s: float = Field(default=30.0, gt=0)
    claim_hold_margin_s: float = Field(
        default=15.0, ge=0, description="Extra hold the locator keeps beyond the offer timeout."
    )
    decision_trace: bool = Field(
        default=True,
        description="Ask each claim for its decision trace and keep it with the offer.",
    )
    duplicate_radius_m: float = Field(default=150.0, ge=0)
    duplicate_window_s: float = Field(default=600.0, ge=0)
    gauge_refresh_s: float = Field(
        default=1.0,
        ge=0,
        description="How often at most the open-incident gauges are re-read after changes "
        "(0: after each), so a burst of openings and closings costs one query.",
    )
    retry_interval_s: float = Field(
        default=15.0, gt=0, description="How often incidents waiting for a responder are retried."
    )
    reconcile_interval_s: float = Field(
        default=30.0,
        gt=0,
        description="How often dispatch restates who is booked to the locator (and at start).",
    )
    reconcile_grace_s: float = Field(
        default=120.0,
        gt=0,
        description=(
            "How long the locator keeps a booking dispatch no longer lists before freeing it;"
            " keep it well above the reconcile interval."
        ),
    )
    no_responder_radius_m: float = Field(
        default=10_000.0, gt=0, description="The locator's widest search radius, for the console."
    )

    plans_path: str | None = Field(
        default=None, description="A JSON file of response plans; the shipped defaults if unset."
    )
    grids_path: str | None = Field(
        default=None, description="A GeoJSON file of grids; the shipped demo district if unset."
    )
    zone_tier_factors: dict[str, float] = Field(
        default={"key": 0.5, "urban": 0.75, "other": 1.0},
        description="Targets are multiplied by the grid's zone-tier factor (never above 1).",
    )
    target_overrides_s: dict[str, int] = Field(
        default={}, description="Stage name to target seconds, overriding every plan (demos)."
    )
    timer_batch: int = Field(default=100, ge=1)

    console_tile_url: str = Field(
        default="",
        description="A map tile URL template ({z}/{x}/{y}); empty means no tiles (no internet).",
    )
    console_tile_attribution: str = ""
    console_map_center: tuple[float, float] = Field(
        default=(23.02, 113.75), description="Where the console's map opens: (lat, lon)."
    )
    console_map_zoom: int = Field(default=13, ge=1, le=19)
    local_time_zone: str = Field(
        default="Asia/Shanghai",
        description="The IANA time zone the console shows times in.",
    )
    category_labels_path: str | None = Field(
        default=None,
        description="A JSON file of category names by language; the shipped names if unset.",
    )
    console_team_limit: int = Field(
        default=2000, ge=1, le=10_000, description="How many responders the team page lists."
    )
    console_candidate_limit: int = Field(
        default=8, ge=1, le=50, description="How many candidates the console lists per incident."
    )

    coverage_interval_s: float = Field(
        default=15.0, gt=0, description="How often the live coverage map is recomputed."
    )
    coverage_resolution: int = Field(
        default=8, ge=5, le=10, description="H3 resolution of coverage cells (8: about 0.7 km²)."
    )
    coverage_category: str = Field(
        default="dispute",
        description="The category whose plan slots coverage measures (volunteer first, patrol).",
    )
    coverage_sample_interval_s: float = Field(
        default=300.0, gt=0, description="How often a coverage refresh is kept for shift reports."
    )
    coverage_sample_keep_h: float = Field(
        default=24.0 * 31, gt=0, description="How long kept coverage samples are retained."
    )
    coverage_tier_weights: dict[str, float] = Field(
        default={"key": 3.0, "urban": 2.0, "other": 1.0},
        description='Weight of a cell by zone tier in the zone_tier="all" coverage ratios.',
    )

    @field_validator("local_time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        ZoneInfo(value)  # raises for an unknown zone, so a typo fails at start-up
        return value
