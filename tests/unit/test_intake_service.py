"""Intake's commands on a local SQLite file with an in-memory rate limiter: no network."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import func
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.intake import service
from services.intake.area import ServiceArea
from services.intake.metrics import IntakeMetrics
from services.intake.models import OUTBOX, IntakeTable, Report, ReportCreate
from services.intake.ratelimit import Limit
from services.intake.settings import IntakeSettings
from services.intake.timeline import StepChange
from shared import db
from shared.errors import Conflict, Invalid, RateLimited, status_of
from shared.events import Envelope
from shared.uow import UnitsOfWork

NOW = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
THEFT = ReportCreate.model_validate(
    {"category": "theft", "location": {"lat": 22.54, "lon": 114.05}}
)


class FakeLimiter:
    """Counts hits per bucket in memory; a window never ends."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    async def hit(self, limits: Sequence[Limit], *, window_s: int) -> int:
        over = False
        for limit in limits:
            self.counts[limit.bucket] = self.counts.get(limit.bucket, 0) + 1
            over = over or self.counts[limit.bucket] > limit.limit
        return window_s if over else 0


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[db.SessionFactory]:
    engine = db.create_engine(f"sqlite+aiosqlite:///{tmp_path}/intake.db")
    await db.create_schema(engine, IntakeTable.metadata, schema=None)
    yield db.session_factory(engine)
    await engine.dispose()


@pytest.fixture
def settings() -> IntakeSettings:
    return IntakeSettings.model_validate(
        {"auth_secret": "x" * 32, "rate_limit_per_address": 2, "rate_limit_window_s": 60}
    )


async def _receive(
    sessions: db.SessionFactory,
    settings: IntakeSettings,
    *,
    body: ReportCreate = THEFT,
    key: str | None = None,
    limiter: FakeLimiter | None = None,
    address: str = "10.0.0.1",
    area: ServiceArea | None = None,
    now: datetime = NOW,
) -> service.Receipt:
    return await service.receive_report(
        work=UnitsOfWork(sessions, OUTBOX),
        limiter=limiter or FakeLimiter(),
        metrics=IntakeMetrics(CollectorRegistry(), categories=settings.categories),
        settings=settings,
        area=area or ServiceArea(),
        body=body,
        idempotency_key=key,
        client_address=address,
        now=now,
    )


async def _staged(sessions: db.SessionFactory) -> list[Envelope]:
    async with sessions() as session:
        rows = (await session.exec(select(OUTBOX.c.value).order_by(OUTBOX.c.id))).all()
    return [Envelope.model_validate_json(value) for value in rows]


async def _report_count(session: AsyncSession) -> int:
    return int((await session.exec(select(func.count()).select_from(Report))).one())


async def _in_transaction(
    sessions: db.SessionFactory, step: Callable[..., Awaitable[list[uuid.UUID]]], **fields: Any
) -> list[uuid.UUID]:
    """Run one of the service's consume-side steps in a transaction of its own."""
    async with db.transaction(sessions) as session:
        return await step(session, **fields)


async def test_a_report_is_saved_with_its_event(
    sessions: db.SessionFactory, settings: IntakeSettings
) -> None:
    receipt = await _receive(sessions, settings)
    assert not receipt.replayed
    [envelope] = await _staged(sessions)
    assert envelope.type == "ReportReceived"
    assert envelope.payload["report_id"] == str(receipt.report.id)
    assert envelope.payload["received_at"].startswith("2026-01-01T08:00:00")


async def test_an_unknown_category_saves_nothing(
    sessions: db.SessionFactory, settings: IntakeSettings
) -> None:
    ufo = THEFT.model_copy(update={"category": "ufo"})
    with pytest.raises(Invalid) as refused:
        await _receive(sessions, settings, body=ufo)
    assert (status_of(refused.value), refused.value.code) == (422, "unknown_category")
    assert "theft" in refused.value.message
    assert await _staged(sessions) == []


async def test_the_same_key_returns_the_same_report_and_stages_once(
    sessions: db.SessionFactory, settings: IntakeSettings
) -> None:
    racing = await asyncio.gather(*(_receive(sessions, settings, key="k-1") for _ in range(4)))
    assert len({r.report.id for r in racing}) == 1
    assert sorted(r.replayed for r in racing) == [False, True, True, True]
    assert len(await _staged(sessions)) == 1

    with pytest.raises(Conflict) as conflict:
        await _receive(
            sessions, settings, key="k-1", body=THEFT.model_copy(update={"description": "x"})
        )
    assert status_of(conflict.value) == 409
    async with sessions() as session:
        assert await _report_count(session) == 1


async def test_over_the_limit_is_429_with_retry_after_and_saves_nothing(
    sessions: db.SessionFactory, settings: IntakeSettings
) -> None:
    limiter = FakeLimiter()
    await _receive(sessions, settings, limiter=limiter)
    await _receive(sessions, settings, limiter=limiter)
    with pytest.raises(RateLimited) as limited:
        await _receive(sessions, settings, limiter=limiter)
    assert status_of(limited.value) == 429
    assert limited.value.retry_after_s == 60
    assert len(await _staged(sessions)) == 2
    # Another address is counted on its own.
    await _receive(sessions, settings, limiter=limiter, address="10.0.0.2")


async def _view(sessions: db.SessionFactory, report_id: uuid.UUID) -> dict[str, Any]:
    return (await service.report_view(sessions=sessions, report_id=report_id)).model_dump()


async def test_steps_follow_the_incident_once_each(
    sessions: db.SessionFactory, settings: IntakeSettings
) -> None:
    report = (await _receive(sessions, settings)).report
    incident = uuid.uuid4()
    assert (
        await _in_transaction(
            sessions, service.link_report, report_id=report.id, incident_id=incident
        )
        == []
    )
    assigned = StepChange("responder_assigned", "volunteer", 80.0, "unit-a")
    for _ in range(2):  # a redelivered event adds nothing the second time
        await _in_transaction(
            sessions,
            service.record_incident_step,
            incident_id=incident,
            change=assigned,
            event_id="e-1",
            at=NOW,
        )
    view = await _view(sessions, report.id)
    assert view["status"] == "responder_assigned"
    assert [(s["step"], s["responder_kind"], s["eta_s"]) for s in view["timeline"]] == [
        ("received", None, None),
        ("responder_assigned", "volunteer", 80.0),
    ]


async def test_a_cancelled_report_stages_its_event_and_takes_no_more_steps(
    sessions: db.SessionFactory, settings: IntakeSettings
) -> None:
    report = (await _receive(sessions, settings)).report
    incident = uuid.uuid4()
    await _in_transaction(sessions, service.link_report, report_id=report.id, incident_id=incident)
    await service.cancel_report(work=UnitsOfWork(sessions, OUTBOX), report_id=report.id, now=NOW)
    with pytest.raises(Conflict) as again:
        await service.cancel_report(
            work=UnitsOfWork(sessions, OUTBOX), report_id=report.id, now=NOW
        )
    assert status_of(again.value) == 409

    changed = await _in_transaction(
        sessions,
        service.record_incident_step,
        incident_id=incident,
        change=StepChange("resolved"),
        event_id="e",
        at=NOW,
    )
    assert changed == []
    view = await _view(sessions, report.id)
    assert view["status"] == "cancelled"
    assert [s["step"] for s in view["timeline"]] == ["received", "cancelled"]
    assert [e.type for e in await _staged(sessions)] == ["ReportReceived", "ReportCancelled"]


async def test_a_merged_incidents_reports_follow_the_one_it_joined(
    sessions: db.SessionFactory, settings: IntakeSettings
) -> None:
    first = (await _receive(sessions, settings)).report
    second = (await _receive(sessions, settings)).report
    kept, merged = uuid.uuid4(), uuid.uuid4()
    await _in_transaction(sessions, service.link_report, report_id=first.id, incident_id=kept)
    await _in_transaction(sessions, service.link_report, report_id=second.id, incident_id=merged)
    await _in_transaction(
        sessions,
        service.record_incident_step,
        incident_id=kept,
        change=StepChange("dispatched"),
        event_id="d",
        at=NOW,
    )
    moved = await _in_transaction(
        sessions, service.move_incident_reports, from_incident_id=merged, into_incident_id=kept
    )
    assert moved == [second.id]
    await _in_transaction(
        sessions,
        service.record_incident_step,
        incident_id=kept,
        change=StepChange("resolved"),
        event_id="r",
        at=NOW,
    )
    for report in (first, second):
        view = await _view(sessions, report.id)
        assert [s["step"] for s in view["timeline"]] == ["received", "dispatched", "resolved"]


GRIDS = Path(__file__).resolve().parents[2] / "services" / "dispatch" / "data" / "grids.geojson"


def _at(lat: float, lon: float) -> ReportCreate:
    return THEFT.model_copy(
        update={"location": THEFT.location.model_copy(update={"lat": lat, "lon": lon})}
    )


async def test_a_report_outside_the_service_area_is_422_telling_to_call_110(
    sessions: db.SessionFactory, settings: IntakeSettings
) -> None:
    grids = ServiceArea.from_geojson(GRIDS, margin_m=2000)
    inside = await _receive(sessions, settings, body=_at(23.02, 113.75), area=grids)
    assert not inside.replayed
    for lat, lon in [(22.54, 114.05), (85.0, 113.75), (23.02, 113.80)]:
        with pytest.raises(Invalid) as refused:
            await _receive(sessions, settings, body=_at(lat, lon), area=grids)
        assert status_of(refused.value) == 422
        assert refused.value.code == "outside_service_area"
        assert "110" in refused.value.message
    async with sessions() as session:
        assert await _report_count(session) == 1


async def test_the_margin_grows_the_grids_extent() -> None:
    # The grids end at 113.77 E; 1 km further east is about 0.0098 degrees of longitude.
    east = (23.02, 113.7798)
    assert not ServiceArea.from_geojson(GRIDS, margin_m=500).contains(*east)
    assert ServiceArea.from_geojson(GRIDS, margin_m=1500).contains(*east)


async def test_an_explicit_polygon_replaces_the_grids() -> None:
    triangle = ServiceArea.from_polygon([[114.0, 22.5], [114.1, 22.5], [114.05, 22.6]])
    assert triangle.contains(22.52, 114.05)
    assert not triangle.contains(22.59, 114.0)
    assert not ServiceArea().contains(86.0, 0.0)  # even with no area: the index's limit


async def test_a_key_belongs_to_its_caller(
    sessions: db.SessionFactory, settings: IntakeSettings
) -> None:
    mine = await _receive(sessions, settings, key="k-1", address="10.0.0.1")
    theirs = await _receive(sessions, settings, key="k-1", address="10.0.0.2")
    assert not theirs.replayed
    assert theirs.report.id != mine.report.id
    again = await _receive(sessions, settings, key="k-1", address="10.0.0.1")
    assert again.replayed
    assert again.report.id == mine.report.id


async def test_a_key_is_forgotten_after_its_ttl(
    sessions: db.SessionFactory, settings: IntakeSettings
) -> None:
    first = await _receive(sessions, settings, key="k-1")
    within = await _receive(
        sessions, settings, key="k-1", now=NOW + timedelta(seconds=settings.idempotency_ttl_s - 1)
    )
    assert within.replayed
    assert within.report.id == first.report.id
    later = await _receive(
        sessions,
        settings,
        key="k-1",
        limiter=FakeLimiter(),
        now=NOW + timedelta(seconds=settings.idempotency_ttl_s + 1),
    )
    assert not later.replayed
    assert later.report.id != first.report.id
