"""Notification's tables."""

from __future__ import annotations

from sqlalchemy import MetaData
from sqlmodel import SQLModel


class NotificationTable(SQLModel):
    """Base of notification's tables; they live in notification's own metadata."""

    metadata = MetaData()
