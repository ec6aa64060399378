"""Intake's idempotency and status rules on PostgreSQL, the production database, where
racing transactions really do run at once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from sqlalchemy import func
from sqlmodel import select

from services.intake import service
from services.intake.area import ServiceArea
from services.intake.metrics import IntakeMetrics
from services.intake.models import OUTBOX, IntakeTable, Report, ReportCreate
from services.intake.ratelimit import Limit
from services.intake.settings import IntakeSettings
from services.intake.timeline import StepChange
from shared import db
from shared.uow import UnitsOfWork
from tests.databases import create_database, drop_database
from tools.embedded import Component

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
THEFT = ReportCreate.model_validate(
    {"category": "theft", "location": {"lat": 22.54, "lon": 114.05}}
)
SETTINGS = IntakeSettings.model_validate({"auth_secret": "x" * 32})


class NoLimits:
    """A limiter that lets everything through."""

    async def hit(self, limits: Sequence[Limit], *, window_s: int) -> int:
        return 0


@pytest.fixture
async def sessions(postgres: Component) -> AsyncIterator[db.SessionFactory]:
    url = await create_database(postgres.url)
    engine = db.create_engine(url, schema="intake")
    try:
        await db.create_schema(engine, IntakeTable.metadata, schema="intake")
        yield db.session_factory(engine)
    finally:
        await engine.dispose()
        await drop_database(url)


async def _receive(
    sessions: db.SessionFactory, key: str | None, body: ReportCreate = THEFT
) -> service.Receipt:
    return await service.receive_report(
        work=UnitsOfWork(sessions, OUTBOX),
        limiter=NoLimits(),
        metrics=IntakeMetrics(CollectorRegistry(), categories=SETTINGS.categories),
        settings=SETTINGS,
        area=ServiceArea(),
        body=body,
        idempotency_key=key,
        client_address="10.0.0.1",
        now=NOW,
    )


async def _in_transaction(
    sessions: db.SessionFactory, step: Callable[..., Awaitable[list[uuid.UUID]]], **fields: Any
) -> list[uuid.UUID]:
    """Run one of the service's consume-side steps in a transaction of its own."""
    async with db.transaction(sessions) as session:
        return await step(session, **fields)


async def test_racing_posts_with_one_key_make_one_report(sessions: db.SessionFactory) -> None:
    receipts = await asyncio.gather(*(_receive(sessions, "same-key") for _ in range(8)))
    assert len({r.report.id for r in receipts}) == 1
    assert [r.replayed for r in receipts].count(False) == 1
    async with sessions() as session:
        reports = (await session.exec(select(func.count()).select_from(Report))).one()
        staged = (await session.exec(select(func.count()).select_from(OUTBOX))).one()
    assert (reports, staged) == (1, 1)


async def test_a_cancel_and_a_resolve_at_once_leave_one_final_status(
    sessions: db.SessionFactory,
) -> None:
    report = (await _receive(sessions, "k")).report
    incident = uuid.uuid4()
    await _in_transaction(sessions, service.link_report, report_id=report.id, incident_id=incident)
    results = await asyncio.gather(
        service.cancel_report(work=UnitsOfWork(sessions, OUTBOX), report_id=report.id, now=NOW),
        _in_transaction(
            sessions,
            service.record_incident_step,
            incident_id=incident,
            change=StepChange("resolved"),
            event_id=str(uuid.uuid4()),
            at=NOW,
        ),
        return_exceptions=True,
    )
    view = await service.report_view(sessions=sessions, report_id=report.id)
    finals = [s.step for s in view.timeline if s.step in ("resolved", "cancelled")]
    assert finals == [view.status]
    # The reporter's cancel either won, or was refused with a conflict.
    cancel_outcome = results[0]
    assert cancel_outcome is None or getattr(cancel_outcome, "status", None) == 409


async def test_text_with_tabs_line_breaks_and_any_script_is_stored_as_typed(
    sessions: db.SessionFactory,
) -> None:
    typed = "自行车被偷\t门口\nline two 🚲 <b>not html</b>"
    body = THEFT.model_copy(update={"description": typed, "address": "东城 No. 3"})
    receipt = await _receive(sessions, None, body)
    async with sessions() as session:
        stored = await session.get(Report, receipt.report.id)
    assert stored is not None
    assert stored.description == typed


@pytest.mark.parametrize("bad", ["bike\x00taken", "bell\x07", "esc\x1b[2J", "c1\x85"])
def test_nul_and_control_characters_never_reach_postgresql(bad: str) -> None:
    # PostgreSQL refuses NUL in text (a 500 if it got that far); the model stops it first.
    with pytest.raises(ValidationError):
        ReportCreate.model_validate({**THEFT.model_dump(), "description": bad})
