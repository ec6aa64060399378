"""Intake's configuration."""

from __future__ import annotations

from shared.settings import ServiceSettings

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
    categories: list[str] = list(DEFAULT_CATEGORIES)
