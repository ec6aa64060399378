"""The events the services pass over Kafka (docs/contract.md, Events).

On the wire every event is an :class:`Envelope` whose ``payload`` is one of the
:class:`Event` models below. Events are named in the past tense, are immutable,
refuse unknown fields, and carry the version of their schema.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from shared.clock import utc

# Re-exported: the events name them, and callers have always imported them from here.
from shared.responders import Availability as Availability
from shared.responders import ResponderKind as ResponderKind
from shared.responders import TravelMode as TravelMode
from shared.responders import UnitStatus as UnitStatus

REPORTS = "reports"
INCIDENTS = "incidents"
RESPONDER_LOCATIONS = "responder-locations"
RESPONDER_STATUS = "responder-status"
TOPICS: tuple[str, ...] = (REPORTS, INCIDENTS, RESPONDER_LOCATIONS, RESPONDER_STATUS)


def dead_letter_topic(topic: str) -> str:
    """Return the dead-letter topic that goes with ``topic``."""
    return f"{topic}.dlq"


UtcDatetime = Annotated[datetime, AfterValidator(utc)]
Stage = str  # "T1", "T3", "T5" in the default plan; plans may name their own


class Event(BaseModel):
    """Base of every event payload."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    topic: ClassVar[str]
    key_field: ClassVar[str]
    version: ClassVar[int] = 1

    @property
    def key(self) -> str:
        """The partition key: all events about one entity stay in order."""
        return str(getattr(self, self.key_field))


class GeoPoint(BaseModel):
    """A WGS-84 position."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lat: float = Field(ge=-90, le=90, allow_inf_nan=False)
    lon: float = Field(ge=-180, le=180, allow_inf_nan=False)
    accuracy_m: float | None = Field(default=None, ge=0, allow_inf_nan=False)


# --- reports ------------------------------------------------------------------


class ReportEvent(Event):
    topic: ClassVar[str] = REPORTS
    key_field: ClassVar[str] = "report_id"


class ReportReceived(ReportEvent):
    """A citizen's report was accepted by intake. Its ``received_at`` starts the 1-3-5 clocks."""

    report_id: uuid.UUID
    category: str
    location: GeoPoint
    description: str | None = None
    address: str | None = None
    received_at: UtcDatetime


class ReportCancelled(ReportEvent):
    """The reporter withdrew the report."""

    report_id: uuid.UUID
    cancelled_at: UtcDatetime
    reason: str = "reporter_cancelled"


# --- incidents ----------------------------------------------------------------


class IncidentEvent(Event):
    topic: ClassVar[str] = INCIDENTS
    key_field: ClassVar[str] = "incident_id"

    incident_id: uuid.UUID


class StageTarget(BaseModel):
    """One stage of a response plan: its name, what it means and its deadline in seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stage: Stage
    label: str
    target_s: int = Field(gt=0)


class IncidentOpened(IncidentEvent):
    """A report opened a new incident."""

    report_id: uuid.UUID
    category: str
    priority: int
    location: GeoPoint
    address: str | None = None
    grid: str | None = None
    office: str | None = None
    zone_tier: str | None = None
    received_at: UtcDatetime
    targets: tuple[StageTarget, ...]


class ReportMerged(IncidentEvent):
    """A report joined an open incident (a duplicate, or a dispatcher's merge)."""

    report_id: uuid.UUID
    from_incident_id: uuid.UUID | None = None


class ResponderOffered(IncidentEvent):
    """A responder was claimed and offered the incident; the offer lapses at ``expires_at``."""

    offer_id: uuid.UUID
    responder_id: uuid.UUID
    kind: ResponderKind
    category: str
    location: GeoPoint
    address: str | None = None
    distance_m: float
    eta_s: float
    expires_at: UtcDatetime


class OfferAccepted(IncidentEvent):
    """The offered responder accepted; they are now a unit on the incident."""

    offer_id: uuid.UUID
    responder_id: uuid.UUID
    kind: ResponderKind
    eta_s: float


class OfferDeclined(IncidentEvent):
    """The offered responder declined."""

    offer_id: uuid.UUID
    responder_id: uuid.UUID


class OfferExpired(IncidentEvent):
    """The offer lapsed unanswered."""

    offer_id: uuid.UUID
    responder_id: uuid.UUID


class OfferWithdrawn(IncidentEvent):
    """An open offer was taken back because the incident closed or was merged."""

    offer_id: uuid.UUID
    responder_id: uuid.UUID
    reason: str


class NoResponderAvailable(IncidentEvent):
    """Nobody eligible was free within the widest search radius."""

    category: str
    radius_m: float
    kinds: tuple[ResponderKind, ...]
    # Why: "nobody_free" (retried as responders come free), or a search that can never
    # succeed ("location_unsearchable", "plan_unfillable", "locator_refused_search").
    reason: str = Field(default="nobody_free", max_length=64)


class SlotUnfilled(IncidentEvent):
    """A plan slot nobody eligible could fill, while another unit is coming (amber, not red).

    ``NoResponderAvailable`` follows if the coming units decline or clear first.
    """

    category: str
    kinds: tuple[ResponderKind, ...]
    coming: int = Field(description="Units on their way or offers open for the incident.")


class UnitStatusChanged(IncidentEvent):
    """A unit on the incident moved on: assigned, en route, on scene or cleared.

    A dispatcher's direct assignment (no offer to accept) says so in ``assigned_by``
    and carries where to go, so the responder can be told.
    """

    responder_id: uuid.UUID
    kind: ResponderKind
    status: UnitStatus
    eta_s: float | None = None
    assigned_by: Literal["offer", "dispatcher"] | None = None
    category: str | None = None
    location: GeoPoint | None = None
    address: str | None = None


class MilestoneReached(IncidentEvent):
    """A 1-3-5 stage was met, ``seconds`` after the first report was received."""

    stage: Stage
    seconds: float
    target_s: int
    category: str
    grid: str | None = None


class TargetBreached(IncidentEvent):
    """A 1-3-5 stage's deadline passed before it was met."""

    stage: Stage
    target_s: int
    category: str
    grid: str | None = None


class IncidentResolved(IncidentEvent):
    """A dispatcher closed the incident as dealt with."""

    resolved_at: UtcDatetime


class IncidentCancelled(IncidentEvent):
    """The incident was closed without a response: cancelled by its reporter or a dispatcher,
    or merged into another incident."""

    cancelled_at: UtcDatetime
    reason: str
    merged_into: uuid.UUID | None = None


# --- responders ---------------------------------------------------------------


class ResponderEvent(Event):
    key_field: ClassVar[str] = "responder_id"

    responder_id: uuid.UUID


class LocationReported(ResponderEvent):
    """A responder's device reported where it is."""

    topic: ClassVar[str] = RESPONDER_LOCATIONS

    lat: float = Field(ge=-90, le=90, allow_inf_nan=False)
    lon: float = Field(ge=-180, le=180, allow_inf_nan=False)
    accuracy_m: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    recorded_at: UtcDatetime


class ResponderRegistered(ResponderEvent):
    """A dispatcher registered a responder."""

    topic: ClassVar[str] = RESPONDER_STATUS

    kind: ResponderKind
    skills: tuple[str, ...]
    travel_mode: TravelMode
    office: str | None = None
    grid: str | None = None


class ResponderUpdated(ResponderEvent):
    """A dispatcher edited a responder's registration (skills, travel mode, office, grid).

    It carries the duty state as saved with the edit, so a replica's index that applies it
    never overrides a newer duty change.
    """

    topic: ClassVar[str] = RESPONDER_STATUS

    kind: ResponderKind
    skills: tuple[str, ...]
    travel_mode: TravelMode
    office: str | None = None
    grid: str | None = None
    on_duty: bool
    duty_changed_at: UtcDatetime


class DutyChanged(ResponderEvent):
    """A responder went on or off duty."""

    topic: ClassVar[str] = RESPONDER_STATUS

    on_duty: bool
    kind: ResponderKind


class AvailabilityChanged(ResponderEvent):
    """Dispatch booked or freed a responder; the locator's index follows."""

    topic: ClassVar[str] = RESPONDER_STATUS

    status: Availability
    incident_id: uuid.UUID | None = None


class ResponderRevoked(ResponderEvent):
    """A dispatcher revoked a responder (a lost phone, a member who left).

    Every service that takes responder tokens refuses this responder's tokens issued at
    or before ``revoked_at``; the responder is off duty and out of the geo index, and
    dispatch withdraws any pending offer to them.
    """

    topic: ClassVar[str] = RESPONDER_STATUS

    revoked_at: UtcDatetime


class BookingsResyncRequested(Event):
    """The locator rebuilt its index (its Redis came back empty or different) and asks
    dispatch to announce every booking it holds again."""

    topic: ClassVar[str] = RESPONDER_STATUS
    key_field: ClassVar[str] = "source"

    source: str = "volunteer-locator"
    reason: str


class BookingsReconciled(Event):
    """Dispatch's truth about who is booked, taken at ``taken_at``: every responder with a
    pending offer or an active unit. Dispatch also restates each of them as
    ``AvailabilityChanged busy``; the locator lets a hold on anyone else lapse after
    ``grace_s`` unless dispatch books them meanwhile."""

    topic: ClassVar[str] = RESPONDER_STATUS
    key_field: ClassVar[str] = "source"

    source: str = "dispatch"
    taken_at: UtcDatetime
    responder_ids: tuple[uuid.UUID, ...]
    grace_s: float = Field(gt=0)


# --- dead letters -------------------------------------------------------------


class FailedDelivery(BaseModel):
    """The delivery a dead letter gave up on (notification's dead letters)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    delivery_id: str
    event_id: str
    event_type: str
    channel: str
    audience: str
    recipient: str
    incident_id: str | None = None
    attempts: int


class DeadLetter(Event):
    """What a consumer could never handle (``original``: the record as it came), or a
    delivery that failed for good (``delivery`` and its ``message``), on the dead-letter
    topic of the topic it came from. ``python -m tools.dlq`` lists and replays them."""

    topic: ClassVar[str] = dead_letter_topic("{topic}")
    key_field: ClassVar[str] = "source_topic"
    # Published under the original record's key, not under ``source_topic``.
    key_description: ClassVar[str] = "The original record's key (its correlation id)."

    group: str
    source_topic: str
    reason: str
    original: str | None = None
    delivery: FailedDelivery | None = None
    message: str | None = None  # the message as it was to be sent (JSON text)

    def envelope(self, *, correlation_id: str, occurred_at: datetime) -> Envelope:
        """The letter in a new envelope; the fields this kind of letter does not use are left
        out of the payload (the shape each kind always had)."""
        unused = {
            name for name in ("original", "delivery", "message") if getattr(self, name) is None
        }
        return Envelope(
            event_id=uuid.uuid4(),
            type=type(self).__name__,
            version=self.version,
            occurred_at=occurred_at,
            correlation_id=correlation_id,
            payload=self.model_dump(mode="json", exclude=unused),
        )


EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        ReportReceived,
        ReportCancelled,
        IncidentOpened,
        ReportMerged,
        ResponderOffered,
        OfferAccepted,
        OfferDeclined,
        OfferExpired,
        OfferWithdrawn,
        NoResponderAvailable,
        SlotUnfilled,
        UnitStatusChanged,
        MilestoneReached,
        TargetBreached,
        IncidentResolved,
        IncidentCancelled,
        LocationReported,
        ResponderRegistered,
        ResponderUpdated,
        DutyChanged,
        AvailabilityChanged,
        ResponderRevoked,
        BookingsResyncRequested,
        BookingsReconciled,
        DeadLetter,
    )
}


class UnknownEventType(ValueError):
    """The envelope names an event type this code does not know."""


class Envelope(BaseModel):
    """The JSON document on the wire around every event."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: uuid.UUID
    type: str
    version: int
    occurred_at: UtcDatetime
    correlation_id: str
    payload: dict[str, Any]

    @classmethod
    def wrap(
        cls,
        event: Event,
        *,
        correlation_id: str | None = None,
        occurred_at: datetime | None = None,
        event_id: uuid.UUID | None = None,
    ) -> Envelope:
        """Put ``event`` in a new envelope. The correlation id defaults to the event's key."""
        return cls(
            event_id=event_id or uuid.uuid4(),
            type=type(event).__name__,
            version=event.version,
            occurred_at=occurred_at or datetime.now(UTC),
            correlation_id=correlation_id or event.key,
            payload=event.model_dump(mode="json"),
        )

    def event(self) -> Event:
        """Parse the payload into its typed event."""
        try:
            event_type = EVENT_TYPES[self.type]
        except KeyError:
            raise UnknownEventType(self.type) from None
        return event_type.model_validate(self.payload)

    def to_bytes(self) -> bytes:
        """Serialise for Kafka."""
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Envelope:
        """Parse a Kafka message value."""
        return cls.model_validate_json(raw)
