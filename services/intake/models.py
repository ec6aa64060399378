"""Intake's tables and API models."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import MetaData
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from shared.db import utc_column
from shared.events import GeoPoint
from shared.outbox import define_outbox_table


class IntakeTable(SQLModel):
    """Base of intake's tables; they live in intake's own metadata."""

    metadata = MetaData()


OUTBOX = define_outbox_table(IntakeTable.metadata)


class Report(IntakeTable, table=True):
    """A citizen's report as intake saved it."""

    __tablename__ = "reports"

    id: uuid.UUID = SQLField(default_factory=uuid.uuid4, primary_key=True)
    category: str = SQLField(max_length=64, index=True)
    lat: float
    lon: float
    accuracy_m: float | None = None
    description: str | None = SQLField(default=None, max_length=2000)
    address: str | None = SQLField(default=None, max_length=500)
    reporter_name: str | None = SQLField(default=None, max_length=200)
    reporter_phone: str | None = SQLField(default=None, max_length=32)
    device_id: str | None = SQLField(default=None, max_length=200)
    status: str = SQLField(default="received", max_length=32)
    incident_id: uuid.UUID | None = SQLField(default=None, index=True)
    received_at: datetime = SQLField(sa_column=utc_column())


class ReporterContact(BaseModel):
    """Who is reporting, all optional."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=200)
    phone: str | None = Field(default=None, pattern=r"^\+[1-9]\d{6,14}$")
    device_id: str | None = Field(default=None, max_length=200)


class ReportCreate(BaseModel):
    """The body of ``POST /v1/reports``; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    category: str = Field(min_length=1, max_length=64)
    location: GeoPoint
    description: str | None = Field(default=None, max_length=2000)
    address: str | None = Field(default=None, max_length=500)
    reporter: ReporterContact | None = None


class ReportAccepted(BaseModel):
    """The 202 answer to a new report."""

    report_id: uuid.UUID
    tracking_token: str
    status: str
    received_at: datetime
