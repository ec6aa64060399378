"""Volunteer-locator's tables."""

from __future__ import annotations

from sqlalchemy import MetaData
from sqlmodel import SQLModel


class LocatorTable(SQLModel):
    """Base of the locator's tables; they live in the locator's own metadata."""

    metadata = MetaData()
