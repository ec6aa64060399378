"""The dispatch engine on PostgreSQL, the production database, where two instances
really do fire timers and take offers at the same time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.dispatch import service
from services.dispatch.locator_client import MemoryLocator
from shared.clock import FakeClock
from shared.events import OfferExpired, ResponderOffered, TargetBreached
from tests.databases import create_database, drop_database
from tests.unit.dispatch_support import HERE, engine_at, north
from tools.embedded import Component

pytestmark = pytest.mark.postgres


@pytest.fixture
async def database_url(postgres: Component) -> AsyncIterator[str]:
    url = await create_database(postgres.url)
    yield url
    await drop_database(url)


async def test_two_instances_fire_a_due_timer_once(database_url: str, tmp_path: Path) -> None:
    clock = FakeClock()
    locator = MemoryLocator()
    first = locator.add("volunteer", *north(HERE, 100))
    second = locator.add("volunteer", *north(HERE, 300))
    async with (
        engine_at(tmp_path, clock=clock, locator=locator, database_url=database_url) as one,
        engine_at(tmp_path, clock=clock, locator=locator, database_url=database_url) as two,
    ):
        incident_id = await one.report("other")
        clock.advance(30)

        fired = await asyncio.gather(one.tick(0), two.tick(0), one.tick(0), two.tick(0))

        assert sum(fired) == 1
        (expired,) = await one.events(OfferExpired)
        assert isinstance(expired, OfferExpired)
        assert expired.responder_id == first
        offered = [e for e in await one.events(ResponderOffered) if isinstance(e, ResponderOffered)]
        assert [o.responder_id for o in offered] == [first, second]

        clock.advance(30)
        await asyncio.gather(one.tick(0), two.tick(0))
        breaches = [e for e in await two.events(TargetBreached) if isinstance(e, TargetBreached)]
        assert [(b.incident_id, b.stage) for b in breaches] == [(incident_id, "T1")]


async def test_the_whole_life_of_an_incident_on_postgres(database_url: str, tmp_path: Path) -> None:
    async with engine_at(tmp_path, database_url=database_url) as engine:
        responder = engine.locator.add("volunteer", *north(HERE, 100))
        incident_id = await engine.report("other")
        (offered,) = [
            e for e in await engine.events(ResponderOffered) if isinstance(e, ResponderOffered)
        ]
        engine.clock.advance(15)
        await service.accept_offer(
            dispatch=engine.dispatch, offer_id=offered.offer_id, responder_id=str(responder)
        )
        engine.clock.advance(60)
        await service.set_unit_status(
            dispatch=engine.dispatch,
            incident_id=incident_id,
            responder_id=responder,
            status="on_scene",
        )
        queue = await service.list_incidents(dispatch=engine.dispatch, status="open")
        assert [m.state for m in queue[0].milestones] == ["met", "met", "met"]
        assert [m.seconds for m in queue[0].milestones] == [15, 75, 75]

        await service.resolve(dispatch=engine.dispatch, incident_id=incident_id)

        detail = await engine.detail(incident_id)
        assert detail.status == "resolved"
        assert [u.status for u in detail.units] == ["cleared"]
        assert await service.list_incidents(dispatch=engine.dispatch, status="open") == []
