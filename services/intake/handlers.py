"""Intake's event handlers: intake follows the ``incidents`` topic to keep each
reporter's status and timeline. Routing is data: ``STEPS`` maps each event class to the
function that writes what it means for the reports; a partition's run of them is
written in one transaction, then the reports that changed are announced."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from services.intake import service
from services.intake.context import Intake
from services.intake.timeline import step_for
from shared.db import transaction
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
from shared.handlers import ContextBatchHandler, bind_batch_handlers
from shared.kafka import BatchHandler

# An event's effect on the reports, in the run's transaction; returns the reports changed.
Step = Callable[[Any, Envelope, AsyncSession], Awaitable[list[uuid.UUID]]]


async def link_report(
    event: IncidentOpened | ReportMerged, _: Envelope, session: AsyncSession
) -> list[uuid.UUID]:
    """Remember the incident a report belongs to."""
    return await service.link_report(
        session, report_id=event.report_id, incident_id=event.incident_id
    )


async def record_step(
    event: IncidentEvent, envelope: Envelope, session: AsyncSession
) -> list[uuid.UUID]:
    """Add the incident's step to the timeline of each of its reports."""
    change = step_for(event)
    if change is None:
        return []  # for example an offer declined: nothing the reporter needs to see
    return await service.record_incident_step(
        session,
        incident_id=event.incident_id,
        change=change,
        event_id=str(envelope.event_id),
        at=envelope.occurred_at,
    )


async def follow_cancel(
    event: IncidentCancelled, envelope: Envelope, session: AsyncSession
) -> list[uuid.UUID]:
    """A merged incident's reports follow the one it joined; else a cancelled step."""
    if event.merged_into is not None:
        return await service.move_incident_reports(
            session, from_incident_id=event.incident_id, into_incident_id=event.merged_into
        )
    return await record_step(event, envelope, session)


STEPS: Mapping[type[Event], Step] = {
    IncidentOpened: link_report,
    ReportMerged: link_report,
    ResponderOffered: record_step,
    OfferAccepted: record_step,
    UnitStatusChanged: record_step,
    IncidentResolved: record_step,
    IncidentCancelled: follow_cancel,
}


async def on_incident_events(batch: Sequence[tuple[Event, Envelope]], ctx: Intake) -> None:
    """Write a run of incident events in one transaction, then wake the reports' streams."""
    changed: list[uuid.UUID] = []
    async with transaction(ctx.sessions) as session:
        for event, envelope in batch:
            changed += await STEPS[type(event)](event, envelope, session)
    if changed:
        await ctx.changes.announce(list(dict.fromkeys(changed)))


HANDLERS: Mapping[type[Event], ContextBatchHandler[Intake]] = dict.fromkeys(
    STEPS, on_incident_events
)


def build_handlers(intake: Intake) -> dict[type[Event], BatchHandler]:
    """Bind the handler to this instance's context, for the consume loop."""
    return bind_batch_handlers(HANDLERS, intake)
