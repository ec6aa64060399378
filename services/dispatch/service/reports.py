"""Reports: opening an incident for a report or joining it to an open duplicate, and
withdrawn reports."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.dispatch.context import Dispatch
from services.dispatch.domain import (
    IncidentStatus,
    OfferStatus,
    OpenIncidentView,
    box_around,
    find_duplicate,
    tightened,
)
from services.dispatch.locator_client import (
    Candidate,
    LocatorUnavailable,
    SearchImpossible,
    known_kinds,
)
from services.dispatch.merge_locks import lock_neighbourhood
from services.dispatch.metrics import grid_label
from services.dispatch.models import (
    Incident,
    IncidentReport,
    Milestone,
)
from services.dispatch.plans import plan_for, slots_from_json, slots_to_json
from services.dispatch.service.bookings import resync_responder
from services.dispatch.service.closing import close_incident
from services.dispatch.service.common import (
    TARGET_TIMER,
    incident_for_update,
    release_quietly,
    responder_booked,
)
from services.dispatch.service.offers import (
    claim_slot,
    fill_incident,
    flag_no_responder,
    record_offer,
    refuse_claim,
)
from services.dispatch.trace import earlier_outcomes
from services.dispatch.uow import UnitOfWork, unit_of_work
from shared.events import (
    IncidentOpened,
    ReportCancelled,
    ReportMerged,
    ReportReceived,
    StageTarget,
)

log = logging.getLogger(__name__)


async def receive_report(*, dispatch: Dispatch, report: ReportReceived) -> uuid.UUID | None:
    """Open an incident for a report, or join it to an open duplicate; then make offers.

    For a new incident the responders are claimed first, outside any lock, and the
    incident, its milestones, timers, first offers, any alarm flag and events are then
    saved in one transaction (on PostgreSQL under the report's merge locks, so two
    dispatch instances never open two incidents for one event). Returns the incident id,
    or None for a report already handled.
    """
    while True:
        async with dispatch.sessions() as s:
            if await s.get(IncidentReport, report.report_id) is not None:
                return None
            seen_duplicate = await _open_duplicate(s, dispatch, report)
        opening = None if seen_duplicate is not None else _opening_nearby(dispatch, report)
        if opening is None:
            break
        await opening.wait()  # then it is open (or failed): look again
    incident_id = uuid.uuid4()
    claimed = _Claimed()
    done = asyncio.Event()
    if seen_duplicate is None:
        claimed = await _claim_opening(dispatch, incident_id, report, done)
    claims = claimed.claims
    refused: list[uuid.UUID] = []
    # Claims whose booking a unique-index conflict left in doubt: restated or handed back.
    unsure: set[uuid.UUID] = set()
    try:
        try:
            outcome = await _open_or_merge(dispatch, report, incident_id, claimed, refused)
        except IntegrityError:
            # Another instance booked one of our claims between our check and our commit
            # (a partial unique index said no): open the incident without offers.
            log.warning("opening with its first offers conflicted; opening it bare")
            refused.clear()
            unsure = {c.responder_id for c in claims.values()}
            outcome = await _open_or_merge(dispatch, report, incident_id, _Claimed(), [])
        if outcome is None:
            return None
        opened, offered = outcome
        # Committed: the offered claims are kept.
        for slot_index in offered:
            del claims[slot_index]
    finally:
        if dispatch.openings.pop(incident_id, None) is not None:
            done.set()
        await _give_back(dispatch, incident_id, claims.values(), refused=refused, unsure=unsure)
    if opened == incident_id and (refused or unsure):
        # The slots those claims were for get the next responder at once.
        await fill_incident(dispatch=dispatch, incident_id=incident_id)
    return opened


async def _claim_opening(
    dispatch: Dispatch, incident_id: uuid.UUID, report: ReportReceived, done: asyncio.Event
) -> _Claimed:
    """Claim a new incident's plan, with the incident shown as opening meanwhile (so a
    report nearby waits for it instead of opening a second one)."""
    view = OpenIncidentView(
        str(incident_id),
        report.category,
        report.location.lat,
        report.location.lon,
        report.received_at,
    )
    dispatch.openings[incident_id] = (view, done)
    try:
        return await _claim_plan(dispatch, incident_id, report)
    except BaseException:
        del dispatch.openings[incident_id]
        done.set()
        raise


async def _give_back(
    dispatch: Dispatch,
    incident_id: uuid.UUID,
    claims: Iterable[Candidate],
    *,
    refused: Collection[uuid.UUID],
    unsure: Collection[uuid.UUID],
) -> None:
    """Claims not saved with an offer (a duplicate, a repeat, a failed commit) go back;
    one dispatch holds elsewhere is restated to the locator instead."""
    for candidate in claims:
        responder_id = candidate.responder_id
        if responder_id in refused:
            await refuse_claim(dispatch, responder_id, incident_id)
        elif responder_id in unsure:
            if await resync_responder(dispatch=dispatch, responder_id=responder_id):
                dispatch.metrics.claims_refused.inc()
            else:
                await release_quietly(dispatch, responder_id, incident_id)
        else:
            await release_quietly(dispatch, responder_id, incident_id)


@dataclass
class _Claimed:
    """What claiming a new incident's plan got: the claims by slot, the kinds nobody was
    free for and why (``nobody_free`` or a reason no retry can fix)."""

    claims: dict[int, Candidate] = field(default_factory=dict)
    missing_kinds: list[str] = field(default_factory=list)
    reason: str = "nobody_free"


async def _open_or_merge(
    dispatch: Dispatch,
    report: ReportReceived,
    incident_id: uuid.UUID,
    claimed: _Claimed,
    refused: list[uuid.UUID],
) -> tuple[uuid.UUID, list[int]] | None:
    """In one transaction: join the report to an open duplicate, or open the incident with
    the claimed offers and its alarm flag. Returns the incident id and the slots offered,
    or None for a report already handled; a claim of someone dispatch holds elsewhere is
    appended to ``refused``."""
    settings = dispatch.settings
    async with dispatch.opening_lock, unit_of_work(dispatch) as uow:
        s = uow.session
        if not dispatch.sqlite:
            # Other dispatch instances open incidents too: meet them on the same cells.
            await lock_neighbourhood(
                s,
                category=report.category,
                lat=report.location.lat,
                lon=report.location.lon,
                radius_m=settings.duplicate_radius_m,
            )
        if await s.get(IncidentReport, report.report_id) is not None:
            return None
        duplicate = await _open_duplicate(s, dispatch, report)
        if duplicate is not None:
            merged = await _merge(uow, dispatch, report, uuid.UUID(duplicate.incident_id))
            return merged, []
        incident = await _open(uow, dispatch, report, incident_id=incident_id)
        slots = slots_from_json(incident.slots_json)
        offered: list[int] = []
        # A claim excluded the ones before it: to its trace they are offered already.
        earlier = earlier_outcomes(
            ((str(c.responder_id), OfferStatus.PENDING) for c in claimed.claims.values()), ()
        )
        for slot_index, candidate in claimed.claims.items():
            if await responder_booked(s, candidate.responder_id):
                log.warning("the locator claimed a responder dispatch holds elsewhere; next one")
                refused.append(candidate.responder_id)
                continue
            await record_offer(
                uow,
                dispatch,
                incident,
                slot_index,
                candidate,
                slot=slots[slot_index],
                earlier=earlier,
            )
            offered.append(slot_index)
        if claimed.missing_kinds or claimed.reason != "nobody_free":
            await flag_no_responder(
                uow,
                dispatch,
                incident,
                claimed.missing_kinds,
                reason=claimed.reason,
                open_offers=len(offered),
                live_units=0,
            )
        await s.flush()  # a unique-index conflict surfaces here
    return incident_id, offered


def _opening_nearby(dispatch: Dispatch, report: ReportReceived) -> asyncio.Event | None:
    """The wake-up of a new incident being opened in this instance that this report
    duplicates, if any."""
    settings = dispatch.settings
    views = {view.incident_id: done for view, done in dispatch.openings.values()}
    match = find_duplicate(
        (view for view, _ in dispatch.openings.values()),
        category=report.category,
        lat=report.location.lat,
        lon=report.location.lon,
        received_at=report.received_at,
        radius_m=settings.duplicate_radius_m,
        window_s=settings.duplicate_window_s,
    )
    return None if match is None else views[match.incident_id]


async def _open_duplicate(
    session: AsyncSession, dispatch: Dispatch, report: ReportReceived
) -> OpenIncidentView | None:
    """The open incident this report duplicates, if any."""
    settings = dispatch.settings
    horizon = report.received_at - timedelta(seconds=settings.duplicate_window_s)
    box = box_around(report.location.lat, report.location.lon, settings.duplicate_radius_m)
    query = select(Incident.id, Incident.lat, Incident.lon, Incident.last_report_at).where(
        col(Incident.status) == IncidentStatus.OPEN,
        col(Incident.category) == report.category,
        col(Incident.last_report_at) >= horizon,
        col(Incident.lat).between(*box.lat),
    )
    if box.lon is not None:
        query = query.where(col(Incident.lon).between(*box.lon))
    candidates = (await session.exec(query)).all()
    return find_duplicate(
        (
            OpenIncidentView(str(id_), report.category, lat, lon, last_report_at)
            for id_, lat, lon, last_report_at in candidates
        ),
        category=report.category,
        lat=report.location.lat,
        lon=report.location.lon,
        received_at=report.received_at,
        radius_m=settings.duplicate_radius_m,
        window_s=settings.duplicate_window_s,
    )


async def _claim_plan(
    dispatch: Dispatch, incident_id: uuid.UUID, report: ReportReceived
) -> _Claimed:
    """Claim a responder for each slot of the category's plan, before the incident is saved.

    A locator that cannot answer leaves the rest to the periodic retry (the incident opens
    without them); a search no retry can fix stops at that slot and flags the incident.
    """
    plan = plan_for(dispatch.plans, report.category)
    claimed = _Claimed()
    claims = claimed.claims
    for slot_index, slot in enumerate(plan.slots):
        try:
            candidate = await claim_slot(
                dispatch,
                incident_id=incident_id,
                lat=report.location.lat,
                lon=report.location.lon,
                slot=slot,
                exclude=sorted(c.responder_id for c in claims.values()),
            )
        except LocatorUnavailable as exc:
            log.warning("claim failed, the periodic retry will try again: %s", exc)
            claimed.missing_kinds = []
            return claimed
        except SearchImpossible as exc:
            log.error("no search can fill this incident (%s); flagging it", exc.reason)
            claimed.missing_kinds = known_kinds(slot.kinds)
            claimed.reason = exc.reason
            return claimed
        if candidate is None:
            missing = claimed.missing_kinds
            missing.extend(k for k in slot.kinds if k not in missing)
        else:
            claims[slot_index] = candidate
    return claimed


async def _merge(
    uow: UnitOfWork, dispatch: Dispatch, report: ReportReceived, incident_id: uuid.UUID
) -> uuid.UUID:
    """Join the report to its open duplicate."""
    incident = await incident_for_update(uow.session, incident_id)
    if incident is None:  # read under the opening lock a moment ago; rows are kept
        raise LookupError(f"incident {incident_id} vanished")
    _link_report(uow.session, incident, report)
    await uow.stage(
        ReportMerged(incident_id=incident.id, report_id=report.report_id),
        incident_id=incident.id,
    )
    category = incident.category
    uow.on_commit(lambda: dispatch.metrics.reports_merged.labels(category).inc())
    return incident.id


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


async def _open(
    uow: UnitOfWork, dispatch: Dispatch, report: ReportReceived, *, incident_id: uuid.UUID
) -> Incident:
    plan = plan_for(dispatch.plans, report.category)
    grid = dispatch.grids.locate(report.location.lat, report.location.lon)
    tier = grid.zone_tier if grid else None
    factor = dispatch.settings.zone_tier_factors.get(tier, 1.0) if tier else 1.0
    stages = tightened(plan.stages, factor=factor, overrides=dispatch.settings.target_overrides_s)
    incident = Incident(
        id=incident_id,
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
        incident = await incident_for_update(s, link.incident_id)
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
            await close_incident(
                uow, dispatch, incident, IncidentStatus.CANCELLED, reason=event.reason
            )
