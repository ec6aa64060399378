"""Dispatch's tables and API models."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import MetaData
from sqlmodel import Field, SQLModel

from shared.db import utc_column
from shared.outbox import define_outbox_table


class DispatchTable(SQLModel):
    """Base of dispatch's tables; they live in dispatch's own metadata."""

    metadata = MetaData()


OUTBOX = define_outbox_table(DispatchTable.metadata)


class Incident(DispatchTable, table=True):
    """Something happening that needs a response."""

    __tablename__ = "incidents"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    category: str = Field(max_length=64, index=True)
    status: str = Field(default="open", max_length=32, index=True)
    lat: float
    lon: float
    address: str | None = None
    first_report_id: uuid.UUID = Field(unique=True)
    received_at: datetime = Field(sa_column=utc_column())


class IncidentPublic(BaseModel):
    """An incident as the queue shows it."""

    incident_id: uuid.UUID
    category: str
    status: str
    lat: float
    lon: float
    address: str | None
    received_at: datetime
