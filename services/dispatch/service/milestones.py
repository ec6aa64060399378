"""The 1-3-5 milestones: each stage judged against the units' progress, and what changed
announced."""

from __future__ import annotations

from sqlmodel import col, select

from services.dispatch.context import Dispatch
from services.dispatch.domain import (
    MilestoneState,
    StageOutcome,
    UnitTimes,
    achieved_at,
    judge_stage,
    late_breach_seconds,
    progress_of,
)
from services.dispatch.metrics import grid_label
from services.dispatch.models import (
    Incident,
    Milestone,
    Unit,
)
from services.dispatch.plans import slots_from_json
from services.dispatch.service.common import TARGET_TIMER
from services.dispatch.uow import UnitOfWork
from shared.events import (
    MilestoneReached,
    TargetBreached,
)


async def settle(uow: UnitOfWork, dispatch: Dispatch, incident: Incident) -> None:
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
            late_s = late_breach_seconds(
                state=m.state,
                seconds=m.seconds,
                reached=achieved_at(m.kind, progress),
                received_at=incident.received_at,
            )
            if late_s is not None:
                m.seconds = late_s
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
    if outcome.state == MilestoneState.MET and outcome.seconds is not None:
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
