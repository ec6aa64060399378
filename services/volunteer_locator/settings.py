"""Volunteer-locator's configuration."""

from __future__ import annotations

from pydantic import Field

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
    responder_token_ttl_s: int = Field(default=90 * 24 * 3600, ge=60)
    sweep_interval_s: float = Field(default=1.0, gt=0)
    gauge_interval_s: float = Field(default=5.0, gt=0)
    ping_batch_max_records: int = Field(default=2000, ge=1)
    sync_chunk: int = Field(default=2000, ge=1)

    @property
    def search_steps_m(self) -> list[float]:
        """The radius steps, cut at the maximum radius (which is always the last step)."""
        steps = sorted(s for s in self.radius_steps_m if 0 < s < self.max_radius_m)
        return [*steps, self.max_radius_m]
