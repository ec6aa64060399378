"""Intake's configuration."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from shared.settings import ServiceSettings
from shared.webapp import DEFAULT_CATEGORY_NAMES

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

    # The citizen app (``/app/``): its time zone, category names and base map.
    app_time_zone: str = "Asia/Shanghai"
    app_phone_country_code: str = Field(
        default="86", pattern=r"^[1-9]\d{0,3}$", description="Prefixed to a phone typed without +."
    )
    category_names: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {k: dict(v) for k, v in DEFAULT_CATEGORY_NAMES.items()}
    )
    app_grids_path: Path = Field(
        default=Path(__file__).resolve().parent.parent / "dispatch" / "data" / "grids.geojson",
        description="GeoJSON drawn as the app's base map (the configured grids).",
    )
