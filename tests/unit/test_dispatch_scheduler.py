"""The timer scheduler of a running dispatch: a slow retry pass never holds up a timer."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from pathlib import Path

from services.dispatch.locator_client import Candidate, MemoryLocator
from services.dispatch.timers import TimerScheduler
from shared.events import OfferExpired, ResponderOffered
from tests.unit.dispatch_support import HERE, engine_at, north


class StallingLocator(MemoryLocator):
    """A locator that, once told to, answers no claim until released (a loaded locator)."""

    def __init__(self) -> None:
        super().__init__()
        self.stalling = False
        self.stalled = asyncio.Event()
        self.go_on = asyncio.Event()

    async def claim(
        self,
        *,
        incident_id: uuid.UUID,
        lat: float,
        lon: float,
        kinds: Sequence[str],
        skills: Sequence[str],
        exclude: Sequence[uuid.UUID],
        responder_id: uuid.UUID | None = None,
        hold_s: float,
    ) -> Candidate | None:
        if self.stalling:
            self.stalled.set()
            await self.go_on.wait()
        return await super().claim(
            incident_id=incident_id,
            lat=lat,
            lon=lon,
            kinds=kinds,
            skills=skills,
            exclude=exclude,
            responder_id=responder_id,
            hold_s=hold_s,
        )


async def test_an_offer_expires_on_time_while_a_retry_pass_waits_on_the_locator(
    tmp_path: Path,
) -> None:
    locator = StallingLocator()
    volunteer = locator.add("volunteer", *north(HERE, 100))
    async with engine_at(tmp_path / "dispatch.db", locator=locator) as engine:
        await engine.report("other")
        (offered,) = await engine.events(ResponderOffered)
        assert isinstance(offered, ResponderOffered)
        assert offered.responder_id == volunteer
        # A second incident nobody is free for: every retry pass asks the locator for it.
        await engine.report("other", north(HERE, 3000))

        locator.stalling = True
        scheduler = TimerScheduler(engine.dispatch)
        await scheduler.start()
        try:
            await asyncio.wait_for(locator.stalled.wait(), 30)
            # The retry pass is stuck on the locator; meanwhile the first offer lapses.
            engine.clock.advance(31)
            scheduler.wake()
            for _ in range(300):
                if await engine.events(OfferExpired):
                    break
                await asyncio.sleep(0.1)
            (expired,) = await engine.events(OfferExpired)
            assert isinstance(expired, OfferExpired)
            assert expired.offer_id == offered.offer_id
            assert not locator.go_on.is_set()  # the retry pass was still waiting
        finally:
            locator.go_on.set()
            await scheduler.stop()
