"""Notification's event handlers: plain functions, routed by the ``HANDLERS`` dict.

Each handler updates the incident's parties (who was offered or assigned it, which
reports it holds) and writes the pending deliveries in one transaction, then hands
them to the workers. It never sends anything itself, so a slow channel cannot hold
up the consume loop.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from services.notification import service
from services.notification.context import Notifier
from services.notification.service import REPORT, RESPONDER, Notice, base_message
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
from shared.handlers import ContextHandler, bind_handlers
from shared.kafka import Handler

Build = Callable[[AsyncSession], Awaitable[list[Notice]]]


async def _apply(ctx: Notifier, envelope: Envelope, incident_id: uuid.UUID, build: Build) -> None:
    async with transaction(ctx.sessions) as session:
        notices = await build(session)
        pending = await service.record_deliveries(
            session,
            envelope=envelope,
            incident_id=incident_id,
            notices=notices,
            routing=ctx.routing,
            now=ctx.clock.now(),
        )
    ctx.workers.submit(pending)


def _reporter_update(envelope: Envelope, incident_id: uuid.UUID, **fields: Any) -> Notice:
    return Notice("reporter", {**base_message("status_update", envelope, incident_id), **fields})


async def on_incident_opened(event: IncidentOpened, envelope: Envelope, ctx: Notifier) -> None:
    """Remember the incident's first report, so its reporter can be told what happens."""

    async def build(session: AsyncSession) -> list[Notice]:
        await service.add_party(
            session, incident_id=event.incident_id, party=REPORT, ref_id=event.report_id
        )
        return []

    await _apply(ctx, envelope, event.incident_id, build)


async def on_report_merged(event: ReportMerged, envelope: Envelope, ctx: Notifier) -> None:
    """A merged report's reporter now follows this incident."""

    async def build(session: AsyncSession) -> list[Notice]:
        await service.add_party(
            session, incident_id=event.incident_id, party=REPORT, ref_id=event.report_id
        )
        return []

    await _apply(ctx, envelope, event.incident_id, build)


async def on_responder_offered(event: ResponderOffered, envelope: Envelope, ctx: Notifier) -> None:
    """Send the offer, with its links and expiry, to the offered responder."""

    async def build(session: AsyncSession) -> list[Notice]:
        await service.add_party(
            session, incident_id=event.incident_id, party=RESPONDER, ref_id=event.responder_id
        )
        message = service.offer_message(event, envelope, dispatch_url=ctx.dispatch_url)
        return [Notice("responder", message, event.responder_id)]

    await _apply(ctx, envelope, event.incident_id, build)


async def on_offer_accepted(event: OfferAccepted, envelope: Envelope, ctx: Notifier) -> None:
    """Tell the reporter that a responder is coming (kind and ETA only)."""

    async def build(session: AsyncSession) -> list[Notice]:
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

    await _apply(ctx, envelope, event.incident_id, build)


async def on_offer_declined(event: OfferDeclined, envelope: Envelope, ctx: Notifier) -> None:
    """The responder declined; they are no longer concerned."""

    async def build(session: AsyncSession) -> list[Notice]:
        await service.remove_party(
            session, incident_id=event.incident_id, party=RESPONDER, ref_id=event.responder_id
        )
        return []

    await _apply(ctx, envelope, event.incident_id, build)


async def _withdraw(
    event: OfferExpired | OfferWithdrawn, reason: str, envelope: Envelope, ctx: Notifier
) -> None:
    async def build(session: AsyncSession) -> list[Notice]:
        await service.remove_party(
            session, incident_id=event.incident_id, party=RESPONDER, ref_id=event.responder_id
        )
        message = {
            **base_message("offer_withdrawn", envelope, event.incident_id),
            "offer_id": str(event.offer_id),
            "reason": reason,
        }
        return [Notice("responder", message, event.responder_id)]

    await _apply(ctx, envelope, event.incident_id, build)


async def on_offer_expired(event: OfferExpired, envelope: Envelope, ctx: Notifier) -> None:
    """Take the lapsed offer off the responder's screen."""
    await _withdraw(event, "expired", envelope, ctx)


async def on_offer_withdrawn(event: OfferWithdrawn, envelope: Envelope, ctx: Notifier) -> None:
    """Take the withdrawn offer off the responder's screen."""
    await _withdraw(event, event.reason, envelope, ctx)


async def on_unit_status_changed(
    event: UnitStatusChanged, envelope: Envelope, ctx: Notifier
) -> None:
    """Tell the reporter how the unit is getting on."""

    async def build(session: AsyncSession) -> list[Notice]:
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

    await _apply(ctx, envelope, event.incident_id, build)


async def _close(
    incident_id: uuid.UUID, status: str, reason: str, envelope: Envelope, ctx: Notifier
) -> None:
    async def build(session: AsyncSession) -> list[Notice]:
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

    await _apply(ctx, envelope, incident_id, build)


async def on_incident_resolved(event: IncidentResolved, envelope: Envelope, ctx: Notifier) -> None:
    """Stand down everyone offered or assigned, and tell the reporter."""
    await _close(event.incident_id, "resolved", "resolved", envelope, ctx)


async def on_incident_cancelled(
    event: IncidentCancelled, envelope: Envelope, ctx: Notifier
) -> None:
    """Stand down everyone offered or assigned, and tell the reporter."""
    await _close(event.incident_id, "cancelled", event.reason, envelope, ctx)


async def on_target_breached(event: TargetBreached, envelope: Envelope, ctx: Notifier) -> None:
    """Alert the dispatchers: a 1-3-5 deadline passed."""
    message = {
        **base_message("target_breached", envelope, event.incident_id),
        "stage": event.stage,
        "target_s": event.target_s,
        "category": event.category,
        "grid": event.grid,
    }

    async def build(session: AsyncSession) -> list[Notice]:
        return [Notice("dispatcher", message)]

    await _apply(ctx, envelope, event.incident_id, build)


async def on_no_responder_available(
    event: NoResponderAvailable, envelope: Envelope, ctx: Notifier
) -> None:
    """Alert the dispatchers: nobody eligible is free."""
    message = {
        **base_message("no_responder_available", envelope, event.incident_id),
        "category": event.category,
        "radius_m": event.radius_m,
        "kinds": list(event.kinds),
    }

    async def build(session: AsyncSession) -> list[Notice]:
        return [Notice("dispatcher", message)]

    await _apply(ctx, envelope, event.incident_id, build)


HANDLERS: Mapping[type[Event], ContextHandler[Notifier]] = {
    IncidentOpened: on_incident_opened,
    ReportMerged: on_report_merged,
    ResponderOffered: on_responder_offered,
    OfferAccepted: on_offer_accepted,
    OfferDeclined: on_offer_declined,
    OfferExpired: on_offer_expired,
    OfferWithdrawn: on_offer_withdrawn,
    UnitStatusChanged: on_unit_status_changed,
    IncidentResolved: on_incident_resolved,
    IncidentCancelled: on_incident_cancelled,
    TargetBreached: on_target_breached,
    NoResponderAvailable: on_no_responder_available,
}


def build_handlers(ctx: Notifier) -> dict[type[Event], Handler]:
    """Bind the handlers to their context, for the consume loop."""
    return bind_handlers(HANDLERS, ctx)
