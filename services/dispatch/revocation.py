"""Dispatch's part in a responder's revocation (``ResponderRevoked`` on ``responder-status``).

Dispatch keeps the revocation, so the revoked responder's old tokens are refused here
too, and takes back any offer still pending to them, offering each incident to the
next nearest (the revoked responder is among those already tried, and off duty).
"""

from __future__ import annotations

import logging
import uuid

from sqlmodel import col, select

from services.dispatch.context import Dispatch
from services.dispatch.domain import OfferStatus
from services.dispatch.models import Offer
from services.dispatch.service.common import incident_for_update
from services.dispatch.service.offers import fill_incident, withdraw
from services.dispatch.uow import unit_of_work
from shared.events import Envelope, Event, ResponderRevoked
from shared.kafka import Handler
from shared.revocations import Revocations, record_revocation

log = logging.getLogger(__name__)

WITHDRAWN_REASON = "responder_revoked"


async def withdraw_offers_to(*, dispatch: Dispatch, responder_id: uuid.UUID) -> list[uuid.UUID]:
    """Withdraw every pending offer to the responder and re-offer those incidents.

    Answers the incidents re-offered; a repeat finds nothing pending and does nothing.
    """
    async with dispatch.sessions() as session:
        pending = (
            await session.exec(
                select(Offer.id, Offer.incident_id)
                .where(col(Offer.responder_id) == responder_id)
                .where(col(Offer.status) == OfferStatus.PENDING)
            )
        ).all()
    withdrawn: list[uuid.UUID] = []
    for offer_id, incident_id in pending:
        async with dispatch.incident_lock(incident_id), unit_of_work(dispatch) as uow:
            incident = await incident_for_update(uow.session, incident_id)
            offer = await uow.session.get(Offer, offer_id, with_for_update=True)
            if incident is None or offer is None or offer.status != OfferStatus.PENDING:
                continue  # answered, expired or closed meanwhile
            await withdraw(uow, dispatch, incident, offer, reason=WITHDRAWN_REASON)
        withdrawn.append(incident_id)
    for incident_id in withdrawn:
        await fill_incident(dispatch=dispatch, incident_id=incident_id)
    if withdrawn:
        log.info("revoked responder's pending offers withdrawn: %d", len(withdrawn))
    return withdrawn


def revocation_handlers(dispatch: Dispatch, revocations: Revocations) -> dict[type[Event], Handler]:
    """The ``ResponderRevoked`` handler: keep the revocation, then withdraw and re-offer."""

    async def on_revoked(event: Event, _: Envelope) -> None:
        if not isinstance(event, ResponderRevoked):
            return
        await record_revocation(revocations, event)
        await withdraw_offers_to(dispatch=dispatch, responder_id=event.responder_id)

    return {ResponderRevoked: on_revoked}
