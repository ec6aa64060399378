"""Notification's configuration."""

from __future__ import annotations

from shared.settings import ServiceSettings


class NotificationSettings(ServiceSettings):
    """Environment variables for notification."""

    service_name: str = "notification"
    port: int = 8004
    database_url: str = "sqlite+aiosqlite:///./.run/notification.db"
