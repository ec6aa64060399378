"""Queries: the live queue and one incident in full, as the API shows them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlmodel import col, select

from services.dispatch.context import Dispatch
from services.dispatch.domain import (
    MilestoneState,
    OfferStatus,
    PlanSlot,
    QueueEntry,
    UnitState,
    is_flagged,
    manual_slot,
    urgency_key,
)
from services.dispatch.models import (
    Incident,
    IncidentDetail,
    IncidentPublic,
    IncidentReport,
    Milestone,
    MilestonePublic,
    Offer,
    OfferPublic,
    OfferTrace,
    ReportPublic,
    TimelineEntry,
    TimelinePublic,
    Unit,
    UnitPublic,
)
from services.dispatch.plans import slots_from_json
from shared.errors import NotFound


def _milestone_public(m: Milestone) -> MilestonePublic:
    return MilestonePublic.model_validate(m)


def _summary(
    incident: Incident, milestones: Sequence[Milestone], units: int, open_offers: int
) -> IncidentPublic:
    pending = [m.due_at for m in milestones if m.state == MilestoneState.PENDING]
    return IncidentPublic.model_validate(
        {
            **incident.model_dump(),
            "no_responder": incident.no_responder_since is not None,
            "slot_shortfall": incident.shortfall_since is not None,
            "units_required": len(slots_from_json(incident.slots_json)),
            "unit_count": units,
            "open_offer_count": open_offers,
            "next_due_at": min(pending) if pending else None,
            "milestones": [
                _milestone_public(m) for m in sorted(milestones, key=lambda m: m.position)
            ],
        }
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
        return urgency_key(
            QueueEntry(
                flagged=is_flagged(
                    no_responder=p.no_responder, stage_states=(m.state for m in p.milestones)
                ),
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
            raise NotFound("no such incident")
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
    return IncidentDetail.model_validate(
        {
            **summary.model_dump(),
            "merged_into": incident.merged_into,
            "closed_at": incident.closed_at,
            "reports": [ReportPublic.model_validate(r) for r in reports],
            "offers": [offer_public(o) for o in offers],
            "units": [unit_public(u) for u in units],
            "timeline": [
                TimelinePublic(at=t.at, type=t.type, detail=json.loads(t.detail)) for t in timeline
            ],
        }
    )


def offer_public(offer: Offer) -> OfferPublic:
    """An offer for the API."""
    public = OfferPublic.model_validate(offer)
    if offer.trace_json:
        public.trace = OfferTrace.model_validate_json(offer.trace_json)
    return public


def unit_public(unit: Unit) -> UnitPublic:
    """A unit for the API."""
    return UnitPublic.model_validate(unit)


@dataclass(frozen=True)
class NextAssignment:
    """Where an incident is and the unit a manual assignment would fill next."""

    status: str
    lat: float
    lon: float
    slot: PlanSlot


async def next_assignment(*, dispatch: Dispatch, incident_id: uuid.UUID) -> NextAssignment:
    """The incident's place and the unit a manual assignment would fill, as ``assign`` picks it."""
    async with dispatch.sessions() as s:
        incident = await s.get(Incident, incident_id)
        if incident is None:
            raise NotFound("no such incident")
        units = (await s.exec(select(Unit).where(col(Unit.incident_id) == incident_id))).all()
    _, slot = manual_slot(slots_from_json(incident.slots_json), filled=[u.slot for u in units])
    return NextAssignment(incident.status, incident.lat, incident.lon, slot)
