"""Units: a unit's status (en route, on scene, cleared) and a dispatcher's manual assignment."""

from __future__ import annotations

import uuid

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.dispatch.context import Dispatch
from services.dispatch.domain import (
    IncidentStatus,
    OfferStatus,
    UnitState,
    check_unit_transition,
    manual_slot,
)
from services.dispatch.locator_client import (
    Candidate,
    LocatorUnavailable,
    ResponderUnavailable,
    SearchImpossible,
)
from services.dispatch.models import (
    Incident,
    Offer,
    Unit,
)
from services.dispatch.service.common import (
    free_responder,
    hold_s,
    incident_for_update,
    load_plan,
    release_quietly,
    require_open,
    responder_booked,
)
from services.dispatch.service.milestones import settle
from services.dispatch.service.offers import withdraw
from services.dispatch.uow import unit_of_work
from shared.errors import Conflict, NotFound, Unavailable
from shared.events import (
    AvailabilityChanged,
    GeoPoint,
    UnitStatusChanged,
)


async def set_unit_status(
    *, dispatch: Dispatch, incident_id: uuid.UUID, responder_id: uuid.UUID, status: str
) -> Unit:
    """A unit reports en route, on scene or cleared; the milestones follow."""
    async with dispatch.incident_lock(incident_id), unit_of_work(dispatch) as uow:
        s = uow.session
        incident = require_open(await incident_for_update(s, incident_id))
        unit = await s.get(Unit, (incident_id, responder_id), with_for_update=True)
        if unit is None:
            raise NotFound("that responder is not a unit on this incident")
        if not check_unit_transition(unit.status, status):
            return unit
        now = uow.now
        unit.status = status
        if status in (UnitState.EN_ROUTE, UnitState.ON_SCENE) and unit.responding_at is None:
            unit.responding_at = now
        if status == UnitState.ON_SCENE:
            unit.on_scene_at = now
        if status == UnitState.CLEARED:
            unit.cleared_at = now
        s.add(unit)
        await uow.stage(
            UnitStatusChanged(
                incident_id=incident_id,
                responder_id=responder_id,
                kind=unit.kind,
                status=status,
                eta_s=unit.eta_s,
            ),
            incident_id=incident_id,
        )
        if status == UnitState.CLEARED:
            await free_responder(uow, responder_id, incident_id)
        await s.flush()
        await settle(uow, dispatch, incident)
    if status == UnitState.CLEARED and incident.shortfall_since is not None:
        # A unit leaving may leave nobody coming for an unfilled slot: amber turns red.
        # The retry loop re-judges it, so the responder's answer does not wait for claims.
        dispatch.retry_soon()
    return unit


async def assign(
    *, dispatch: Dispatch, incident_id: uuid.UUID, responder_id: uuid.UUID | None
) -> Unit:
    """A dispatcher puts a responder (or, with none named, the next nearest) on the incident."""
    async with dispatch.incident_lock(incident_id):
        async with dispatch.sessions() as s:
            plan = await load_plan(s, incident_id)
        if plan is None:
            raise NotFound("no such incident")
        incident = require_open(plan.incident)
        if responder_id is not None and responder_id in {u.responder_id for u in plan.units}:
            raise Conflict("that responder is already on this incident", code="already_assigned")
        slot_index, slot = manual_slot(plan.slots, filled=[u.slot for u in plan.units])
        try:
            candidate = await dispatch.locator.claim(
                incident_id=incident_id,
                lat=incident.lat,
                lon=incident.lon,
                kinds=slot.kinds,
                skills=slot.skills,
                exclude=plan.tried if responder_id is None else [],
                responder_id=responder_id,
                hold_s=hold_s(dispatch),
            )
        except ResponderUnavailable as exc:
            raise Conflict("that responder is not free", code="responder_unavailable") from exc
        except SearchImpossible as exc:
            raise Conflict(
                f"no search can fill this: {exc.reason}", code="search_impossible"
            ) from exc
        except LocatorUnavailable as exc:
            raise Unavailable("the locator cannot answer now", code="locator_unavailable") from exc
        if candidate is None:
            raise Conflict("nobody eligible is free nearby", code="no_responder_available")
        try:
            unit = await _assign_claimed(dispatch, incident_id, slot_index, candidate)
        except IntegrityError as exc:
            # Another instance booked them first; the partial unique index said no.
            await release_quietly(dispatch, candidate.responder_id, incident_id)
            raise Conflict("that responder is not free", code="responder_unavailable") from exc
        if unit is None:
            await release_quietly(dispatch, candidate.responder_id, incident_id)
            raise Conflict("the incident changed; try again")
        return unit


async def _assign_claimed(
    dispatch: Dispatch, incident_id: uuid.UUID, slot_index: int, candidate: Candidate
) -> Unit | None:
    async with unit_of_work(dispatch) as uow:
        s = uow.session
        incident = await incident_for_update(s, incident_id)
        if incident is None or incident.status != IncidentStatus.OPEN:
            return None
        if await responder_booked(s, candidate.responder_id):
            return None
        # A manual assignment takes the unit's place from any offer still open for it.
        pending = (
            await s.exec(
                select(Offer)
                .where(col(Offer.incident_id) == incident_id)
                .where(col(Offer.slot) == slot_index)
                .where(col(Offer.status) == OfferStatus.PENDING)
            )
        ).all()
        for offer in pending:
            await withdraw(uow, dispatch, incident, offer, reason="reassigned")
        unit = Unit(
            incident_id=incident_id,
            responder_id=candidate.responder_id,
            kind=candidate.kind,
            slot=slot_index,
            eta_s=candidate.eta_s,
            assigned_at=uow.now,
        )
        s.add(unit)
        await uow.stage(
            AvailabilityChanged(
                responder_id=candidate.responder_id, status="busy", incident_id=incident_id
            ),
            incident_id=incident_id,
        )
        await uow.stage(
            UnitStatusChanged(
                incident_id=incident_id,
                responder_id=candidate.responder_id,
                kind=candidate.kind,
                status="assigned",
                eta_s=candidate.eta_s,
                assigned_by="dispatcher",
                category=incident.category,
                location=GeoPoint(lat=incident.lat, lon=incident.lon),
                address=incident.address,
            ),
            incident_id=incident_id,
        )
        flagged = incident.no_responder_since or incident.shortfall_since
        if flagged is not None and not (await _still_short(s, incident)):
            incident.no_responder_since = None
            incident.shortfall_since = None
            s.add(incident)
    return unit


async def _still_short(session: AsyncSession, incident: Incident) -> bool:
    plan = await load_plan(session, incident.id)
    return bool(plan and plan.needing_offers())
