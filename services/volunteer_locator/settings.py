"""Volunteer-locator's configuration."""

from __future__ import annotations

from shared.settings import ServiceSettings


class LocatorSettings(ServiceSettings):
    """Environment variables for the volunteer-locator."""

    service_name: str = "volunteer-locator"
    port: int = 8003
    database_url: str = "sqlite+aiosqlite:///./.run/volunteer-locator.db"
