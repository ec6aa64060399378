"""How incident events become the steps a reporter sees, without any network."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from services.intake.timeline import StepChange, should_record, status_after, step_for, unit_ref
from shared.events import (
    Event,
    GeoPoint,
    IncidentCancelled,
    IncidentResolved,
    MilestoneReached,
    NoResponderAvailable,
    OfferAccepted,
    OfferDeclined,
    ResponderOffered,
    UnitStatusChanged,
)

INCIDENT = uuid.uuid4()
RESPONDER = uuid.uuid4()
NOW = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)


def test_an_offer_means_dispatched() -> None:
    offered = ResponderOffered(
        incident_id=INCIDENT,
        offer_id=uuid.uuid4(),
        responder_id=RESPONDER,
        kind="volunteer",
        category="theft",
        location=GeoPoint(lat=1, lon=1),
        distance_m=10,
        eta_s=30,
        expires_at=NOW,
    )
    assert step_for(offered) == StepChange("dispatched")


def test_an_accepted_offer_shows_only_the_kind_and_eta() -> None:
    accepted = OfferAccepted(
        incident_id=INCIDENT, offer_id=uuid.uuid4(), responder_id=RESPONDER, kind="patrol", eta_s=95
    )
    change = step_for(accepted)
    assert change is not None
    assert (change.step, change.responder_kind, change.eta_s) == (
        "responder_assigned",
        "patrol",
        95,
    )
    assert change.unit_ref == unit_ref(RESPONDER)
    assert str(RESPONDER) not in repr(change)


@pytest.mark.parametrize(
    ("status", "step"),
    [("assigned", "responder_assigned"), ("on_scene", "on_scene"), ("en_route", None)],
)
def test_unit_status_changes(status: str, step: str | None) -> None:
    event = UnitStatusChanged.model_validate(
        {"incident_id": INCIDENT, "responder_id": RESPONDER, "kind": "auxiliary", "status": status}
    )
    change = step_for(event)
    assert (change.step if change else None) == step


def test_the_end_of_an_incident() -> None:
    assert step_for(IncidentResolved(incident_id=INCIDENT, resolved_at=NOW)) == StepChange(
        "resolved"
    )
    cancelled = IncidentCancelled(incident_id=INCIDENT, cancelled_at=NOW, reason="dispatcher")
    assert step_for(cancelled) == StepChange("cancelled")
    merged = IncidentCancelled(
        incident_id=INCIDENT, cancelled_at=NOW, reason="merged", merged_into=uuid.uuid4()
    )
    assert step_for(merged) is None


@pytest.mark.parametrize(
    "event",
    [
        OfferDeclined(incident_id=INCIDENT, offer_id=uuid.uuid4(), responder_id=RESPONDER),
        NoResponderAvailable(incident_id=INCIDENT, category="theft", radius_m=3000, kinds=()),
        MilestoneReached(incident_id=INCIDENT, stage="T1", seconds=40, target_s=60, category="x"),
    ],
)
def test_internal_events_are_not_shown(event: Event) -> None:
    assert step_for(event) is None


def test_a_reoffer_does_not_repeat_dispatched() -> None:
    dispatched = StepChange("dispatched")
    assert should_record(current="received", change=dispatched, recorded=set())
    assert not should_record(current="dispatched", change=dispatched, recorded=set())
    assert not should_record(current="responder_assigned", change=dispatched, recorded=set())


def test_each_unit_is_shown_once_per_step() -> None:
    volunteer = StepChange("on_scene", "volunteer", None, "aaa")
    patrol = StepChange("on_scene", "patrol", None, "bbb")
    recorded: set[tuple[str, str | None]] = {("on_scene", "aaa")}
    assert not should_record(current="on_scene", change=volunteer, recorded=recorded)
    assert should_record(current="on_scene", change=patrol, recorded=recorded)


def test_a_closed_report_takes_no_more_steps() -> None:
    for final in ("resolved", "cancelled"):
        for step in ("dispatched", "responder_assigned", "resolved", "cancelled"):
            assert not should_record(current=final, change=StepChange(step), recorded=set())
        assert status_after(final, "on_scene") == final


def test_status_only_moves_forward() -> None:
    assert status_after("received", "dispatched") == "dispatched"
    assert status_after("on_scene", "responder_assigned") == "on_scene"
    assert status_after("on_scene", "resolved") == "resolved"
