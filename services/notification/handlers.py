"""Notification's event handlers: plain functions, routed by the ``HANDLERS`` dict.

Each one updates the incident's parties (who was offered or assigned it, which reports
it holds) and says who should hear what. A partition's run of events is written in one
transaction, the pending deliveries with it, which are then handed to the workers.
Nothing is sent here, so a slow channel cannot hold up the consume loop.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from services.notification import service
from services.notification.context import Notifier
from services.notification.service import REPORT, RESPONDER, Notice, Recorded, base_message
from shared.db import transaction
from shared.events import (
    Envelope,
    Event,
    IncidentCancelled,
    IncidentOpened,
    IncidentResolved,
    NoResponderAvailable,
    OfferAccepted,
    OfferDeclined,
    OfferExpired,
    OfferWithdrawn,
    ReportMerged,
    ResponderOffered,
    TargetBreached,
    UnitStatusChanged,
)
from shared.handlers import ContextBatchHandler, bind_batch_handlers
from shared.kafka import BatchHandler

# An event's effect in the run's transaction: the notices it gives rise to.
Step = Callable[[Any, Envelope, AsyncSession, Notifier], Awaitable[list[Notice]]]


async def on_incident_events(batch: Sequence[tuple[Event, Envelope]], ctx: Notifier) -> None:
    """Write a run of incident events and their deliveries in one transaction, then hand
    the deliveries to the workers."""
    recorded: list[Recorded] = []
    async with transaction(ctx.sessions) as session:
        for event, envelope in batch:
            # Every event routed here is about one incident.
            incident_id: uuid.UUID = event.incident_id  # type: ignore[attr-defined]
            notices = await STEPS[type(event)](event, envelope, session, ctx)
            recorded.append(
                await service.record_deliveries(
                    session,
                    envelope=envelope,
                    incident_id=incident_id,
                    notices=notices,
                    routing=ctx.routing,
                    now=ctx.clock.now(),
                    lease_for=ctx.workers.lease_for,
                )
            )
    for each in recorded:
        ctx.workers.submit(each.new, leased=True)
        ctx.workers.submit(each.unsent)


def _reporter_update(envelope: Envelope, incident_id: uuid.UUID, **fields: Any) -> Notice:
    return Notice("reporter", {**base_message("status_update", envelope, incident_id), **fields})


async def on_report_linked(
    event: IncidentOpened | ReportMerged, _: Envelope, session: AsyncSession, ctx: Notifier
) -> list[Notice]:
    """Remember the incident's reports (its first, or one merged in), so their reporters
    can be told what happens."""
    await service.add_party(
        session, incident_id=event.incident_id, party=REPORT, ref_id=event.report_id
    )
    return []


async def on_responder_offered(
    event: ResponderOffered, envelope: Envelope, session: AsyncSession, ctx: Notifier
) -> list[Notice]:
    """Send the offer, with its links and expiry, to the offered responder."""
    await service.add_party(
        session, incident_id=event.incident_id, party=RESPONDER, ref_id=event.responder_id
    )
    message = service.offer_message(event, envelope, dispatch_url=ctx.dispatch_url)
    return [Notice("responder", message, event.responder_id)]


async def on_offer_accepted(
    event: OfferAccepted, envelope: Envelope, session: AsyncSession, _: Notifier
) -> list[Notice]:
    """Tell the reporter that a responder is coming (kind and ETA only)."""
    await service.add_party(
        session, incident_id=event.incident_id, party=RESPONDER, ref_id=event.responder_id
    )
    return [
        _reporter_update(
            envelope,
            event.incident_id,
            status="responder_assigned",
            kind=event.kind,
            eta_s=event.eta_s,
        )
    ]


async def on_offer_declined(
    event: OfferDeclined, _: Envelope, session: AsyncSession, __: Notifier
) -> list[Notice]:
    """The responder declined; they are no longer concerned."""
    await service.remove_party(
        session, incident_id=event.incident_id, party=RESPONDER, ref_id=event.responder_id
    )
    return []


async def on_offer_ended(
    event: OfferExpired | OfferWithdrawn, envelope: Envelope, session: AsyncSession, _: Notifier
) -> list[Notice]:
    """Take the lapsed or withdrawn offer off the responder's screen."""
    await service.remove_party(
        session, incident_id=event.incident_id, party=RESPONDER, ref_id=event.responder_id
    )
    message = {
        **base_message("offer_withdrawn", envelope, event.incident_id),
        "offer_id": str(event.offer_id),
        "reason": event.reason if isinstance(event, OfferWithdrawn) else "expired",
    }
    return [Notice("responder", message, event.responder_id)]


async def on_unit_status_changed(
    event: UnitStatusChanged, envelope: Envelope, session: AsyncSession, ctx: Notifier
) -> list[Notice]:
    """Tell the reporter how the unit is getting on."""
    # A cleared unit stays a party: when a dispatcher resolves or cancels, dispatch
    # clears every unit just before it publishes the close, and the close must still
    # stand those responders down. (One who cleared earlier ignores it.)
    if event.status != "cleared":
        await service.add_party(
            session, incident_id=event.incident_id, party=RESPONDER, ref_id=event.responder_id
        )
    status = "responder_assigned" if event.status == "assigned" else event.status
    notices = [
        _reporter_update(
            envelope, event.incident_id, status=status, kind=event.kind, eta_s=event.eta_s
        )
    ]
    if event.status == "assigned" and event.assigned_by == "dispatcher":
        # No offer came first, so this is the responder's only word of the job.
        notices.append(
            Notice(
                "responder",
                service.assignment_message(event, envelope, dispatch_url=ctx.dispatch_url),
                event.responder_id,
            )
        )
    return notices


async def on_incident_closed(
    event: IncidentResolved | IncidentCancelled,
    envelope: Envelope,
    session: AsyncSession,
    _: Notifier,
) -> list[Notice]:
    """Stand down everyone offered or assigned, and tell the reporter."""
    incident_id = event.incident_id
    if isinstance(event, IncidentResolved):
        status = reason = "resolved"
    else:
        status, reason = "cancelled", event.reason
    responders = await service.parties(session, incident_id=incident_id, party=RESPONDER)
    notices = [
        Notice(
            "responder",
            {**base_message("incident_closed", envelope, incident_id), "reason": reason},
            responder_id,
        )
        for responder_id in responders
    ]
    notices.append(_reporter_update(envelope, incident_id, status=status, reason=reason))
    await service.remove_party(session, incident_id=incident_id, party=RESPONDER)
    return notices


async def on_target_breached(
    event: TargetBreached, envelope: Envelope, _: AsyncSession, __: Notifier
) -> list[Notice]:
    """Alert the dispatchers: a 1-3-5 deadline passed."""
    message = {
        **base_message("target_breached", envelope, event.incident_id),
        "stage": event.stage,
        "target_s": event.target_s,
        "category": event.category,
        "grid": event.grid,
    }
    return [Notice("dispatcher", message)]


async def on_no_responder_available(
    event: NoResponderAvailable, envelope: Envelope, _: AsyncSession, __: Notifier
) -> list[Notice]:
    """Alert the dispatchers: nobody eligible is free."""
    message = {
        **base_message("no_responder_available", envelope, event.incident_id),
        "category": event.category,
        "radius_m": event.radius_m,
        "kinds": list(event.kinds),
    }
    return [Notice("dispatcher", message)]


STEPS: Mapping[type[Event], Step] = {
    IncidentOpened: on_report_linked,
    ReportMerged: on_report_linked,
    ResponderOffered: on_responder_offered,
    OfferAccepted: on_offer_accepted,
    OfferDeclined: on_offer_declined,
    OfferExpired: on_offer_ended,
    OfferWithdrawn: on_offer_ended,
    UnitStatusChanged: on_unit_status_changed,
    IncidentResolved: on_incident_closed,
    IncidentCancelled: on_incident_closed,
    TargetBreached: on_target_breached,
    NoResponderAvailable: on_no_responder_available,
}

HANDLERS: Mapping[type[Event], ContextBatchHandler[Notifier]] = dict.fromkeys(
    STEPS, on_incident_events
)


def build_handlers(ctx: Notifier) -> dict[type[Event], BatchHandler]:
    """Bind the handler to its context, for the consume loop."""
    return bind_batch_handlers(HANDLERS, ctx)
