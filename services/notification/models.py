"""Notification's tables and API models."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, model_validator
from sqlalchemy import MetaData, Text, UniqueConstraint
from sqlmodel import Column, SQLModel
from sqlmodel import Field as SQLField

from shared.db import utc_column

Audience = Literal["responder", "reporter", "dispatcher"]
DeliveryStatus = Literal["pending", "sent", "failed"]
AttemptOutcome = Literal["sent", "retry", "failed"]


class NotificationTable(SQLModel):
    """Base of notification's tables; they live in notification's own metadata."""

    metadata = MetaData()


class Delivery(NotificationTable, table=True):
    """One message to one recipient over one channel; written pending before any attempt."""

    __tablename__ = "deliveries"
    # A redelivered event finds its rows already there, even after a crash.
    __table_args__ = (UniqueConstraint("event_id", "channel", "recipient"),)

    id: uuid.UUID = SQLField(default_factory=uuid.uuid4, primary_key=True)
    event_id: str = SQLField(max_length=36, index=True)
    event_type: str = SQLField(max_length=64)
    channel: str = SQLField(max_length=16)
    audience: str = SQLField(max_length=16)
    recipient: str = SQLField(max_length=64)
    target: str | None = SQLField(default=None, max_length=2000)
    incident_id: uuid.UUID | None = SQLField(default=None, index=True)
    responder_id: uuid.UUID | None = SQLField(default=None, index=True)
    message: str = SQLField(sa_column=Column(Text, nullable=False))
    status: str = SQLField(default="pending", max_length=16, index=True)
    attempts: int = 0
    last_error: str | None = SQLField(default=None, max_length=500)
    occurred_at: datetime = SQLField(sa_column=utc_column())
    created_at: datetime = SQLField(sa_column=utc_column())
    sent_at: datetime | None = SQLField(default=None, sa_column=utc_column(nullable=True))
    lease_until: datetime | None = SQLField(default=None, sa_column=utc_column(nullable=True))
    dead_lettered_at: datetime | None = SQLField(default=None, sa_column=utc_column(nullable=True))


class DeliveryAttempt(NotificationTable, table=True):
    """One try at a delivery: when, how it went and how long it took."""

    __tablename__ = "delivery_attempts"

    id: uuid.UUID = SQLField(default_factory=uuid.uuid4, primary_key=True)
    delivery_id: uuid.UUID = SQLField(foreign_key="deliveries.id", index=True)
    attempt: int
    channel: str = SQLField(max_length=16)
    outcome: str = SQLField(max_length=16)
    latency_ms: float
    error: str | None = SQLField(default=None, max_length=500)
    event_id: str = SQLField(max_length=36)
    incident_id: uuid.UUID | None = None
    responder_id: uuid.UUID | None = None
    attempted_at: datetime = SQLField(sa_column=utc_column())


class IncidentParty(NotificationTable, table=True):
    """Who an incident concerns, learnt from its events: later events carry only its id."""

    __tablename__ = "incident_parties"

    incident_id: uuid.UUID = SQLField(primary_key=True)
    party: str = SQLField(primary_key=True, max_length=16)  # "responder" or "report"
    ref_id: uuid.UUID = SQLField(primary_key=True)


class Webhook(NotificationTable, table=True):
    """A registered webhook: a reporter's app for one report, or a dispatch-room system."""

    __tablename__ = "webhooks"

    id: uuid.UUID = SQLField(default_factory=uuid.uuid4, primary_key=True)
    url: str = SQLField(max_length=2000)
    audience: str = SQLField(max_length=16, index=True)
    report_id: uuid.UUID | None = SQLField(default=None, index=True)
    created_by: str = SQLField(max_length=64)
    created_at: datetime = SQLField(sa_column=utc_column())


class PushSubscriptionRow(NotificationTable, table=True):
    """One phone's Web Push subscription, kept here (not in Redis) so it outlives Redis."""

    __tablename__ = "push_subscriptions"

    responder_id: str = SQLField(primary_key=True, max_length=64)
    # A digest of the endpoint: endpoints are long, and one phone has one endpoint.
    endpoint_key: str = SQLField(primary_key=True, max_length=32)
    subscription: str = SQLField(sa_column=Column(Text, nullable=False))
    updated_at: datetime = SQLField(sa_column=utc_column())


class WebhookCreate(BaseModel):
    """The body of ``POST /v1/webhooks``; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    url: AnyHttpUrl
    audience: Literal["reporter", "dispatcher"]
    report_id: uuid.UUID | None = None

    @model_validator(mode="after")
    def _report_matches_audience(self) -> WebhookCreate:
        if self.audience == "reporter" and self.report_id is None:
            raise ValueError("a reporter webhook needs report_id")
        if self.audience == "dispatcher" and self.report_id is not None:
            raise ValueError("a dispatcher webhook takes no report_id")
        return self


class ErrorDetail(BaseModel):
    """What went wrong: a stable code, a message for people and optional details."""

    code: str
    message: str
    details: Any = None


class ErrorPublic(BaseModel):
    """The error shape every service answers with."""

    error: ErrorDetail


class WebhookPublic(BaseModel):
    """A registered webhook as the API shows it."""

    webhook_id: uuid.UUID
    url: str
    audience: str
    report_id: uuid.UUID | None
    created_at: datetime


class AttemptPublic(BaseModel):
    """One attempt in the delivery log."""

    attempt: int
    outcome: str
    latency_ms: float
    error: str | None
    attempted_at: datetime


class DeliveryPublic(BaseModel):
    """One delivery in the log, with every attempt at it."""

    delivery_id: uuid.UUID
    event_id: str
    event_type: str
    channel: str
    audience: str
    recipient: str
    incident_id: uuid.UUID | None
    responder_id: uuid.UUID | None
    status: str
    attempts: list[AttemptPublic]
    occurred_at: datetime
    created_at: datetime
    sent_at: datetime | None
    dead_lettered_at: datetime | None
