"""Intake's event handlers: intake follows the ``incidents`` topic to keep each
reporter's status and timeline. Routing is data."""

from __future__ import annotations

import uuid

from services.intake import service
from services.intake.live import ReportChanges
from services.intake.timeline import step_for
from shared.db import SessionFactory
from shared.events import (
    Envelope,
    Event,
    IncidentCancelled,
    IncidentEvent,
    IncidentOpened,
    IncidentResolved,
    OfferAccepted,
    ReportMerged,
    ResponderOffered,
    UnitStatusChanged,
)
from shared.kafka import Handler


def build_handlers(
    *, sessions: SessionFactory, changes: ReportChanges
) -> dict[type[Event], Handler]:
    """Bind the handlers to this instance's database and live fan-out."""

    async def announce(report_ids: list[uuid.UUID]) -> None:
        if report_ids:
            await changes.announce(report_ids)

    async def on_report_linked(event: Event, _: Envelope) -> None:
        assert isinstance(event, IncidentOpened | ReportMerged)
        await announce(
            await service.link_report(
                sessions=sessions, report_id=event.report_id, incident_id=event.incident_id
            )
        )

    async def on_incident_step(event: Event, envelope: Envelope) -> None:
        assert isinstance(event, IncidentEvent)
        change = step_for(event)
        if change is None:
            return  # for example an offer declined: nothing the reporter needs to see
        await announce(
            await service.record_incident_step(
                sessions=sessions,
                incident_id=event.incident_id,
                change=change,
                event_id=str(envelope.event_id),
                at=envelope.occurred_at,
            )
        )

    async def on_incident_cancelled(event: Event, envelope: Envelope) -> None:
        assert isinstance(event, IncidentCancelled)
        if event.merged_into is not None:
            await announce(
                await service.move_incident_reports(
                    sessions=sessions,
                    from_incident_id=event.incident_id,
                    into_incident_id=event.merged_into,
                )
            )
            return
        await on_incident_step(event, envelope)

    return {
        IncidentOpened: on_report_linked,
        ReportMerged: on_report_linked,
        ResponderOffered: on_incident_step,
        OfferAccepted: on_incident_step,
        UnitStatusChanged: on_incident_step,
        IncidentResolved: on_incident_step,
        IncidentCancelled: on_incident_cancelled,
    }
