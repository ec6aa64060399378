"""Two dispatch instances on one PostgreSQL: duplicate reports arriving at both at once
become one incident, and a responder two locators both think free is booked once."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from services.dispatch import service
from services.dispatch.locator_client import MemoryLocator
from services.dispatch.models import Incident, Offer
from shared.events import GeoPoint, ReportReceived, ResponderOffered
from tests.databases import create_database, drop_database
from tests.unit.dispatch_support import HERE, engine_at, north
from tools.embedded import Component

pytestmark = pytest.mark.postgres


@pytest.fixture
async def database_url(postgres: Component) -> AsyncIterator[str]:
    url = await create_database(postgres.url)
    yield url
    await drop_database(url)


def report_at(at: tuple[float, float], received_at: datetime) -> ReportReceived:
    return ReportReceived(
        report_id=uuid.uuid4(),
        category="fight",
        location=GeoPoint(lat=at[0], lon=at[1]),
        received_at=received_at,
    )


async def test_duplicate_reports_at_two_instances_at_once_become_one_incident(
    database_url: str, tmp_path: Path
) -> None:
    async with (
        engine_at(tmp_path / "a", database_url=database_url) as one,
        engine_at(tmp_path / "b", database_url=database_url) as two,
    ):
        for round_ in range(6):
            # Each round at its own spot, 100 m apart across whatever cell border lies there.
            spot = north(HERE, 5000 * (round_ + 1))
            now = one.clock.now()
            opened = await asyncio.gather(
                service.receive_report(dispatch=one.dispatch, report=report_at(spot, now)),
                service.receive_report(
                    dispatch=two.dispatch, report=report_at(north(spot, 100), now)
                ),
            )
            assert opened[0] == opened[1]

        async with one.dispatch.sessions() as s:
            incidents = (await s.exec(select(Incident))).all()
        assert len(incidents) == 6


async def test_a_responder_both_locators_think_free_is_booked_once(
    database_url: str, tmp_path: Path
) -> None:
    shared_locator = MemoryLocator()
    responder = shared_locator.add("volunteer", *north(HERE, 100))
    # Two locators whose views drifted: each would hand out the same responder.
    other_locator = MemoryLocator(
        responders={responder: dataclasses.replace(shared_locator.responders[responder])}
    )
    async with (
        engine_at(tmp_path / "a", locator=shared_locator, database_url=database_url) as one,
        engine_at(tmp_path / "b", locator=other_locator, database_url=database_url) as two,
    ):
        first, second = await asyncio.gather(
            one.report("other", HERE), two.report("other", north(HERE, 3000))
        )
        assert first != second

        offered = [e for e in await one.events(ResponderOffered) if isinstance(e, ResponderOffered)]
        assert [o.responder_id for o in offered] == [responder]
        flagged = [d.no_responder for d in (await one.detail(first), await one.detail(second))]
        assert sorted(flagged) == [False, True]


async def test_the_schema_refuses_a_second_pending_offer_for_one_responder(
    database_url: str, tmp_path: Path
) -> None:
    async with engine_at(tmp_path, database_url=database_url) as engine:
        incidents = [await engine.report("other", north(HERE, 3000 * n)) for n in (1, 2)]
        responder = uuid.uuid4()
        now = datetime.now(UTC)

        def offer(incident_id: uuid.UUID) -> Offer:
            return Offer(
                incident_id=incident_id,
                responder_id=responder,
                slot=0,
                kind="volunteer",
                distance_m=1.0,
                eta_s=1.0,
                offered_at=now,
                expires_at=now,
            )

        async with engine.dispatch.sessions() as s:
            s.add(offer(incidents[0]))
            await s.commit()
            s.add(offer(incidents[1]))
            with pytest.raises(IntegrityError):
                await s.commit()
