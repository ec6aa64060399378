"""Intake's tables and API models."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import BigInteger, Column, Integer, MetaData, UniqueConstraint
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from shared.claims import MAX_GEO_LAT
from shared.db import utc_column
from shared.outbox import define_outbox_table
from shared.responders import ResponderKind
from shared.text import OneLine, PlainText

ReportStatus = Literal[
    "received", "dispatched", "responder_assigned", "on_scene", "resolved", "cancelled"
]

# How far along each status is; a report's status only ever moves forward.
STATUS_RANK: dict[str, int] = {
    "received": 0,
    "dispatched": 1,
    "responder_assigned": 2,
    "on_scene": 3,
    "resolved": 4,
    "cancelled": 4,
}
FINAL_STATUSES = frozenset({"resolved", "cancelled"})


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


class IdempotencyRecord(IntakeTable, table=True):
    """An ``Idempotency-Key`` that created a report, with the hash of the body it came with.

    The key is the primary key, so of two posts racing with one key only one can commit.
    """

    __tablename__ = "idempotency_keys"

    key: str = SQLField(primary_key=True, max_length=200)
    body_sha256: str = SQLField(max_length=64)
    report_id: uuid.UUID = SQLField(foreign_key="reports.id")
    created_at: datetime = SQLField(sa_column=utc_column())


class TimelineEntry(IntakeTable, table=True):
    """One step of a report's progress as its reporter sees it.

    ``event_id`` is the incident event that caused the step (none for the reporter's own
    steps); it is unique per report so a redelivered event adds nothing.
    """

    __tablename__ = "timeline"
    __table_args__ = (UniqueConstraint("report_id", "event_id"),)

    # An autoincrementing id doubles as the SSE event id, so Last-Event-ID can resume.
    id: int | None = SQLField(
        default=None,
        sa_column=Column(
            BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
        ),
    )
    report_id: uuid.UUID = SQLField(foreign_key="reports.id", index=True)
    step: str = SQLField(max_length=32)
    at: datetime = SQLField(sa_column=utc_column())
    responder_kind: str | None = SQLField(default=None, max_length=32)
    eta_s: float | None = None
    # An opaque reference to the unit (see timeline.unit_ref), never the responder's id.
    unit_ref: str | None = SQLField(default=None, max_length=16)
    event_id: str | None = SQLField(default=None, max_length=36, index=True)


# --- API models ----------------------------------------------------------------


class ReportLocation(BaseModel):
    """Where the trouble is. Strict: numbers must be JSON numbers, finite and in range."""

    model_config = ConfigDict(extra="forbid", strict=True)

    # Beyond ±85.05° the locator's index (Redis GEO) cannot hold a point; the service
    # area check then narrows it to where responders are.
    lat: float = Field(ge=-MAX_GEO_LAT, le=MAX_GEO_LAT, allow_inf_nan=False)
    lon: float = Field(ge=-180, le=180, allow_inf_nan=False)
    accuracy_m: float | None = Field(default=None, ge=0, le=100_000, allow_inf_nan=False)


class ReporterContact(BaseModel):
    """Who is reporting, all optional."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: OneLine | None = Field(default=None, max_length=200)
    phone: str | None = Field(
        default=None,
        pattern=r"^\+[1-9]\d{6,14}$",
        description="E.164, for example +8613800138000",
    )
    device_id: OneLine | None = Field(default=None, min_length=1, max_length=200)


class ReportCreate(BaseModel):
    """The body of ``POST /v1/reports``; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", strict=True)

    category: OneLine = Field(min_length=1, max_length=64)
    location: ReportLocation
    description: PlainText | None = Field(default=None, max_length=2000)
    address: OneLine | None = Field(default=None, max_length=500)
    reporter: ReporterContact | None = None


class ReportAccepted(BaseModel):
    """The 202 answer to a new report (or to a repeat of it with the same key)."""

    report_id: uuid.UUID
    tracking_token: str
    status: ReportStatus
    received_at: datetime


class TimelineStep(BaseModel):
    """One step the reporter sees. A responder shows only as a kind and an ETA."""

    step: ReportStatus
    at: datetime
    responder_kind: ResponderKind | None = None
    eta_s: float | None = None


class ReportPublic(BaseModel):
    """The reporter's view of their report."""

    report_id: uuid.UUID
    category: str
    status: ReportStatus
    received_at: datetime
    timeline: list[TimelineStep]


class StreamUpdate(BaseModel):
    """One live update on the reporter's stream: the new status and the step that set it."""

    report_id: uuid.UUID
    status: ReportStatus
    entry: TimelineStep
