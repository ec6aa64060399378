"""Volunteer-locator's tables and API models (the claim contract's are in ``shared.claims``)."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import JSON, Column, MetaData, String
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from shared.claims import (
    Latitude,
    Longitude,
    Skill,
)
from shared.db import utc_column
from shared.events import Availability, ResponderKind, TravelMode
from shared.outbox import define_outbox_table


class LocatorTable(SQLModel):
    """Base of the locator's tables; they live in the locator's own metadata."""

    metadata = MetaData()


OUTBOX = define_outbox_table(LocatorTable.metadata)


class Responder(LocatorTable, table=True):
    """A registered responder and their duty state."""

    __tablename__ = "responders"

    id: uuid.UUID = SQLField(default_factory=uuid.uuid4, primary_key=True)
    name: str = SQLField(max_length=200)
    kind: ResponderKind = SQLField(sa_column=Column(String(32), nullable=False, index=True))
    skills: list[str] = SQLField(default_factory=list, sa_column=Column(JSON, nullable=False))
    travel_mode: TravelMode = SQLField(sa_column=Column(String(32), nullable=False))
    office: str | None = SQLField(default=None, max_length=100, index=True)
    grid: str | None = SQLField(default=None, max_length=100, index=True)
    phone: str | None = SQLField(default=None, max_length=32)
    on_duty: bool = SQLField(default=False, index=True)
    duty_changed_at: datetime = SQLField(sa_column=utc_column())
    registered_at: datetime = SQLField(sa_column=utc_column())


class LastPosition(LocatorTable, table=True):
    """A responder's newest known position, written at most every few seconds per
    responder, so the index can be rebuilt when Redis comes back empty."""

    __tablename__ = "last_positions"

    responder_id: uuid.UUID = SQLField(primary_key=True)
    lat: float
    lon: float
    recorded_at: datetime = SQLField(sa_column=utc_column())


class ResponderCreate(BaseModel):
    """The body of ``POST /v1/responders``; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    kind: ResponderKind
    skills: list[Skill] = Field(default_factory=list, max_length=20)
    travel_mode: TravelMode
    office: str | None = Field(default=None, max_length=100)
    grid: str | None = Field(default=None, max_length=100)
    phone: str | None = Field(default=None, pattern=r"^\+[1-9]\d{6,14}$")


class ResponderUpdate(BaseModel):
    """The body of ``PATCH /v1/responders/{id}``: only the fields sent change; ``null``
    clears the office, grid or phone. Kind and duty are not edited here."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    skills: list[Skill] | None = Field(default=None, max_length=20)
    travel_mode: TravelMode | None = None
    office: str | None = Field(default=None, max_length=100)
    grid: str | None = Field(default=None, max_length=100)
    phone: str | None = Field(default=None, pattern=r"^\+[1-9]\d{6,14}$")


class ResponderCreated(BaseModel):
    """The 201 answer to a registration: the id and the responder app's token."""

    responder_id: uuid.UUID
    token: str


class ResponderToken(BaseModel):
    """A fresh token for a registered responder (after a revocation, say)."""

    responder_id: uuid.UUID
    token: str


class ResponderRevocation(BaseModel):
    """The answer to a revocation: every token issued up to ``revoked_at`` is refused."""

    responder_id: uuid.UUID
    revoked_at: datetime
    on_duty: bool


class DutyUpdate(BaseModel):
    """The body of ``PUT /v1/responders/{id}/duty``."""

    model_config = ConfigDict(extra="forbid")

    on_duty: bool


class Position(BaseModel):
    """Where a responder was last seen."""

    lat: float
    lon: float
    recorded_at: datetime


class ResponderPublic(BaseModel):
    """A responder as dispatchers (and the responder) see them."""

    responder_id: uuid.UUID
    name: str
    kind: ResponderKind
    skills: list[str]
    travel_mode: TravelMode
    office: str | None
    grid: str | None
    phone: str | None
    on_duty: bool
    status: Availability | None
    position: Position | None
    registered_at: datetime


class ResponderOnMap(BaseModel):
    """One responder on the dispatcher console's map and team page (``GET /v1/responders``)."""

    responder_id: uuid.UUID
    kind: ResponderKind
    status: Availability | None
    lat: float | None
    lon: float | None
    last_seen_at: datetime | None
    name: str
    skills: list[str]
    travel_mode: TravelMode
    on_duty: bool
    office: str | None
    grid: str | None
    revoked_at: datetime | None = None


MAP_DEFAULT_LIMIT = 2000
MAP_MAX_LIMIT = 10_000


class PingIn(BaseModel):
    """The body of ``POST /v1/responders/{id}/location``."""

    model_config = ConfigDict(extra="forbid")

    lat: Latitude
    lon: Longitude
    accuracy_m: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    recorded_at: datetime | None = None


class BatchPing(PingIn):
    """One ping in a gateway's batch; it names its responder."""

    responder_id: uuid.UUID


MAX_BATCH = 1000


class PingBatch(BaseModel):
    """The body of ``POST /v1/locations/batch``: at most 1,000 pings."""

    model_config = ConfigDict(extra="forbid")

    pings: list[BatchPing] = Field(min_length=1, max_length=MAX_BATCH)


class PingsAccepted(BaseModel):
    """How many pings went onto ``responder-locations``."""

    accepted: int


class NearestResponder(BaseModel):
    """One answer of ``GET /v1/responders/nearest``."""

    responder_id: uuid.UUID
    kind: ResponderKind
    distance_m: float
    eta_s: float
    status: Availability
