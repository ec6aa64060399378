"""Volunteer-locator's configuration."""

from __future__ import annotations

from pydantic import Field

from shared.categories import load_category_labels
from shared.responders import DEFAULT_SPEEDS_KMH
from shared.settings import ServiceSettings

DEFAULT_RADIUS_STEPS_M: list[float] = [500, 1000, 2000, 5000, 10000]


class LocatorSettings(ServiceSettings):
    """Environment variables for the volunteer-locator."""

    service_name: str = "volunteer-locator"
    port: int = 8003
    database_url: str = "sqlite+aiosqlite:///./.run/volunteer-locator.db"
    # A batch of 1,000 pings is about 150 KB; the platform default of 16 KB would refuse it.
    max_body_bytes: int = Field(default=512 * 1024, ge=1024)

    redis_prefix: str = "locator:"
    stale_after_s: float = Field(default=120, gt=0)
    speeds_kmh: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_SPEEDS_KMH))
    radius_steps_m: list[float] = Field(default_factory=lambda: list(DEFAULT_RADIUS_STEPS_M))
    max_radius_m: float = Field(default=10_000, gt=0)
    claim_hold_s: int = Field(default=45, ge=1, le=3600)
    claim_candidates: int = Field(default=5, ge=1, le=50)
    trace_passed_max: int = Field(
        default=20, ge=0, le=200, description="Most passed-over responders a claim's trace lists."
    )
    trace_max_radius_m: float = Field(
        default=3000,
        ge=0,
        description="How far beyond straight-line distance a trace looks "
        "for responders who might have been faster by ETA.",
    )
    responder_token_ttl_s: int = Field(default=90 * 24 * 3600, ge=60)
    sweep_interval_s: float = Field(default=1.0, gt=0)
    gauge_interval_s: float = Field(default=5.0, gt=0)
    ping_batch_max_records: int = Field(default=2000, ge=1)
    ping_raw_lane: bool = Field(
        default=True,
        description="Index pings straight from their bytes (orjson), skipping the pydantic "
        "envelope and event per ping; false reads them through the typed handlers.",
    )
    sync_chunk: int = Field(default=2000, ge=1)
    position_persist_interval_s: float = Field(
        default=15.0,
        ge=0,
        description="At most this often per responder, the newest ping is written to the"
        " database, so the index can be rebuilt with positions if Redis comes back empty.",
    )
    redis_epoch_interval_s: float = Field(
        default=1.0, gt=0, description="How often the locator checks Redis still holds its index."
    )
    pairing_ttl_s: int = Field(
        default=600, ge=1, le=3600, description="How long a sign-in pairing code is valid."
    )

    # Trades of pairing codes per caller address and window.
    pairing_attempts_per_window: int = Field(default=10, ge=1)
    pairing_window_s: int = Field(default=60, ge=1)

    # The responder app (``/responder/``): where the browser finds the other services
    # ("" means the same origin, as behind the gateway), its time zone and categories.
    app_public_url: str = Field(
        default="", description="Base URL of this service as phones see it (for QR links)."
    )
    app_dispatch_url: str = ""
    app_notification_url: str = ""
    app_time_zone: str = "Asia/Shanghai"
    category_names: dict[str, dict[str, str]] = Field(default_factory=load_category_labels)

    @property
    def search_steps_m(self) -> list[float]:
        """The radius steps, cut at the maximum radius (which is always the last step)."""
        steps = sorted(s for s in self.radius_steps_m if 0 < s < self.max_radius_m)
        return [*steps, self.max_radius_m]
