"""Dispatch's commands and queries: plain functions with keyword arguments.

Every state change happens in a :func:`unit_of_work` together with the events that
announce it. Claims (the one synchronous call, to the locator) happen outside a
transaction but inside the incident's lock; a claim that cannot be recorded is
released at once, and the locator's own hold timer covers a crash in between.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.dispatch.domain import (
    Conflict,
    IncidentStatus,
    MilestoneState,
    OfferStatus,
    OpenIncidentView,
    PlanSlot,
    QueueEntry,
    StageOutcome,
    UnitState,
    UnitTimes,
    achieved_at,
    check_offer_answerable,
    check_unit_transition,
    find_duplicate,
    judge_stage,
    progress_of,
    slots_to_offer,
    tightened,
    urgency_key,
)
from services.dispatch.locator_client import (
    Candidate,
    LocatorUnavailable,
    ResponderUnavailable,
    SearchImpossible,
    known_kinds,
)
from services.dispatch.metrics import grid_label
from services.dispatch.models import (
    Incident,
    IncidentDetail,
    IncidentPublic,
    IncidentReport,
    Milestone,
    MilestonePublic,
    Offer,
    OfferPublic,
    ReportPublic,
    TimelineEntry,
    TimelinePublic,
    Unit,
    UnitPublic,
)
from services.dispatch.plans import plan_for, slots_from_json, slots_to_json
from services.dispatch.uow import Dispatch, UnitOfWork, unit_of_work
from shared.errors import ApiError
from shared.events import (
    AvailabilityChanged,
    GeoPoint,
    IncidentCancelled,
    IncidentOpened,
    IncidentResolved,
    MilestoneReached,
    NoResponderAvailable,
    OfferAccepted,
    OfferDeclined,
    OfferExpired,
    OfferWithdrawn,
    ReportCancelled,
    ReportMerged,
    ReportReceived,
    ResponderOffered,
    StageTarget,
    TargetBreached,
    UnitStatusChanged,
)

log = logging.getLogger(__name__)

OFFER_TIMER = "offer"
TARGET_TIMER = "target"


@asynccontextmanager
async def _as_api_errors() -> AsyncIterator[None]:
    """Domain conflicts answer 409."""
    try:
        yield
    except Conflict as exc:
        raise ApiError(409, exc.code, exc.message) from exc


async def _incident_for_update(session: AsyncSession, incident_id: uuid.UUID) -> Incident | None:
    query = select(Incident).where(col(Incident.id) == incident_id).with_for_update()
    return (await session.exec(query)).first()


def _require_open(incident: Incident | None) -> Incident:
    if incident is None:
        raise ApiError(404, "not_found", "no such incident")
    if incident.status != IncidentStatus.OPEN:
        raise ApiError(409, "incident_closed", f"the incident is {incident.status}")
    return incident


# --- reports ------------------------------------------------------------------


async def receive_report(*, dispatch: Dispatch, report: ReportReceived) -> uuid.UUID | None:
    """Open an incident for a report, or join it to an open duplicate; then make offers.

    Returns the incident id, or None for a report already handled.
    """
    settings = dispatch.settings
    opened: uuid.UUID | None = None
    async with dispatch.opening_lock, unit_of_work(dispatch) as uow:
        s = uow.session
        if await s.get(IncidentReport, report.report_id) is not None:
            return None
        horizon = report.received_at - timedelta(seconds=settings.duplicate_window_s)
        candidates = (
            await s.exec(
                select(Incident)
                .where(col(Incident.status) == IncidentStatus.OPEN)
                .where(col(Incident.category) == report.category)
                .where(col(Incident.last_report_at) >= horizon)
            )
        ).all()
        duplicate = find_duplicate(
            (
                OpenIncidentView(str(i.id), i.category, i.lat, i.lon, i.last_report_at)
                for i in candidates
            ),
            category=report.category,
            lat=report.location.lat,
            lon=report.location.lon,
            received_at=report.received_at,
            radius_m=settings.duplicate_radius_m,
            window_s=settings.duplicate_window_s,
        )
        if duplicate is not None:
            incident = await _incident_for_update(s, uuid.UUID(duplicate.incident_id))
            assert incident is not None
            _link_report(s, incident, report)
            await uow.stage(
                ReportMerged(incident_id=incident.id, report_id=report.report_id),
                incident_id=incident.id,
            )
            category = incident.category
            uow.on_commit(lambda: dispatch.metrics.reports_merged.labels(category).inc())
            return incident.id
        incident = await _open(uow, dispatch, report)
        opened = incident.id
    await fill_incident(dispatch=dispatch, incident_id=opened)
    return opened


def _link_report(session: AsyncSession, incident: Incident, report: ReportReceived) -> None:
    session.add(
        IncidentReport(
            report_id=report.report_id,
            incident_id=incident.id,
            lat=report.location.lat,
            lon=report.location.lon,
            description=report.description,
            received_at=report.received_at,
        )
    )
    incident.last_report_at = max(incident.last_report_at, report.received_at)
    session.add(incident)


async def _open(uow: UnitOfWork, dispatch: Dispatch, report: ReportReceived) -> Incident:
    plan = plan_for(dispatch.plans, report.category)
    grid = dispatch.grids.locate(report.location.lat, report.location.lon)
    tier = grid.zone_tier if grid else None
    factor = dispatch.settings.zone_tier_factors.get(tier, 1.0) if tier else 1.0
    stages = tightened(plan.stages, factor=factor, overrides=dispatch.settings.target_overrides_s)
    incident = Incident(
        category=report.category,
        priority=plan.priority,
        lat=report.location.lat,
        lon=report.location.lon,
        address=report.address,
        grid=grid.grid if grid else None,
        office=grid.office if grid else None,
        zone_tier=tier,
        slots_json=slots_to_json(plan),
        first_report_id=report.report_id,
        received_at=report.received_at,
        last_report_at=report.received_at,
    )
    s = uow.session
    s.add(incident)
    await s.flush()
    _link_report(s, incident, report)
    for position, spec in enumerate(stages):
        due_at = report.received_at + timedelta(seconds=spec.target_s)
        s.add(
            Milestone(
                incident_id=incident.id,
                stage=spec.stage,
                position=position,
                label=spec.label,
                kind=spec.kind,
                target_s=spec.target_s,
                due_at=due_at,
            )
        )
        uow.add_timer(kind=TARGET_TIMER, incident_id=incident.id, ref=spec.stage, due_at=due_at)
    await uow.stage(
        IncidentOpened(
            incident_id=incident.id,
            report_id=report.report_id,
            category=report.category,
            priority=plan.priority,
            location=report.location,
            address=report.address,
            grid=incident.grid,
            office=incident.office,
            zone_tier=tier,
            received_at=report.received_at,
            targets=tuple(
                StageTarget(stage=s.stage, label=s.label, target_s=s.target_s) for s in stages
            ),
        ),
        incident_id=incident.id,
    )
    uow.status_changed = True
    labels = (incident.category, grid_label(incident.grid))
    uow.on_commit(lambda: dispatch.metrics.incidents_opened.labels(*labels).inc())
    return incident


async def cancel_report(*, dispatch: Dispatch, event: ReportCancelled) -> None:
    """A reporter withdrew a report; the incident closes once all its reports are withdrawn."""
    async with dispatch.sessions() as s:
        link = await s.get(IncidentReport, event.report_id)
    if link is None:
        return
    async with dispatch.incident_lock(link.incident_id), unit_of_work(dispatch) as uow:
        s = uow.session
        incident = await _incident_for_update(s, link.incident_id)
        link = await s.get(IncidentReport, event.report_id)
        if incident is None or link is None:
            return
        if link.cancelled_at is None:
            link.cancelled_at = event.cancelled_at
            s.add(link)
        reports = (
            await s.exec(
                select(IncidentReport).where(col(IncidentReport.incident_id) == incident.id)
            )
        ).all()
        if incident.status == IncidentStatus.OPEN and all(
            r.cancelled_at is not None for r in reports
        ):
            await _close(uow, dispatch, incident, IncidentStatus.CANCELLED, reason=event.reason)


# --- offers -------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
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


async def _load_plan(session: AsyncSession, incident_id: uuid.UUID) -> _Plan | None:
    incident = await session.get(Incident, incident_id)
    if incident is None:
        return None
    offers = (await session.exec(select(Offer).where(col(Offer.incident_id) == incident_id))).all()
    units = (await session.exec(select(Unit).where(col(Unit.incident_id) == incident_id))).all()
    return _Plan(incident, slots_from_json(incident.slots_json), offers, units)


def _hold_s(dispatch: Dispatch) -> float:
    return dispatch.settings.offer_timeout_s + dispatch.settings.claim_hold_margin_s


async def fill_incident(*, dispatch: Dispatch, incident_id: uuid.UUID) -> None:
    """Offer each unit of the plan that has neither a unit nor an open offer, in parallel.

    Nobody eligible for a unit flags the incident ``NoResponderAvailable`` (once per
    episode); a locator that cannot answer leaves it for the periodic retry.
    """
    async with dispatch.incident_lock(incident_id):
        attempted: set[int] = set()
        missing_kinds: list[str] = []
        while True:
            async with dispatch.sessions() as s:
                plan = await _load_plan(s, incident_id)
            if plan is None or plan.incident.status != IncidentStatus.OPEN:
                return
            todo = [i for i in plan.needing_offers() if i not in attempted]
            if not todo:
                break
            slot_index = todo[0]
            attempted.add(slot_index)
            slot = plan.slots[slot_index]
            try:
                candidate = await dispatch.locator.claim(
                    incident_id=incident_id,
                    lat=plan.incident.lat,
                    lon=plan.incident.lon,
                    kinds=slot.kinds,
                    skills=slot.skills,
                    exclude=plan.tried,
                    hold_s=_hold_s(dispatch),
                )
            except LocatorUnavailable as exc:
                log.warning("claim failed, the periodic retry will try again: %s", exc)
                return
            except SearchImpossible as exc:
                log.error("no search can fill this incident (%s); flagging it", exc.reason)
                missing = known_kinds(slot.kinds)
                await _set_escalation(dispatch, incident_id, missing, reason=exc.reason)
                return
            if candidate is None:
                missing_kinds.extend(k for k in slot.kinds if k not in missing_kinds)
                continue
            if not await _place_offer(dispatch, incident_id, slot_index, candidate):
                await _release_quietly(dispatch, candidate.responder_id, incident_id)
            if all(i in attempted for i in todo):
                # Every slot this plan needed has had its try; reading the plan again would
                # only show that (whatever changes it in this instance holds the lock).
                break
        if not missing_kinds and plan.incident.no_responder_since is None:
            return  # nothing to flag or unflag (only this lock's holder changes the flag)
        await _set_escalation(dispatch, incident_id, missing_kinds)


async def _release_quietly(
    dispatch: Dispatch, responder_id: uuid.UUID, incident_id: uuid.UUID
) -> None:
    # If this fails too, the locator's hold timer frees the responder.
    with suppress(LocatorUnavailable):
        await dispatch.locator.release(responder_id=responder_id, incident_id=incident_id)


async def _responder_booked(session: AsyncSession, responder_id: uuid.UUID) -> bool:
    """Whether the responder already holds an open offer or an active unit anywhere."""
    offer = (
        await session.exec(
            select(Offer.id)
            .where(col(Offer.responder_id) == responder_id)
            .where(col(Offer.status) == OfferStatus.PENDING)
        )
    ).first()
    if offer is not None:
        return True
    unit = (
        await session.exec(
            select(Unit.responder_id)
            .where(col(Unit.responder_id) == responder_id)
            .where(col(Unit.status) != UnitState.CLEARED)
        )
    ).first()
    return unit is not None


async def _place_offer(
    dispatch: Dispatch, incident_id: uuid.UUID, slot_index: int, candidate: Candidate
) -> bool:
    """Record the offer of a claimed responder and stage ResponderOffered with it."""
    async with unit_of_work(dispatch) as uow:
        s = uow.session
        incident = await _incident_for_update(s, incident_id)
        if incident is None or incident.status != IncidentStatus.OPEN:
            return False
        plan = await _load_plan(s, incident_id)
        assert plan is not None
        if slot_index not in plan.needing_offers():
            return False
        if await _responder_booked(s, candidate.responder_id):
            log.error("the locator claimed a responder dispatch still holds; releasing")
            return False
        now = uow.now
        offer = Offer(
            incident_id=incident_id,
            responder_id=candidate.responder_id,
            slot=slot_index,
            kind=candidate.kind,
            distance_m=candidate.distance_m,
            eta_s=candidate.eta_s,
            offered_at=now,
            expires_at=now + timedelta(seconds=dispatch.settings.offer_timeout_s),
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
    return True


async def _set_escalation(
    dispatch: Dispatch,
    incident_id: uuid.UUID,
    missing_kinds: list[str],
    *,
    reason: str = "nobody_free",
) -> None:
    """Flag (once per episode) or unflag the incident as having nobody available."""
    async with dispatch.sessions() as s:
        incident = await s.get(Incident, incident_id)
    if incident is None or incident.status != IncidentStatus.OPEN:
        return
    flagged = incident.no_responder_since is not None
    if flagged == (bool(missing_kinds) or reason != "nobody_free"):
        return
    async with unit_of_work(dispatch) as uow:
        incident = await _incident_for_update(uow.session, incident_id)
        if incident is None or incident.status != IncidentStatus.OPEN:
            return
        if not missing_kinds and reason == "nobody_free":
            incident.no_responder_since = None
            uow.session.add(incident)
            uow.touched.add(incident_id)
            return
        if incident.no_responder_since is not None:
            return
        incident.no_responder_since = uow.now
        uow.session.add(incident)
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
        escalated = (incident.category, grid_label(incident.grid))
        uow.on_commit(lambda: dispatch.metrics.no_responder.labels(*escalated).inc())


async def _answer(
    dispatch: Dispatch, *, offer_id: uuid.UUID, responder_id: str, accept: bool
) -> Offer:
    async with dispatch.sessions() as s:
        offer = await s.get(Offer, offer_id)
    if offer is None:
        raise ApiError(404, "not_found", "no such offer")
    if str(offer.responder_id) != responder_id:
        raise ApiError(403, "forbidden", "this offer was made to someone else")
    incident_id = offer.incident_id
    conflict: Conflict | None = None
    lapsed = False
    async with dispatch.incident_lock(incident_id), unit_of_work(dispatch) as uow:
        s = uow.session
        incident = await _incident_for_update(s, incident_id)
        offer = await s.get(Offer, offer_id, with_for_update=True)
        assert incident is not None
        assert offer is not None
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
        raise ApiError(409, conflict.code, conflict.message)
    if lapsed or not accept:
        await fill_incident(dispatch=dispatch, incident_id=incident_id)
    if lapsed:
        raise ApiError(409, "offer_closed", "the offer has expired")
    return offer


async def accept_offer(*, dispatch: Dispatch, offer_id: uuid.UUID, responder_id: str) -> Offer:
    """The offered responder accepts: they become a unit and the locator hears they are busy."""
    return await _answer(dispatch, offer_id=offer_id, responder_id=responder_id, accept=True)


async def decline_offer(*, dispatch: Dispatch, offer_id: uuid.UUID, responder_id: str) -> Offer:
    """The offered responder declines: they are freed and the next nearest is offered."""
    return await _answer(dispatch, offer_id=offer_id, responder_id=responder_id, accept=False)


def _count_offer(uow: UnitOfWork, dispatch: Dispatch, outcome: str, kind: str) -> None:
    uow.on_commit(lambda: dispatch.metrics.offers.labels(outcome, kind).inc())


async def _free(uow: UnitOfWork, responder_id: uuid.UUID, incident_id: uuid.UUID) -> None:
    await uow.stage(
        AvailabilityChanged(responder_id=responder_id, status="free", incident_id=incident_id),
        incident_id=incident_id,
    )


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
    _count_offer(uow, dispatch, "accepted", kind)
    await uow.session.flush()
    await _settle(uow, dispatch, incident)


async def _decline(uow: UnitOfWork, dispatch: Dispatch, incident: Incident, offer: Offer) -> None:
    offer.status, offer.answered_at = OfferStatus.DECLINED, uow.now
    uow.session.add(offer)
    await uow.drop_timers(incident_id=incident.id, kind=OFFER_TIMER, ref=str(offer.id))
    await uow.stage(
        OfferDeclined(incident_id=incident.id, offer_id=offer.id, responder_id=offer.responder_id),
        incident_id=incident.id,
    )
    await _free(uow, offer.responder_id, incident.id)
    _count_offer(uow, dispatch, "declined", offer.kind)


async def expire_offer(
    uow: UnitOfWork, dispatch: Dispatch, incident: Incident, offer: Offer
) -> None:
    """The offer lapsed unanswered: free the responder (the caller offers the next nearest)."""
    offer.status, offer.answered_at = OfferStatus.EXPIRED, uow.now
    uow.session.add(offer)
    await uow.drop_timers(incident_id=incident.id, kind=OFFER_TIMER, ref=str(offer.id))
    await uow.stage(
        OfferExpired(incident_id=incident.id, offer_id=offer.id, responder_id=offer.responder_id),
        incident_id=incident.id,
    )
    await _free(uow, offer.responder_id, incident.id)
    _count_offer(uow, dispatch, "expired", offer.kind)


# --- milestones ---------------------------------------------------------------


async def _settle(uow: UnitOfWork, dispatch: Dispatch, incident: Incident) -> None:
    """Judge every stage against the units' progress and announce what changed."""
    s = uow.session
    units = (await s.exec(select(Unit).where(col(Unit.incident_id) == incident.id))).all()
    progress = progress_of(
        (UnitTimes(u.responding_at, u.on_scene_at) for u in units),
        required_units=len(slots_from_json(incident.slots_json)),
    )
    milestones = (
        await s.exec(
            select(Milestone)
            .where(col(Milestone.incident_id) == incident.id)
            .order_by(col(Milestone.position))
        )
    ).all()
    labels = (incident.category, grid_label(incident.grid))
    for m in milestones:
        outcome = judge_stage(
            state=m.state,
            kind=m.kind,
            due_at=m.due_at,
            received_at=incident.received_at,
            progress=progress,
        )
        if outcome is None:
            reached = achieved_at(m.kind, progress)
            if m.state == MilestoneState.BREACHED and m.seconds is None and reached is not None:
                m.seconds = max(0.0, (reached - incident.received_at).total_seconds())
                s.add(m)
                _observe_response(uow, dispatch, m.stage, labels, m.seconds)
            continue
        await _record_outcome(uow, dispatch, incident, m, outcome)


def _observe_response(
    uow: UnitOfWork, dispatch: Dispatch, stage: str, labels: tuple[str, str], seconds: float
) -> None:
    uow.on_commit(lambda: dispatch.metrics.response_seconds.labels(stage, *labels).observe(seconds))


async def _record_outcome(
    uow: UnitOfWork, dispatch: Dispatch, incident: Incident, m: Milestone, outcome: StageOutcome
) -> None:
    m.state, m.seconds = outcome.state, outcome.seconds
    uow.session.add(m)
    await uow.drop_timers(incident_id=incident.id, kind=TARGET_TIMER, ref=m.stage)
    labels = (incident.category, grid_label(incident.grid))
    stage = m.stage
    if outcome.seconds is not None:
        _observe_response(uow, dispatch, stage, labels, outcome.seconds)
    if outcome.state == MilestoneState.MET:
        assert outcome.seconds is not None
        await uow.stage(
            MilestoneReached(
                incident_id=incident.id,
                stage=stage,
                seconds=outcome.seconds,
                target_s=m.target_s,
                category=incident.category,
                grid=incident.grid,
            ),
            incident_id=incident.id,
        )
        uow.on_commit(lambda: dispatch.metrics.targets_met.labels(stage, *labels).inc())
    else:
        await uow.stage(
            TargetBreached(
                incident_id=incident.id,
                stage=stage,
                target_s=m.target_s,
                category=incident.category,
                grid=incident.grid,
            ),
            incident_id=incident.id,
        )
        uow.on_commit(lambda: dispatch.metrics.targets_breached.labels(stage, *labels).inc())


async def breach_if_due(
    uow: UnitOfWork, dispatch: Dispatch, incident: Incident, stage: str
) -> None:
    """A stage's deadline timer fired: breach the stage if it is still pending."""
    m = await uow.session.get(Milestone, (incident.id, stage))
    if m is None or m.state != MilestoneState.PENDING or uow.now < m.due_at:
        return
    await _record_outcome(uow, dispatch, incident, m, StageOutcome(MilestoneState.BREACHED, None))


# --- units --------------------------------------------------------------------


async def set_unit_status(
    *, dispatch: Dispatch, incident_id: uuid.UUID, responder_id: uuid.UUID, status: str
) -> Unit:
    """A unit reports en route, on scene or cleared; the milestones follow."""
    async with _as_api_errors(), dispatch.incident_lock(incident_id), unit_of_work(dispatch) as uow:
        s = uow.session
        incident = _require_open(await _incident_for_update(s, incident_id))
        unit = await s.get(Unit, (incident_id, responder_id), with_for_update=True)
        if unit is None:
            raise ApiError(404, "not_found", "that responder is not a unit on this incident")
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
            await _free(uow, responder_id, incident_id)
        await s.flush()
        await _settle(uow, dispatch, incident)
    return unit


async def assign(
    *, dispatch: Dispatch, incident_id: uuid.UUID, responder_id: uuid.UUID | None
) -> Unit:
    """A dispatcher puts a responder (or, with none named, the next nearest) on the incident."""
    async with dispatch.incident_lock(incident_id):
        async with dispatch.sessions() as s:
            plan = await _load_plan(s, incident_id)
        incident = _require_open(plan.incident if plan else None)
        assert plan is not None
        if responder_id is not None and responder_id in {u.responder_id for u in plan.units}:
            raise ApiError(409, "already_assigned", "that responder is already on this incident")
        filled = {u.slot for u in plan.units}
        open_slots = [i for i in range(len(plan.slots)) if i not in filled]
        slot_index = open_slots[0] if open_slots else len(plan.slots) + len(plan.units)
        slot = (
            plan.slots[slot_index]
            if open_slots
            else PlanSlot(tuple(sorted({k for sl in plan.slots for k in sl.kinds})))
        )
        try:
            candidate = await dispatch.locator.claim(
                incident_id=incident_id,
                lat=incident.lat,
                lon=incident.lon,
                kinds=slot.kinds,
                skills=slot.skills,
                exclude=plan.tried if responder_id is None else [],
                responder_id=responder_id,
                hold_s=_hold_s(dispatch),
            )
        except ResponderUnavailable as exc:
            raise ApiError(409, "responder_unavailable", "that responder is not free") from exc
        except SearchImpossible as exc:
            raise ApiError(
                409, "search_impossible", f"no search can fill this: {exc.reason}"
            ) from exc
        except LocatorUnavailable as exc:
            raise ApiError(503, "locator_unavailable", "the locator cannot answer now") from exc
        if candidate is None:
            raise ApiError(409, "no_responder_available", "nobody eligible is free nearby")
        unit = await _assign_claimed(dispatch, incident_id, slot_index, candidate)
        if unit is None:
            await _release_quietly(dispatch, candidate.responder_id, incident_id)
            raise ApiError(409, "conflict", "the incident changed; try again")
        return unit


async def _assign_claimed(
    dispatch: Dispatch, incident_id: uuid.UUID, slot_index: int, candidate: Candidate
) -> Unit | None:
    async with unit_of_work(dispatch) as uow:
        s = uow.session
        incident = await _incident_for_update(s, incident_id)
        if incident is None or incident.status != IncidentStatus.OPEN:
            return None
        if await _responder_booked(s, candidate.responder_id):
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
            await _withdraw(uow, dispatch, incident, offer, reason="reassigned")
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
        if incident.no_responder_since is not None and not (await _still_short(s, incident)):
            incident.no_responder_since = None
            s.add(incident)
    return unit


async def _still_short(session: AsyncSession, incident: Incident) -> bool:
    plan = await _load_plan(session, incident.id)
    return bool(plan and plan.needing_offers())


# --- closing ------------------------------------------------------------------


async def _withdraw(
    uow: UnitOfWork, dispatch: Dispatch, incident: Incident, offer: Offer, *, reason: str
) -> None:
    offer.status, offer.answered_at = OfferStatus.WITHDRAWN, uow.now
    uow.session.add(offer)
    await uow.drop_timers(incident_id=incident.id, kind=OFFER_TIMER, ref=str(offer.id))
    await uow.stage(
        OfferWithdrawn(
            incident_id=incident.id,
            offer_id=offer.id,
            responder_id=offer.responder_id,
            reason=reason,
        ),
        incident_id=incident.id,
    )
    await _free(uow, offer.responder_id, incident.id)
    _count_offer(uow, dispatch, "withdrawn", offer.kind)


async def _release_all(
    uow: UnitOfWork, dispatch: Dispatch, incident: Incident, reason: str
) -> None:
    """Withdraw open offers and clear every unit: nobody stays booked to a closed incident."""
    s = uow.session
    offers = (
        await s.exec(
            select(Offer)
            .where(col(Offer.incident_id) == incident.id)
            .where(col(Offer.status) == OfferStatus.PENDING)
        )
    ).all()
    for offer in offers:
        await _withdraw(uow, dispatch, incident, offer, reason=reason)
    units = (
        await s.exec(
            select(Unit)
            .where(col(Unit.incident_id) == incident.id)
            .where(col(Unit.status) != UnitState.CLEARED)
        )
    ).all()
    for unit in units:
        unit.status, unit.cleared_at = UnitState.CLEARED, uow.now
        s.add(unit)
        await uow.stage(
            UnitStatusChanged(
                incident_id=incident.id,
                responder_id=unit.responder_id,
                kind=unit.kind,
                status="cleared",
            ),
            incident_id=incident.id,
        )
        await _free(uow, unit.responder_id, incident.id)
    await uow.drop_timers(incident_id=incident.id)


async def _close(
    uow: UnitOfWork,
    dispatch: Dispatch,
    incident: Incident,
    status: IncidentStatus,
    *,
    reason: str,
    merged_into: uuid.UUID | None = None,
) -> None:
    await _release_all(uow, dispatch, incident, reason)
    incident.status, incident.closed_at, incident.merged_into = status, uow.now, merged_into
    uow.session.add(incident)
    uow.status_changed = True
    if status == IncidentStatus.RESOLVED:
        event: IncidentResolved | IncidentCancelled = IncidentResolved(
            incident_id=incident.id, resolved_at=uow.now
        )
    else:
        event = IncidentCancelled(
            incident_id=incident.id, cancelled_at=uow.now, reason=reason, merged_into=merged_into
        )
    await uow.stage(event, incident_id=incident.id)


async def resolve(*, dispatch: Dispatch, incident_id: uuid.UUID) -> None:
    """A dispatcher closes the incident as dealt with; every unit and claim is freed."""
    async with dispatch.incident_lock(incident_id), unit_of_work(dispatch) as uow:
        incident = _require_open(await _incident_for_update(uow.session, incident_id))
        await _close(uow, dispatch, incident, IncidentStatus.RESOLVED, reason="resolved")


async def cancel(*, dispatch: Dispatch, incident_id: uuid.UUID) -> None:
    """A dispatcher cancels the incident; every unit and claim is freed."""
    async with dispatch.incident_lock(incident_id), unit_of_work(dispatch) as uow:
        incident = _require_open(await _incident_for_update(uow.session, incident_id))
        await _close(
            uow, dispatch, incident, IncidentStatus.CANCELLED, reason="dispatcher_cancelled"
        )


async def merge(*, dispatch: Dispatch, incident_id: uuid.UUID, into: uuid.UUID) -> None:
    """Merge an incident into another: its reports move, its units and claims are freed."""
    if incident_id == into:
        raise ApiError(422, "invalid_input", "an incident cannot be merged into itself")
    first, second = sorted((incident_id, into))
    async with (
        dispatch.incident_lock(first),
        dispatch.incident_lock(second),
        unit_of_work(dispatch) as uow,
    ):
        s = uow.session
        source = _require_open(await _incident_for_update(s, incident_id))
        target = _require_open(await _incident_for_update(s, into))
        reports = (
            await s.exec(select(IncidentReport).where(col(IncidentReport.incident_id) == source.id))
        ).all()
        await _close(
            uow, dispatch, source, IncidentStatus.MERGED, reason="merged", merged_into=into
        )
        for report in reports:
            report.incident_id = target.id
            s.add(report)
            target.last_report_at = max(target.last_report_at, report.received_at)
            await uow.stage(
                ReportMerged(
                    incident_id=target.id, report_id=report.report_id, from_incident_id=source.id
                ),
                incident_id=target.id,
            )
        s.add(target)


# --- retries ------------------------------------------------------------------


async def retry_waiting(*, dispatch: Dispatch, flagged_only: bool = False) -> int:
    """Offer again every open incident still short of units; flagged ones first.

    ``flagged_only`` retries just the incidents flagged as having nobody available: what
    a responder coming free can help at once (the periodic retry covers the rest).
    """
    query = select(Incident).where(col(Incident.status) == IncidentStatus.OPEN)
    if flagged_only:
        query = query.where(col(Incident.no_responder_since).is_not(None))
    async with dispatch.sessions() as s:
        incidents = (await s.exec(query)).all()
    waiting = sorted(
        incidents, key=lambda i: (i.no_responder_since is None, i.priority, i.received_at)
    )
    for incident in waiting:
        await fill_incident(dispatch=dispatch, incident_id=incident.id)
    return len(waiting)


# --- queries ------------------------------------------------------------------


def _milestone_public(m: Milestone) -> MilestonePublic:
    return MilestonePublic(
        stage=m.stage,
        label=m.label,
        target_s=m.target_s,
        due_at=m.due_at,
        state=m.state,
        seconds=m.seconds,
    )


def _summary(
    incident: Incident, milestones: Sequence[Milestone], units: int, open_offers: int
) -> IncidentPublic:
    pending = [m.due_at for m in milestones if m.state == MilestoneState.PENDING]
    return IncidentPublic(
        incident_id=incident.id,
        category=incident.category,
        priority=incident.priority,
        status=incident.status,
        lat=incident.lat,
        lon=incident.lon,
        address=incident.address,
        grid=incident.grid,
        office=incident.office,
        zone_tier=incident.zone_tier,
        received_at=incident.received_at,
        no_responder=incident.no_responder_since is not None,
        units_required=len(slots_from_json(incident.slots_json)),
        unit_count=units,
        open_offer_count=open_offers,
        next_due_at=min(pending) if pending else None,
        milestones=[_milestone_public(m) for m in sorted(milestones, key=lambda m: m.position)],
    )


async def list_incidents(*, dispatch: Dispatch, status: str | None) -> list[IncidentPublic]:
    """The queue, most urgent first: flagged (breached or unanswerable) on top, then by the
    least time left to the next pending target."""
    async with dispatch.sessions() as s:
        query = select(Incident)
        if status is not None:
            query = query.where(col(Incident.status) == status)
        incidents = (await s.exec(query)).all()
        ids = [i.id for i in incidents]
        milestones = (
            (await s.exec(select(Milestone).where(col(Milestone.incident_id).in_(ids)))).all()
            if ids
            else []
        )
        units = (
            (
                await s.exec(
                    select(Unit.incident_id)
                    .where(col(Unit.incident_id).in_(ids))
                    .where(col(Unit.status) != UnitState.CLEARED)
                )
            ).all()
            if ids
            else []
        )
        offers = (
            (
                await s.exec(
                    select(Offer.incident_id)
                    .where(col(Offer.incident_id).in_(ids))
                    .where(col(Offer.status) == OfferStatus.PENDING)
                )
            ).all()
            if ids
            else []
        )
    by_incident: dict[uuid.UUID, list[Milestone]] = {}
    for m in milestones:
        by_incident.setdefault(m.incident_id, []).append(m)
    summaries = [
        _summary(i, by_incident.get(i.id, []), units.count(i.id), offers.count(i.id))
        for i in incidents
    ]

    def key(p: IncidentPublic) -> tuple[int, float, int, float]:
        breached = any(m.state == MilestoneState.BREACHED for m in p.milestones)
        return urgency_key(
            QueueEntry(
                flagged=p.no_responder or breached,
                next_due_at=p.next_due_at,
                priority=p.priority,
                received_at=p.received_at,
            )
        )

    return sorted(summaries, key=key)


async def get_incident(*, dispatch: Dispatch, incident_id: uuid.UUID) -> IncidentDetail:
    """One incident with its reports, offers, units, timeline and milestones."""
    async with dispatch.sessions() as s:
        incident = await s.get(Incident, incident_id)
        if incident is None:
            raise ApiError(404, "not_found", "no such incident")
        milestones = (
            await s.exec(select(Milestone).where(col(Milestone.incident_id) == incident_id))
        ).all()
        reports = (
            await s.exec(
                select(IncidentReport)
                .where(col(IncidentReport.incident_id) == incident_id)
                .order_by(col(IncidentReport.received_at))
            )
        ).all()
        offers = (
            await s.exec(
                select(Offer)
                .where(col(Offer.incident_id) == incident_id)
                .order_by(col(Offer.offered_at))
            )
        ).all()
        units = (
            await s.exec(
                select(Unit)
                .where(col(Unit.incident_id) == incident_id)
                .order_by(col(Unit.assigned_at))
            )
        ).all()
        timeline = (
            await s.exec(
                select(TimelineEntry)
                .where(col(TimelineEntry.incident_id) == incident_id)
                .order_by(col(TimelineEntry.id))
            )
        ).all()
    summary = _summary(
        incident,
        milestones,
        sum(u.status != UnitState.CLEARED for u in units),
        sum(o.status == OfferStatus.PENDING for o in offers),
    )
    return IncidentDetail(
        **summary.model_dump(),
        merged_into=incident.merged_into,
        closed_at=incident.closed_at,
        reports=[
            ReportPublic(
                report_id=r.report_id,
                lat=r.lat,
                lon=r.lon,
                received_at=r.received_at,
                cancelled_at=r.cancelled_at,
            )
            for r in reports
        ],
        offers=[offer_public(o) for o in offers],
        units=[unit_public(u) for u in units],
        timeline=[
            TimelinePublic(at=t.at, type=t.type, detail=json.loads(t.detail)) for t in timeline
        ],
    )


def offer_public(offer: Offer) -> OfferPublic:
    """An offer for the API."""
    return OfferPublic(
        offer_id=offer.id,
        incident_id=offer.incident_id,
        responder_id=offer.responder_id,
        kind=offer.kind,
        distance_m=offer.distance_m,
        eta_s=offer.eta_s,
        status=offer.status,
        offered_at=offer.offered_at,
        expires_at=offer.expires_at,
        answered_at=offer.answered_at,
    )


def unit_public(unit: Unit) -> UnitPublic:
    """A unit for the API."""
    return UnitPublic(
        responder_id=unit.responder_id,
        kind=unit.kind,
        status=unit.status,
        eta_s=unit.eta_s,
        assigned_at=unit.assigned_at,
        on_scene_at=unit.on_scene_at,
        cleared_at=unit.cleared_at,
    )
