"""Offers: claiming the nearest eligible responder for each unit of the plan, and
answering, expiring and withdrawing offers."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Literal

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, func, select

from services.dispatch.alarms import AlarmLevel, alarm_level
from services.dispatch.context import Dispatch
from services.dispatch.domain import (
    IncidentStatus,
    OfferStatus,
    PlanSlot,
    UnitState,
    check_offer_answerable,
)
from services.dispatch.locator_client import (
    Candidate,
    LocatorUnavailable,
    SearchImpossible,
    known_kinds,
)
from services.dispatch.metrics import grid_label
from services.dispatch.models import (
    Incident,
    Offer,
    Unit,
)
from services.dispatch.plans import slots_from_json
from services.dispatch.service.bookings import resync_responder
from services.dispatch.service.common import (
    OFFER_TIMER,
    PlanState,
    count_offer,
    free_responder,
    hold_s,
    incident_for_update,
    load_plan,
    release_quietly,
    responder_booked,
)
from services.dispatch.service.milestones import settle
from services.dispatch.trace import earlier_outcomes, explain
from services.dispatch.uow import UnitOfWork, unit_of_work
from shared.errors import Conflict, Forbidden, NotFound
from shared.events import (
    AvailabilityChanged,
    Event,
    GeoPoint,
    NoResponderAvailable,
    OfferAccepted,
    OfferDeclined,
    OfferExpired,
    OfferWithdrawn,
    ResponderOffered,
    SlotUnfilled,
    UnitStatusChanged,
)

log = logging.getLogger(__name__)


async def fill_incident(*, dispatch: Dispatch, incident_id: uuid.UUID) -> None:
    """Offer each unit of the plan that has neither a unit nor an open offer, in parallel.

    Nobody eligible for a unit flags the incident red or amber (once per episode); a
    locator that cannot answer leaves it for the periodic retry.
    """
    async with dispatch.incident_lock(incident_id):
        attempted: set[int] = set()
        missing_kinds: list[str] = []
        # Responders the locator handed us but dispatch holds elsewhere: its index drifted.
        refused: set[uuid.UUID] = set()
        while True:
            async with dispatch.sessions() as s:
                plan = await load_plan(s, incident_id)
            if plan is None or plan.incident.status != IncidentStatus.OPEN:
                return
            todo = [i for i in plan.needing_offers() if i not in attempted]
            if not todo:
                break
            slot_index = todo[0]
            attempted.add(slot_index)
            slot = plan.slots[slot_index]
            try:
                candidate = await claim_slot(
                    dispatch,
                    incident_id=incident_id,
                    lat=plan.incident.lat,
                    lon=plan.incident.lon,
                    slot=slot,
                    exclude=sorted({*plan.tried, *refused}),
                )
            except LocatorUnavailable as exc:
                log.warning("claim failed, the periodic retry will try again: %s", exc)
                return
            except SearchImpossible as exc:
                log.error("no search can fill this incident (%s); flagging it", exc.reason)
                await _set_escalation(
                    dispatch, incident_id, known_kinds(slot.kinds), reason=exc.reason
                )
                return
            if candidate is None:
                missing_kinds.extend(k for k in slot.kinds if k not in missing_kinds)
                continue
            placed = await _place_offer(dispatch, incident_id, slot_index, candidate)
            if placed == "booked_elsewhere":
                # Not this responder for this incident; try the next one for the slot at
                # once, and tell the locator again who holds them (it drops our claim).
                refused.add(candidate.responder_id)
                attempted.discard(slot_index)
                await refuse_claim(dispatch, candidate.responder_id, incident_id)
                continue
            if placed != "placed":
                await release_quietly(dispatch, candidate.responder_id, incident_id)
            if all(i in attempted for i in todo):
                # Every slot this plan needed has had its try; reading the plan again would
                # only show that (whatever changes it in this instance holds the lock).
                break
        flags = (plan.incident.no_responder_since, plan.incident.shortfall_since)
        if not missing_kinds and flags == (None, None):
            return  # nothing to flag or unflag (only this lock's holder changes the flags)
        await _set_escalation(dispatch, incident_id, missing_kinds)


async def refuse_claim(dispatch: Dispatch, responder_id: uuid.UUID, incident_id: uuid.UUID) -> None:
    """A claim granted someone dispatch holds elsewhere: count it and restate their
    booking to the locator (which drops our claim); if they were freed meanwhile there is
    nothing to restate, so hand our claim back."""
    dispatch.metrics.claims_refused.inc()
    if not await resync_responder(dispatch=dispatch, responder_id=responder_id):
        await release_quietly(dispatch, responder_id, incident_id)


Placement = Literal["placed", "not_needed", "booked_elsewhere"]


async def _place_offer(
    dispatch: Dispatch, incident_id: uuid.UUID, slot_index: int, candidate: Candidate
) -> Placement:
    """Record the offer of a claimed responder and stage ResponderOffered with it."""
    try:
        return await _record_offer(dispatch, incident_id, slot_index, candidate)
    except IntegrityError:
        # Another instance booked them between our check and our commit: the partial
        # unique index (one pending offer, one active unit per responder) said no.
        return "booked_elsewhere"


async def _record_offer(
    dispatch: Dispatch, incident_id: uuid.UUID, slot_index: int, candidate: Candidate
) -> Placement:
    async with unit_of_work(dispatch) as uow:
        s = uow.session
        incident = await incident_for_update(s, incident_id)
        if incident is None or incident.status != IncidentStatus.OPEN:
            return "not_needed"
        plan = await load_plan(s, incident_id)
        if plan is None or slot_index not in plan.needing_offers():
            return "not_needed"
        if await responder_booked(s, candidate.responder_id):
            log.warning("the locator claimed a responder dispatch holds elsewhere; next one")
            return "booked_elsewhere"
        await record_offer(
            uow,
            dispatch,
            incident,
            slot_index,
            candidate,
            slot=plan.slots[slot_index],
            earlier=earlier_outcomes(
                ((str(o.responder_id), o.status) for o in plan.offers),
                (str(u.responder_id) for u in plan.units),
            ),
        )
        await s.flush()  # a unique-index conflict surfaces here, inside the try
    return "placed"


async def claim_slot(
    dispatch: Dispatch,
    *,
    incident_id: uuid.UUID,
    lat: float,
    lon: float,
    slot: PlanSlot,
    exclude: Sequence[uuid.UUID],
) -> Candidate | None:
    """Claim the nearest eligible free responder for one plan slot (timed per outcome)."""
    started = time.perf_counter()
    outcome = "unavailable"
    try:
        candidate = await dispatch.locator.claim(
            incident_id=incident_id,
            lat=lat,
            lon=lon,
            kinds=slot.kinds,
            skills=slot.skills,
            exclude=exclude,
            hold_s=hold_s(dispatch),
        )
        outcome = "nobody" if candidate is None else "claimed"
        return candidate
    except SearchImpossible:
        outcome = "impossible"
        raise
    finally:
        elapsed_s = time.perf_counter() - started
        dispatch.metrics.claim_seconds.labels(outcome).observe(elapsed_s)


async def record_offer(
    uow: UnitOfWork,
    dispatch: Dispatch,
    incident: Incident,
    slot_index: int,
    candidate: Candidate,
    *,
    slot: PlanSlot,
    earlier: Mapping[str, str],
) -> None:
    """Save the offer of a claimed responder with its decision trace, its expiry timer and
    ResponderOffered, in the caller's unit of work (the caller has checked the slot still
    needs it and the responder is not booked elsewhere)."""
    s = uow.session
    incident_id = incident.id
    now = uow.now
    trace = explain(candidate.trace, slot_index=slot_index, slot=slot, earlier=earlier)
    offer = Offer(
        incident_id=incident_id,
        responder_id=candidate.responder_id,
        slot=slot_index,
        kind=candidate.kind,
        distance_m=candidate.distance_m,
        eta_s=candidate.eta_s,
        offered_at=now,
        expires_at=now + timedelta(seconds=dispatch.settings.offer_timeout_s),
        trace_json=json.dumps(trace) if trace is not None else None,
    )
    s.add(offer)
    uow.add_timer(
        kind=OFFER_TIMER, incident_id=incident_id, ref=str(offer.id), due_at=offer.expires_at
    )
    await uow.stage(
        ResponderOffered(
            incident_id=incident_id,
            offer_id=offer.id,
            responder_id=candidate.responder_id,
            kind=candidate.kind,
            category=incident.category,
            location=GeoPoint(lat=incident.lat, lon=incident.lon),
            address=incident.address,
            distance_m=candidate.distance_m,
            eta_s=candidate.eta_s,
            expires_at=offer.expires_at,
        ),
        incident_id=incident_id,
    )
    metrics = dispatch.metrics
    kind = candidate.kind
    uow.on_commit(lambda: metrics.offers.labels("offered", kind).inc())
    if incident.first_offer_at is None:
        incident.first_offer_at = now
        s.add(incident)
        latency = max(0.0, (now - incident.received_at).total_seconds())
        category = incident.category
        uow.on_commit(lambda: metrics.dispatch_latency.labels(category).observe(latency))


async def _set_escalation(
    dispatch: Dispatch,
    incident_id: uuid.UUID,
    missing_kinds: list[str],
    *,
    reason: str = "nobody_free",
) -> None:
    """Flag the incident red (nobody coming: NoResponderAvailable) or amber (a slot unfilled
    while a unit is coming: SlotUnfilled), once per episode; or clear the flags."""
    # Most retries change nothing: judge on a plain read, and take the row lock only to
    # change the flags (a write transaction per retry would queue behind every writer).
    async with dispatch.sessions() as s:
        plan = await load_plan(s, incident_id)
    if plan is None or _alarm_unchanged(plan, missing_kinds, reason):
        return
    async with unit_of_work(dispatch) as uow:
        s = uow.session
        incident = await incident_for_update(s, incident_id)
        if incident is None or incident.status != IncidentStatus.OPEN:
            return
        plan = await load_plan(s, incident_id)
        if plan is None or _alarm_unchanged(plan, missing_kinds, reason):
            return
        await flag_no_responder(
            uow,
            dispatch,
            incident,
            missing_kinds,
            reason=reason,
            open_offers=sum(o.status == OfferStatus.PENDING for o in plan.offers),
            live_units=sum(u.status != UnitState.CLEARED for u in plan.units),
        )


async def flag_no_responder(
    uow: UnitOfWork,
    dispatch: Dispatch,
    incident: Incident,
    missing_kinds: Sequence[str],
    *,
    reason: str = "nobody_free",
    open_offers: int,
    live_units: int,
) -> None:
    """Set an open incident's alarm flags in the caller's unit of work: red with
    NoResponderAvailable when nobody is coming, amber with SlotUnfilled when a slot is
    unfilled while someone is, none otherwise (each event once per episode)."""
    level = alarm_level(
        missing_slots=_missing_slots(missing_kinds, reason),
        open_offers=open_offers,
        live_units=live_units,
    )
    red = incident.no_responder_since is not None
    amber = incident.shortfall_since is not None
    incident_id = incident.id
    uow.touched.add(incident_id)
    where = (incident.category, grid_label(incident.grid))
    metrics = dispatch.metrics
    if level == AlarmLevel.RED:
        incident.shortfall_since = None
        if not red:
            incident.no_responder_since = uow.now
            await uow.stage(
                NoResponderAvailable(
                    incident_id=incident_id,
                    category=incident.category,
                    radius_m=dispatch.settings.no_responder_radius_m,
                    kinds=tuple(missing_kinds),
                    reason=reason,
                ),
                incident_id=incident_id,
            )
            uow.on_commit(lambda: metrics.no_responder.labels(*where).inc())
    elif level == AlarmLevel.AMBER:
        incident.no_responder_since = None
        if not amber:
            incident.shortfall_since = uow.now
            await uow.stage(
                SlotUnfilled(
                    incident_id=incident_id,
                    category=incident.category,
                    kinds=tuple(missing_kinds),
                    coming=open_offers + live_units,
                ),
                incident_id=incident_id,
            )
            uow.on_commit(lambda: metrics.slot_unfilled.labels(*where).inc())
    else:
        incident.no_responder_since = None
        incident.shortfall_since = None
    uow.session.add(incident)


def _missing_slots(missing_kinds: Sequence[str], reason: str) -> int:
    """How many slots lack someone; a search no retry can fix counts as one at least."""
    return len(missing_kinds) or (0 if reason == "nobody_free" else 1)


def _alarm_unchanged(plan: PlanState, missing_kinds: list[str], reason: str) -> bool:
    """Whether the incident's flags already say what its missing slots and coming units do
    (a closed incident keeps its flags)."""
    incident = plan.incident
    if incident.status != IncidentStatus.OPEN:
        return True
    level = alarm_level(
        missing_slots=_missing_slots(missing_kinds, reason),
        open_offers=sum(o.status == OfferStatus.PENDING for o in plan.offers),
        live_units=sum(u.status != UnitState.CLEARED for u in plan.units),
    )
    flags = (incident.no_responder_since is not None, incident.shortfall_since is not None)
    return flags == (level == AlarmLevel.RED, level == AlarmLevel.AMBER)


async def _answer(
    dispatch: Dispatch, *, offer_id: uuid.UUID, responder_id: str, accept: bool
) -> Offer:
    async with dispatch.sessions() as s:
        offer = await s.get(Offer, offer_id)
    if offer is None:
        raise NotFound("no such offer")
    if str(offer.responder_id) != responder_id:
        raise Forbidden("this offer was made to someone else")
    incident_id = offer.incident_id
    try:
        lapsed, offer = await _answer_in_turn(dispatch, incident_id, offer_id, accept=accept)
    except IntegrityError as exc:
        # The responder is already a unit elsewhere (booked by another instance meanwhile).
        raise Conflict("you are already working another incident", code="responder_busy") from exc
    if lapsed or not accept:
        await fill_incident(dispatch=dispatch, incident_id=incident_id)
    if lapsed:
        raise Conflict("the offer has expired", code="offer_closed")
    return offer


async def _answer_in_turn(
    dispatch: Dispatch, incident_id: uuid.UUID, offer_id: uuid.UUID, *, accept: bool
) -> tuple[bool, Offer]:
    """Answer under the incident's lock; whether the offer had lapsed, and the offer."""
    conflict: Conflict | None = None
    lapsed = False
    async with dispatch.incident_lock(incident_id), unit_of_work(dispatch) as uow:
        s = uow.session
        incident = await incident_for_update(s, incident_id)
        offer = await s.get(Offer, offer_id, with_for_update=True)
        if incident is None or offer is None:
            raise NotFound("no such offer")
        try:
            answerable = check_offer_answerable(
                offer.status, expires_at=offer.expires_at, now=uow.now
            )
        except Conflict as exc:
            conflict = exc
        else:
            if not answerable:
                await expire_offer(uow, dispatch, incident, offer)
                lapsed = True
            elif accept:
                await _accept(uow, dispatch, incident, offer)
            else:
                await _decline(uow, dispatch, incident, offer)
    if conflict is not None:
        raise conflict
    return lapsed, offer


async def accept_offer(*, dispatch: Dispatch, offer_id: uuid.UUID, responder_id: str) -> Offer:
    """The offered responder accepts: they become a unit and the locator hears they are busy."""
    return await _answer(dispatch, offer_id=offer_id, responder_id=responder_id, accept=True)


async def decline_offer(*, dispatch: Dispatch, offer_id: uuid.UUID, responder_id: str) -> Offer:
    """The offered responder declines: they are freed and the next nearest is offered."""
    return await _answer(dispatch, offer_id=offer_id, responder_id=responder_id, accept=False)


async def _accept(uow: UnitOfWork, dispatch: Dispatch, incident: Incident, offer: Offer) -> None:
    now = uow.now
    offer.status, offer.answered_at = OfferStatus.ACCEPTED, now
    uow.session.add(offer)
    await uow.drop_timers(incident_id=incident.id, kind=OFFER_TIMER, ref=str(offer.id))
    uow.session.add(
        Unit(
            incident_id=incident.id,
            responder_id=offer.responder_id,
            kind=offer.kind,
            slot=offer.slot,
            eta_s=offer.eta_s,
            assigned_at=now,
            responding_at=now,  # accepting is responding (T1): the responder sets off
        )
    )
    kind = offer.kind
    await uow.stage(
        OfferAccepted(
            incident_id=incident.id,
            offer_id=offer.id,
            responder_id=offer.responder_id,
            kind=kind,
            eta_s=offer.eta_s,
        ),
        incident_id=incident.id,
    )
    await uow.stage(
        AvailabilityChanged(
            responder_id=offer.responder_id, status="busy", incident_id=incident.id
        ),
        incident_id=incident.id,
    )
    await uow.stage(
        UnitStatusChanged(
            incident_id=incident.id,
            responder_id=offer.responder_id,
            kind=kind,
            status="assigned",
            eta_s=offer.eta_s,
            assigned_by="offer",
        ),
        incident_id=incident.id,
    )
    count_offer(uow, dispatch, "accepted", kind)
    await uow.session.flush()
    await settle(uow, dispatch, incident)


async def _end_offer(
    uow: UnitOfWork,
    dispatch: Dispatch,
    incident: Incident,
    offer: Offer,
    *,
    status: OfferStatus,
    event: Event,
) -> None:
    """Close a pending offer as ``status``: drop its timer, announce it, free the responder."""
    offer.status, offer.answered_at = status, uow.now
    uow.session.add(offer)
    await uow.drop_timers(incident_id=incident.id, kind=OFFER_TIMER, ref=str(offer.id))
    await uow.stage(event, incident_id=incident.id)
    await free_responder(uow, offer.responder_id, incident.id)
    count_offer(uow, dispatch, status.value, offer.kind)


async def _decline(uow: UnitOfWork, dispatch: Dispatch, incident: Incident, offer: Offer) -> None:
    await _end_offer(
        uow,
        dispatch,
        incident,
        offer,
        status=OfferStatus.DECLINED,
        event=OfferDeclined(
            incident_id=incident.id, offer_id=offer.id, responder_id=offer.responder_id
        ),
    )


async def expire_offer(
    uow: UnitOfWork, dispatch: Dispatch, incident: Incident, offer: Offer
) -> None:
    """The offer lapsed unanswered: free the responder (the caller offers the next nearest)."""
    await _end_offer(
        uow,
        dispatch,
        incident,
        offer,
        status=OfferStatus.EXPIRED,
        event=OfferExpired(
            incident_id=incident.id, offer_id=offer.id, responder_id=offer.responder_id
        ),
    )


async def withdraw(
    uow: UnitOfWork, dispatch: Dispatch, incident: Incident, offer: Offer, *, reason: str
) -> None:
    await _end_offer(
        uow,
        dispatch,
        incident,
        offer,
        status=OfferStatus.WITHDRAWN,
        event=OfferWithdrawn(
            incident_id=incident.id,
            offer_id=offer.id,
            responder_id=offer.responder_id,
            reason=reason,
        ),
    )


async def retry_waiting(*, dispatch: Dispatch, flagged_only: bool = False) -> int:
    """Offer again every open incident still short of units; flagged ones first.

    ``flagged_only`` retries just the incidents flagged as having nobody available: what
    a responder coming free can help at once (the periodic retry covers the rest).
    """
    query = select(Incident).where(col(Incident.status) == IncidentStatus.OPEN)
    if flagged_only:
        query = query.where(
            col(Incident.no_responder_since).is_not(None)
            | col(Incident.shortfall_since).is_not(None)
        )
    async with dispatch.sessions() as s:
        incidents = (await s.exec(query)).all()
        # One count per table instead of reading every open incident's plan: after a surge
        # thousands are open, nearly all with every unit offered or filled.
        taken: dict[uuid.UUID, int] = {}
        pending_offers = (
            select(col(Offer.incident_id), func.count())
            .join(Incident, col(Incident.id) == col(Offer.incident_id))
            .where(col(Incident.status) == IncidentStatus.OPEN)
            .where(col(Offer.status) == OfferStatus.PENDING)
            .group_by(col(Offer.incident_id))
        )
        units = (
            select(col(Unit.incident_id), func.count())
            .join(Incident, col(Incident.id) == col(Unit.incident_id))
            .where(col(Incident.status) == IncidentStatus.OPEN)
            .group_by(col(Unit.incident_id))
        )
        for counted in (pending_offers, units):
            for incident_id, n in (await s.exec(counted)).all():
                taken[incident_id] = taken.get(incident_id, 0) + int(n)
    waiting = sorted(
        (
            i
            for i in incidents
            if i.no_responder_since is not None
            or i.shortfall_since is not None
            or taken.get(i.id, 0) < len(slots_from_json(i.slots_json))
        ),
        key=lambda i: (i.no_responder_since is None, i.priority, i.received_at),
    )
    for incident in waiting:
        await fill_incident(dispatch=dispatch, incident_id=incident.id)
    return len(waiting)
