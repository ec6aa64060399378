"""What the dispatch commands share: the incident row lock, an incident's plan state,
claims and the responder-freed event."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass

from sqlalchemy import exists, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.dispatch.context import Dispatch
from services.dispatch.domain import (
    IncidentStatus,
    OfferStatus,
    PlanSlot,
    UnitState,
    slots_to_offer,
)
from services.dispatch.locator_client import LocatorUnavailable
from services.dispatch.models import (
    Incident,
    Offer,
    Unit,
)
from services.dispatch.plans import slots_from_json
from services.dispatch.uow import UnitOfWork
from shared.errors import Conflict, NotFound
from shared.events import (
    AvailabilityChanged,
)

OFFER_TIMER = "offer"
TARGET_TIMER = "target"


async def incident_for_update(session: AsyncSession, incident_id: uuid.UUID) -> Incident | None:
    query = select(Incident).where(col(Incident.id) == incident_id).with_for_update()
    return (await session.exec(query)).first()


def require_open(incident: Incident | None) -> Incident:
    if incident is None:
        raise NotFound("no such incident")
    if incident.status != IncidentStatus.OPEN:
        raise Conflict(f"the incident is {incident.status}", code="incident_closed")
    return incident


@dataclass(frozen=True)
class PlanState:
    incident: Incident
    slots: tuple[PlanSlot, ...]
    offers: Sequence[Offer]
    units: Sequence[Unit]

    @property
    def tried(self) -> list[uuid.UUID]:
        """Everyone already asked or assigned: never asked again for this incident."""
        return sorted({o.responder_id for o in self.offers} | {u.responder_id for u in self.units})

    def needing_offers(self) -> list[int]:
        return slots_to_offer(
            len(self.slots),
            filled=(u.slot for u in self.units),
            pending=(o.slot for o in self.offers if o.status == OfferStatus.PENDING),
        )


async def load_plan(session: AsyncSession, incident_id: uuid.UUID) -> PlanState | None:
    incident = await session.get(Incident, incident_id)
    if incident is None:
        return None
    offers = (await session.exec(select(Offer).where(col(Offer.incident_id) == incident_id))).all()
    units = (await session.exec(select(Unit).where(col(Unit.incident_id) == incident_id))).all()
    return PlanState(incident, slots_from_json(incident.slots_json), offers, units)


def hold_s(dispatch: Dispatch) -> float:
    return dispatch.settings.offer_timeout_s + dispatch.settings.claim_hold_margin_s


async def release_quietly(
    dispatch: Dispatch, responder_id: uuid.UUID, incident_id: uuid.UUID
) -> None:
    # If this fails too, the locator's hold timer frees the responder.
    with suppress(LocatorUnavailable):
        await dispatch.locator.release(responder_id=responder_id, incident_id=incident_id)


async def responder_booked(session: AsyncSession, responder_id: uuid.UUID) -> bool:
    """Whether the responder already holds an open offer or an active unit anywhere."""
    open_offer = exists().where(
        col(Offer.responder_id) == responder_id, col(Offer.status) == OfferStatus.PENDING
    )
    active_unit = exists().where(
        col(Unit.responder_id) == responder_id, col(Unit.status) != UnitState.CLEARED
    )
    return bool((await session.exec(select(or_(open_offer, active_unit)))).one())


async def free_responder(uow: UnitOfWork, responder_id: uuid.UUID, incident_id: uuid.UUID) -> None:
    await uow.stage(
        AvailabilityChanged(responder_id=responder_id, status="free", incident_id=incident_id),
        incident_id=incident_id,
    )


def count_offer(uow: UnitOfWork, dispatch: Dispatch, outcome: str, kind: str) -> None:
    uow.on_commit(lambda: dispatch.metrics.offers.labels(outcome, kind).inc())
