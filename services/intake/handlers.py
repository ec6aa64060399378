"""Intake's event handlers: intake follows the ``incidents`` topic to keep each
reporter's status and timeline. Routing is data."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from services.intake import service
from services.intake.context import Intake
from services.intake.timeline import step_for
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
from shared.handlers import ContextHandler, bind_handlers
from shared.kafka import Handler


async def _announce(ctx: Intake, report_ids: list[uuid.UUID]) -> None:
    if report_ids:
        await ctx.changes.announce(report_ids)


async def on_report_linked(event: IncidentOpened | ReportMerged, _: Envelope, ctx: Intake) -> None:
    """Remember the incident a report belongs to."""
    await _announce(
        ctx,
        await service.link_report(
            sessions=ctx.sessions, report_id=event.report_id, incident_id=event.incident_id
        ),
    )


async def on_incident_step(event: IncidentEvent, envelope: Envelope, ctx: Intake) -> None:
    """Add the incident's step to the timeline of each of its reports."""
    change = step_for(event)
    if change is None:
        return  # for example an offer declined: nothing the reporter needs to see
    await _announce(
        ctx,
        await service.record_incident_step(
            sessions=ctx.sessions,
            incident_id=event.incident_id,
            change=change,
            event_id=str(envelope.event_id),
            at=envelope.occurred_at,
        ),
    )


async def on_incident_cancelled(event: IncidentCancelled, envelope: Envelope, ctx: Intake) -> None:
    """A merged incident's reports follow the one it joined; else a cancelled step."""
    if event.merged_into is not None:
        await _announce(
            ctx,
            await service.move_incident_reports(
                sessions=ctx.sessions,
                from_incident_id=event.incident_id,
                into_incident_id=event.merged_into,
            ),
        )
        return
    await on_incident_step(event, envelope, ctx)


HANDLERS: Mapping[type[Event], ContextHandler[Intake]] = {
    IncidentOpened: on_report_linked,
    ReportMerged: on_report_linked,
    ResponderOffered: on_incident_step,
    OfferAccepted: on_incident_step,
    UnitStatusChanged: on_incident_step,
    IncidentResolved: on_incident_step,
    IncidentCancelled: on_incident_cancelled,
}


def build_handlers(intake: Intake) -> dict[type[Event], Handler]:
    """Bind the handlers to this instance's context, for the consume loop."""
    return bind_handlers(HANDLERS, intake)
