"""Intake's configuration."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from shared.categories import load_category_labels
from shared.settings import ServiceSettings

# The dispatch grids' file (read as data: intake never imports dispatch's code).
DEFAULT_SERVICE_AREA = Path(__file__).resolve().parents[1] / "dispatch" / "data" / "grids.geojson"

DEFAULT_CATEGORIES = (
    "violence",
    "dispute",
    "theft",
    "suspicious",
    "fraud",
    "medical",
    "fire",
    "traffic",
    "missing_person",
    "other",
)


class IntakeSettings(ServiceSettings):
    """Environment variables for intake."""

    service_name: str = "intake"
    port: int = 8001
    database_url: str = "sqlite+aiosqlite:///./.run/intake.db"
    categories: list[str] = Field(default=list(DEFAULT_CATEGORIES), min_length=1)

    tracking_token_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)

    # Fixed windows in Redis; a repeat of an accepted post (same Idempotency-Key) is free.
    rate_limit_window_s: int = Field(default=60, ge=1)
    rate_limit_per_device: int = Field(default=5, ge=1)
    rate_limit_per_address: int = Field(default=30, ge=1)

    # A stream re-reads the timeline this often even without a notification, in case
    # a Redis pub/sub message was lost; it is also the keep-alive ping interval.
    stream_resync_s: float = Field(default=15.0, gt=0)

    # Where reports are taken: the extent of the polygons in this GeoJSON file (the
    # dispatch grids by default), grown by the margin; an explicit polygon of
    # [lon, lat] points replaces it. An empty file name turns the area check off (the
    # coordinates must still be ones the locator's index can hold).
    service_area_geojson: str = str(DEFAULT_SERVICE_AREA)
    service_area_margin_m: float = Field(default=2000.0, ge=0, le=1_000_000)
    service_area_polygon: list[tuple[float, float]] | None = Field(default=None, min_length=3)

    # An Idempotency-Key is remembered this long, per caller (see service.idempotency_scope).
    idempotency_ttl_s: int = Field(default=24 * 3600, ge=60)
    # The citizen app (``/app/``): its time zone, category names and base map.
    app_time_zone: str = "Asia/Shanghai"
    app_phone_country_code: str = Field(
        default="86", pattern=r"^[1-9]\d{0,3}$", description="Prefixed to a phone typed without +."
    )
    category_names: dict[str, dict[str, str]] = Field(default_factory=load_category_labels)
    app_grids_path: Path = Field(
        default=Path(__file__).resolve().parent.parent / "dispatch" / "data" / "grids.geojson",
        description="GeoJSON drawn as the app's base map (the configured grids).",
    )
