"""Intake's commands and queries: plain functions with keyword arguments."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from services.intake.area import ServiceArea
from services.intake.live import ReportChanges
from services.intake.metrics import IntakeMetrics
from services.intake.models import (
    FINAL_STATUSES,
    IdempotencyRecord,
    Report,
    ReportCreate,
    ReportPublic,
    ReportStatus,
    StreamUpdate,
    TimelineEntry,
    TimelineStep,
)
from services.intake.ratelimit import Limit, RateLimiter, bucket
from services.intake.settings import IntakeSettings
from services.intake.timeline import StepChange, should_record, status_after
from shared.auth import REPORTER_AUDIENCE, Principal, Role, mint_token
from shared.db import SessionFactory
from shared.errors import Conflict, Invalid, NotFound, RateLimited
from shared.events import GeoPoint, ReportCancelled, ReportReceived
from shared.uow import UnitsOfWork


@dataclass(frozen=True)
class Receipt:
    """A saved report, and whether this post only repeated an earlier one."""

    report: Report
    replayed: bool


def fingerprint(body: ReportCreate) -> str:
    """A hash of what the body means, so formatting and key order do not matter."""
    canonical = json.dumps(
        body.model_dump(mode="json", exclude_none=True), sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def idempotency_scope(*, key: str, client_address: str, body: ReportCreate) -> str:
    """The stored form of an ``Idempotency-Key``: bound to the caller who sent it.

    The caller is the client address together with the device id, if the body names
    one, so another caller reusing (or guessing) a key gets a report of their own, never
    the first caller's report and tracking token. Hashed, so the column holds no address.
    """
    device = body.reporter.device_id if body.reporter and body.reporter.device_id else ""
    return hashlib.sha256(f"{client_address}\n{device}\n{key}".encode()).hexdigest()


OUTSIDE_AREA_MESSAGE = (
    "this location is outside the area this service covers; if you need help, call 110 now"
)


def check_service_area(*, area: ServiceArea, body: ReportCreate) -> None:
    """Refuse (422) a report that no responder of ours could ever be sent to."""
    if not area.contains(body.location.lat, body.location.lon):
        raise Invalid(
            OUTSIDE_AREA_MESSAGE,
            code="outside_service_area",
            details=[
                {
                    "field": "location",
                    "problem": "outside the service area; call 110",
                    "type": "outside_service_area",
                }
            ],
        )


def report_limits(*, settings: IntakeSettings, body: ReportCreate, address: str) -> list[Limit]:
    """The rate limits a post counts against: its client address and, if given, its device."""
    limits = [Limit(bucket("address", address), settings.rate_limit_per_address)]
    device_id = body.reporter.device_id if body.reporter else None
    if device_id:
        limits.append(Limit(bucket("device", device_id), settings.rate_limit_per_device))
    return limits


def tracking_token(*, settings: IntakeSettings, report_id: uuid.UUID) -> str:
    """The reporter token that lets its holder follow and cancel one report."""
    return mint_token(
        secret=settings.auth_secret.get_secret_value(),
        role=Role.REPORTER,
        subject=str(report_id),
        ttl=timedelta(seconds=settings.tracking_token_ttl_s),
        # Follow and cancel the report at intake; register its webhook at notification.
        audience=REPORTER_AUDIENCE,
    )


async def receive_report(
    *,
    work: UnitsOfWork,
    limiter: RateLimiter,
    metrics: IntakeMetrics,
    settings: IntakeSettings,
    area: ServiceArea,
    body: ReportCreate,
    idempotency_key: str | None,
    client_address: str,
    now: datetime,
) -> Receipt:
    """Save a report and stage its ReportReceived in the same transaction.

    A repeat with the same ``idempotency_key`` and body returns the first report and
    stages nothing; the same key with another body is a 409.
    """
    if body.category not in settings.categories:
        metrics.count(category=body.category, outcome="rejected")
        raise Invalid(
            f"category must be one of: {', '.join(settings.categories)}",
            code="unknown_category",
            details=[
                {"field": "category", "problem": "unknown category", "type": "unknown_category"}
            ],
        )
    try:
        check_service_area(area=area, body=body)
    except Invalid:
        metrics.count(category=body.category, outcome="rejected")
        raise
    body_hash = fingerprint(body)
    scoped_key = (
        None
        if idempotency_key is None
        else idempotency_scope(key=idempotency_key, client_address=client_address, body=body)
    )
    expired_before = now - timedelta(seconds=settings.idempotency_ttl_s)
    if scoped_key is not None:
        earlier = await _earlier_report(
            sessions=work.sessions,
            key=scoped_key,
            body_hash=body_hash,
            metrics=metrics,
            body=body,
            expired_before=expired_before,
        )
        if earlier is not None:
            return Receipt(earlier, replayed=True)

    limits = report_limits(settings=settings, body=body, address=client_address)
    wait_s = await limiter.hit(limits, window_s=settings.rate_limit_window_s)
    if wait_s > 0:
        metrics.count(category=body.category, outcome="rate_limited")
        raise RateLimited(
            f"too many reports from this device or address; try again in {wait_s} s",
            retry_after_s=wait_s,
            details={"retry_after_s": wait_s},
        )

    report = _new_report(body, now)
    try:
        async with work.begin(now=now) as uow:
            session = uow.session
            session.add(report)
            await session.flush()
            if scoped_key is not None:
                session.add(
                    IdempotencyRecord(
                        key=scoped_key,
                        body_sha256=body_hash,
                        report_id=report.id,
                        created_at=now,
                    )
                )
            session.add(TimelineEntry(report_id=report.id, step="received", at=now))
            await session.flush()
            await uow.stage(
                ReportReceived(
                    report_id=report.id,
                    category=report.category,
                    location=GeoPoint(lat=report.lat, lon=report.lon, accuracy_m=report.accuracy_m),
                    description=report.description,
                    address=report.address,
                    received_at=now,
                ),
            )
    except IntegrityError:
        if scoped_key is None:
            raise
        # Another post with this key committed first; everything here was rolled back.
        earlier = await _earlier_report(
            sessions=work.sessions,
            key=scoped_key,
            body_hash=body_hash,
            metrics=metrics,
            body=body,
            expired_before=expired_before,
        )
        if earlier is None:
            raise
        return Receipt(earlier, replayed=True)
    metrics.count(category=body.category, outcome="accepted")
    return Receipt(report, replayed=False)


def _new_report(body: ReportCreate, now: datetime) -> Report:
    reporter = body.reporter
    return Report(
        category=body.category,
        lat=body.location.lat,
        lon=body.location.lon,
        accuracy_m=body.location.accuracy_m,
        description=body.description,
        address=body.address,
        reporter_name=reporter.name if reporter else None,
        reporter_phone=reporter.phone if reporter else None,
        device_id=reporter.device_id if reporter else None,
        received_at=now,
    )


async def _earlier_report(
    *,
    sessions: SessionFactory,
    key: str,
    body_hash: str,
    metrics: IntakeMetrics,
    body: ReportCreate,
    expired_before: datetime,
) -> Report | None:
    async with sessions() as session:
        record = await session.get(IdempotencyRecord, key)
        if record is None:
            return None
        if record.created_at < expired_before:
            # Forgotten: the key may start a new report (the old row would block its insert).
            await session.delete(record)
            await session.commit()
            return None
        if record.body_sha256 != body_hash:
            metrics.count(category=body.category, outcome="rejected")
            raise Conflict(
                "this Idempotency-Key was already used with a different body",
                code="idempotency_key_reused",
            )
        report = await session.get(Report, record.report_id)
    if report is None:  # pragma: no cover - the foreign key keeps them together
        return None
    metrics.count(category=body.category, outcome="duplicate")
    return report


# --- the reporter's view ----------------------------------------------------------------


def _not_found() -> NotFound:
    return NotFound("no such report")


def reporter_report_id(*, principal: Principal, report_id: str) -> uuid.UUID:
    """The report id if the caller holds its tracking token.

    Everyone else gets 404, not 403, so that report ids cannot be probed.
    """
    try:
        parsed = uuid.UUID(report_id)
    except ValueError:
        raise _not_found() from None
    if not principal.is_(Role.REPORTER, str(parsed)):
        raise _not_found()
    return parsed


def _step(entry: TimelineEntry) -> TimelineStep:
    return TimelineStep.model_validate(
        {
            "step": entry.step,
            "at": entry.at,
            "responder_kind": entry.responder_kind,
            "eta_s": entry.eta_s,
        }
    )


async def report_view(*, sessions: SessionFactory, report_id: uuid.UUID) -> ReportPublic:
    """The report's status and timeline, as its reporter may see them."""
    async with sessions() as session:
        report = await session.get(Report, report_id)
        if report is None:
            raise _not_found()
        entries = await _entries(session, report_id, after_id=0)
    return ReportPublic.model_validate(
        {
            "report_id": report.id,
            "category": report.category,
            "status": report.status,
            "received_at": report.received_at,
            "timeline": [_step(e) for e in entries],
        }
    )


async def _entries(
    session: AsyncSession, report_id: uuid.UUID, *, after_id: int
) -> Sequence[TimelineEntry]:
    query = (
        select(TimelineEntry)
        .where(TimelineEntry.report_id == report_id, col(TimelineEntry.id) > after_id)
        .order_by(col(TimelineEntry.id))
    )
    return (await session.exec(query)).all()


async def steps_since(
    *, sessions: SessionFactory, report_id: uuid.UUID, after_id: int
) -> tuple[str, list[tuple[int, TimelineStep]]]:
    """The report's status and the steps recorded after ``after_id``, with their ids."""
    async with sessions() as session:
        report = await session.get(Report, report_id)
        if report is None:
            raise _not_found()
        entries = await _entries(session, report_id, after_id=after_id)
    return report.status, [(e.id or 0, _step(e)) for e in entries]


async def cancel_report(*, work: UnitsOfWork, report_id: uuid.UUID, now: datetime) -> None:
    """Withdraw a report and stage ReportCancelled with it; 409 once it is closed."""
    async with work.begin(now=now) as uow:
        session = uow.session
        # Conditional, so a resolve handled at the same moment cannot be overwritten.
        result = await session.exec(
            update(Report)
            .where(col(Report.id) == report_id, col(Report.status).not_in(FINAL_STATUSES))
            .values(status="cancelled")
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            report = await session.get(Report, report_id)
            if report is None:
                raise _not_found()
            raise Conflict(f"the report is already {report.status}", code="report_closed")
        session.add(TimelineEntry(report_id=report_id, step="cancelled", at=now))
        await uow.stage(ReportCancelled(report_id=report_id, cancelled_at=now))


# --- following the incident -------------------------------------------------------------


# Each takes the session of the caller's transaction (the consume loop writes a
# partition's run of events in one) and returns the reports whose view changed.


async def link_report(
    session: AsyncSession, *, report_id: uuid.UUID, incident_id: uuid.UUID
) -> list[uuid.UUID]:
    """Remember the incident a report belongs to."""
    row = (
        await session.exec(select(Report.status, Report.incident_id).where(Report.id == report_id))
    ).first()
    if row is None or row[1] == incident_id:
        return []
    await session.exec(
        update(Report)
        .where(col(Report.id) == report_id)
        .values(incident_id=incident_id)
        .execution_options(synchronize_session=False)
    )
    changed = await _catch_up(session, report_id=report_id, incident_id=incident_id)
    return [report_id] if changed else []


async def move_incident_reports(
    session: AsyncSession, *, from_incident_id: uuid.UUID, into_incident_id: uuid.UUID
) -> list[uuid.UUID]:
    """Follow a merge: the reports of a merged incident now follow the one it joined."""
    ids = list(
        (
            await session.exec(select(Report.id).where(col(Report.incident_id) == from_incident_id))
        ).all()
    )
    changed = []
    for report_id in ids:
        await session.exec(
            update(Report)
            .where(col(Report.id) == report_id)
            .values(incident_id=into_incident_id)
            .execution_options(synchronize_session=False)
        )
        if await _catch_up(session, report_id=report_id, incident_id=into_incident_id):
            changed.append(report_id)
    return changed


async def _catch_up(session: AsyncSession, *, report_id: uuid.UUID, incident_id: uuid.UUID) -> bool:
    """Give a report that joined a running incident the steps its siblings already have."""
    sibling = (
        await session.exec(
            select(Report.id)
            .where(col(Report.incident_id) == incident_id, col(Report.id) != report_id)
            .limit(1)
        )
    ).first()
    if sibling is None:
        return False
    theirs = await _entries(session, sibling, after_id=0)
    changed = False
    for entry in theirs:
        if entry.event_id is None:
            continue  # the sibling's own received or cancelled step
        change = StepChange(
            # Stored from a StepChange, so it is one of the statuses.
            step=cast(ReportStatus, entry.step),
            responder_kind=entry.responder_kind,
            eta_s=entry.eta_s,
            unit_ref=entry.unit_ref,
        )
        if await _record(
            session, report_id=report_id, change=change, event_id=entry.event_id, at=entry.at
        ):
            changed = True
    return changed


async def record_incident_step(
    session: AsyncSession,
    *,
    incident_id: uuid.UUID,
    change: StepChange,
    event_id: str,
    at: datetime,
) -> list[uuid.UUID]:
    """Add a step to every report of the incident."""
    ids = list(
        (await session.exec(select(Report.id).where(col(Report.incident_id) == incident_id))).all()
    )
    return [
        report_id
        for report_id in ids
        if await _record(session, report_id=report_id, change=change, event_id=event_id, at=at)
    ]


async def _record(
    session: AsyncSession,
    *,
    report_id: uuid.UUID,
    change: StepChange,
    event_id: str,
    at: datetime,
) -> bool:
    status = (await session.exec(select(Report.status).where(Report.id == report_id))).first()
    if status is None:
        return False
    recorded = (
        await session.exec(
            select(TimelineEntry.step, TimelineEntry.unit_ref, TimelineEntry.event_id).where(
                TimelineEntry.report_id == report_id
            )
        )
    ).all()
    if any(row[2] == event_id for row in recorded):
        return False  # a redelivered event
    if not should_record(
        current=status, change=change, recorded={(row[0], row[1]) for row in recorded}
    ):
        return False
    # Compare-and-set: a reporter's cancel may have committed since the read above.
    result = await session.exec(
        update(Report)
        .where(col(Report.id) == report_id, col(Report.status) == status)
        .values(status=status_after(status, change.step))
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return False
    session.add(
        TimelineEntry(
            report_id=report_id,
            step=change.step,
            at=at,
            responder_kind=change.responder_kind,
            eta_s=change.eta_s,
            unit_ref=change.unit_ref,
            event_id=event_id,
        )
    )
    await session.flush()
    return True


async def report_updates(
    *,
    sessions: SessionFactory,
    changes: ReportChanges,
    report_id: uuid.UUID,
    after_id: int,
    resync_s: float,
) -> AsyncIterator[tuple[int, StreamUpdate]]:
    """Every step after ``after_id`` as it is recorded, with the report's status now."""
    # Watch before the first read, so a step recorded in between still wakes us.
    async with changes.watch(report_id) as watch:
        last_id = after_id
        while True:
            status, steps = await steps_since(
                sessions=sessions, report_id=report_id, after_id=last_id
            )
            for step_id, step in steps:
                yield (
                    step_id,
                    StreamUpdate.model_validate(
                        {"report_id": report_id, "status": status, "entry": step}
                    ),
                )
                last_id = step_id
            await watch.wait(resync_s)
