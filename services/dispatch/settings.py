"""Dispatch's configuration."""

from __future__ import annotations

from shared.settings import ServiceSettings


class DispatchSettings(ServiceSettings):
    """Environment variables for dispatch."""

    service_name: str = "dispatch"
    port: int = 8002
    database_url: str = "sqlite+aiosqlite:///./.run/dispatch.db"
    locator_url: str = "http://127.0.0.1:8003"
