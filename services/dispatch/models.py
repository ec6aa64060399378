"""Dispatch's tables and API models."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict
from pydantic import Field as PydanticField
from sqlalchemy import Index, MetaData, text
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
    priority: int = 3
    status: str = Field(default="open", max_length=32, index=True)
    lat: float
    lon: float
    address: str | None = None
    grid: str | None = Field(default=None, max_length=64)
    office: str | None = Field(default=None, max_length=64)
    zone_tier: str | None = Field(default=None, max_length=16)
    slots_json: str = "[]"
    first_report_id: uuid.UUID = Field(unique=True)
    received_at: datetime = Field(sa_column=utc_column())
    last_report_at: datetime = Field(sa_column=utc_column())
    first_offer_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    no_responder_since: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    # A plan slot nobody could fill while another unit is coming: the amber notice.
    shortfall_since: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    closed_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    merged_into: uuid.UUID | None = None


class IncidentReport(DispatchTable, table=True):
    """A citizen's report and the incident it belongs to."""

    __tablename__ = "incident_reports"

    report_id: uuid.UUID = Field(primary_key=True)
    incident_id: uuid.UUID = Field(foreign_key="incidents.id", index=True)
    lat: float
    lon: float
    description: str | None = None
    received_at: datetime = Field(sa_column=utc_column())
    cancelled_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))


class Offer(DispatchTable, table=True):
    """An incident offered to one claimed responder for one unit of the plan."""

    __tablename__ = "offers"
    # One pending offer per responder, across every dispatch instance.
    __table_args__ = (
        Index(
            "ix_offers_one_pending_per_responder",
            "responder_id",
            unique=True,
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    incident_id: uuid.UUID = Field(foreign_key="incidents.id", index=True)
    responder_id: uuid.UUID = Field(index=True)
    slot: int
    kind: str = Field(max_length=16)
    distance_m: float
    eta_s: float
    status: str = Field(default="pending", max_length=16, index=True)
    offered_at: datetime = Field(sa_column=utc_column())
    expires_at: datetime = Field(sa_column=utc_column())
    answered_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    trace_json: str | None = Field(default=None, description="The decision trace, as JSON.")


class Unit(DispatchTable, table=True):
    """A responder working an incident."""

    __tablename__ = "units"
    # One active (not cleared) unit per responder, across every dispatch instance.
    __table_args__ = (
        Index(
            "ix_units_one_active_per_responder",
            "responder_id",
            unique=True,
            postgresql_where=text("status <> 'cleared'"),
            sqlite_where=text("status <> 'cleared'"),
        ),
    )

    incident_id: uuid.UUID = Field(foreign_key="incidents.id", primary_key=True)
    responder_id: uuid.UUID = Field(primary_key=True, index=True)
    kind: str = Field(max_length=16)
    slot: int
    status: str = Field(default="assigned", max_length=16)
    eta_s: float | None = None
    assigned_at: datetime = Field(sa_column=utc_column())
    responding_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    on_scene_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    cleared_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))


class Milestone(DispatchTable, table=True):
    """One 1-3-5 stage of an incident."""

    __tablename__ = "milestones"

    incident_id: uuid.UUID = Field(foreign_key="incidents.id", primary_key=True)
    stage: str = Field(primary_key=True, max_length=16)
    position: int
    label: str = Field(max_length=32)
    kind: str = Field(max_length=16)
    target_s: int
    due_at: datetime = Field(sa_column=utc_column())
    state: str = Field(default="pending", max_length=16)
    seconds: float | None = None


class TimelineEntry(DispatchTable, table=True):
    """Something that happened to an incident, in order."""

    __tablename__ = "timeline"

    id: int | None = Field(default=None, primary_key=True)
    incident_id: uuid.UUID = Field(foreign_key="incidents.id", index=True)
    at: datetime = Field(sa_column=utc_column())
    type: str = Field(max_length=64)
    detail: str = "{}"


class Timer(DispatchTable, table=True):
    """A persisted deadline: an offer's expiry or a stage's target."""

    __tablename__ = "timers"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    kind: str = Field(max_length=16)
    incident_id: uuid.UUID = Field(index=True)
    ref: str = Field(max_length=64)
    due_at: datetime = Field(sa_column=utc_column(index=True))


class CoverageSample(DispatchTable, table=True):
    """A coverage ratio as one refresh measured it, for the shift report's curve."""

    __tablename__ = "coverage_samples"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_column=utc_column(index=True))
    office: str = Field(max_length=64)
    zone_tier: str = Field(max_length=16)
    stage: str = Field(max_length=16)
    ratio: float


# --- API ----------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UnitStatusUpdate(_Body):
    """A unit's new status."""

    status: Literal["en_route", "on_scene", "cleared"]


class AssignRequest(_Body):
    """A dispatcher's manual assignment; no responder means the next nearest."""

    responder_id: uuid.UUID | None = None


class MergeRequest(_Body):
    """Merge this incident into another."""

    into: uuid.UUID


class MilestonePublic(BaseModel):
    """A stage's state: pending, met (with seconds taken) or breached."""

    model_config = ConfigDict(from_attributes=True)

    stage: str
    label: str
    target_s: int
    due_at: datetime
    state: str
    seconds: float | None


class TraceCandidate(BaseModel):
    """One of the top candidates the claim ranked, and what became of them."""

    responder_id: uuid.UUID
    kind: str
    travel_mode: str
    skills: list[str]
    distance_m: float
    eta_s: float
    outcome: str = Field(description="claimed, passed (see reason) or ranked_lower.")
    reason: str | None = None


class TracePassedOver(BaseModel):
    """A responder closer than the one offered (by straight line or ETA) who was not asked."""

    responder_id: uuid.UUID
    kind: str
    travel_mode: str
    distance_m: float
    eta_s: float
    reason: str = Field(
        description="busy, declined_earlier, no_answer_earlier, withdrawn_earlier, "
        "on_this_incident, wrong_kind, wrong_skill, off_duty, stale_position, revoked "
        "or slower_eta (closer in a straight line, slower to arrive)."
    )


class OfferTrace(BaseModel):
    """Why this responder: what the claim considered when the offer was made."""

    slot: int = Field(description="The plan slot the offer fills (0 = the first).")
    slot_kinds: list[str]
    slot_skills: list[str]
    radius_m: float | None = Field(description="The search radius that settled the ranking.")
    radius_step: int | None = Field(description="Which radius step it fell in (1 = first).")
    candidates: list[TraceCandidate]
    passed_over: list[TracePassedOver]


class OfferPublic(BaseModel):
    """An offer as the console and the responder see it."""

    model_config = ConfigDict(from_attributes=True)

    offer_id: uuid.UUID = PydanticField(validation_alias=AliasChoices("offer_id", "id"))
    incident_id: uuid.UUID
    responder_id: uuid.UUID
    kind: str
    distance_m: float
    eta_s: float
    status: str
    offered_at: datetime
    expires_at: datetime
    answered_at: datetime | None
    slot: int | None = None
    trace: OfferTrace | None = None


class UnitPublic(BaseModel):
    """A unit on an incident."""

    model_config = ConfigDict(from_attributes=True)

    responder_id: uuid.UUID
    kind: str
    status: str
    eta_s: float | None
    assigned_at: datetime
    on_scene_at: datetime | None
    cleared_at: datetime | None


class ReportPublic(BaseModel):
    """A report joined to an incident."""

    model_config = ConfigDict(from_attributes=True)

    report_id: uuid.UUID
    lat: float
    lon: float
    received_at: datetime
    cancelled_at: datetime | None


class TimelinePublic(BaseModel):
    """One entry of an incident's timeline."""

    at: datetime
    type: str
    detail: dict[str, Any]


class IncidentPublic(BaseModel):
    """An incident as the queue shows it."""

    incident_id: uuid.UUID = PydanticField(validation_alias=AliasChoices("incident_id", "id"))
    category: str
    priority: int
    status: str
    lat: float
    lon: float
    address: str | None
    grid: str | None
    office: str | None
    zone_tier: str | None
    received_at: datetime
    no_responder: bool = Field(description="Red: nobody is coming for an unfilled slot.")
    slot_shortfall: bool = Field(
        default=False, description="Amber: a slot is unfilled, but another unit is coming."
    )
    units_required: int
    unit_count: int
    open_offer_count: int
    next_due_at: datetime | None
    milestones: list[MilestonePublic]


class IncidentDetail(IncidentPublic):
    """An incident with its reports, offers, units and timeline."""

    merged_into: uuid.UUID | None
    closed_at: datetime | None
    reports: list[ReportPublic]
    offers: list[OfferPublic]
    units: list[UnitPublic]
    timeline: list[TimelinePublic]
