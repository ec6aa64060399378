"""The event envelope and schemas: what goes on the wire."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from shared.events import (
    EVENT_TYPES,
    DeadLetter,
    Envelope,
    FailedDelivery,
    GeoPoint,
    LocationReported,
    ReportReceived,
    UnknownEventType,
    dead_letter_topic,
)
from tools import dlq


def _report() -> ReportReceived:
    return ReportReceived(
        report_id=uuid.uuid4(),
        category="theft",
        location=GeoPoint(lat=22.5, lon=114.1),
        received_at=datetime(2026, 1, 1, 8, 0, tzinfo=UTC),
    )


def test_an_envelope_round_trips_through_bytes() -> None:
    event = _report()
    envelope = Envelope.wrap(event)
    again = Envelope.from_bytes(envelope.to_bytes())
    assert again == envelope
    assert again.event() == event
    assert again.type == "ReportReceived"
    assert again.correlation_id == str(event.report_id)


def test_events_are_keyed_by_the_entity_they_are_about() -> None:
    event = _report()
    assert event.topic == "reports"
    assert event.key == str(event.report_id)
    ping = LocationReported(responder_id=uuid.uuid4(), lat=1, lon=2, recorded_at=datetime.now(UTC))
    assert ping.topic == "responder-locations"
    assert ping.key == str(ping.responder_id)


def test_events_refuse_unknown_fields_and_cannot_be_changed() -> None:
    payload = _report().model_dump(mode="json") | {"injected": True}
    with pytest.raises(ValidationError):
        ReportReceived.model_validate(payload)
    event = _report()
    with pytest.raises(ValidationError):
        event.category = "fire"  # type: ignore[misc]


def test_naive_timestamps_are_read_as_utc() -> None:
    event = ReportReceived.model_validate(
        _report().model_dump(mode="json") | {"received_at": "2026-01-01T08:00:00"}
    )
    assert event.received_at.tzinfo is not None
    assert event.received_at.utcoffset() is not None


def test_an_unknown_event_type_is_named_in_the_error() -> None:
    envelope = Envelope.wrap(_report()).model_copy(update={"type": "Nonsense"})
    with pytest.raises(UnknownEventType, match="Nonsense"):
        envelope.event()


def test_positions_out_of_range_or_nan_are_refused() -> None:
    for lat, lon in ((91, 0), (0, 181), (float("nan"), 0), (0, float("inf"))):
        with pytest.raises(ValidationError):
            GeoPoint(lat=lat, lon=lon)


def test_every_event_type_is_registered_by_its_class_name() -> None:
    for name, cls in EVENT_TYPES.items():
        assert cls.__name__ == name
        assert cls.version >= 1
    assert dead_letter_topic("incidents") == "incidents.dlq"


def test_dead_letters_keep_their_two_shapes_and_parse_as_one_event() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    unhandled = DeadLetter(
        group="dispatch", source_topic="reports", reason="unparseable", original="{oops"
    ).envelope(correlation_id="r-1", occurred_at=at)
    assert unhandled.payload == {
        "group": "dispatch",
        "source_topic": "reports",
        "reason": "unparseable",
        "original": "{oops",
    }
    failed = DeadLetter(
        group="notification",
        source_topic="incidents",
        reason="delivery failed: 500",
        delivery=FailedDelivery(
            delivery_id="d-1",
            event_id="e-1",
            event_type="ResponderOffered",
            channel="webhook",
            audience="dispatcher",
            recipient="https://hooks.example.test",
            attempts=3,
        ),
        message='{"type": "offer"}',
    ).envelope(correlation_id="i-1", occurred_at=at)
    assert "original" not in failed.payload
    for envelope in (unhandled, failed):
        letter = Envelope.from_bytes(envelope.to_bytes()).event()
        assert isinstance(letter, DeadLetter)
    assert dead_letter_topic("reports") == DeadLetter.topic.format(topic="reports")


def test_the_dlq_tool_reads_new_and_old_letters() -> None:
    old = json.dumps({"event_id": "x", "payload": {"reason": "boom"}}).encode()
    assert dlq.DeadLetter.parse("reports.dlq", 0, 7, b"k", old).source_topic == "reports"
    new = DeadLetter(group="g", source_topic="incidents", reason="r", original="{}").envelope(
        correlation_id="k", occurred_at=datetime.now(UTC)
    )
    read = dlq.DeadLetter.parse("incidents.dlq", 0, 8, b"k", new.to_bytes())
    assert (read.group, read.reason, read.original) == ("g", "r", "{}")
