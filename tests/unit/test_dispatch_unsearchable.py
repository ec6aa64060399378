"""An incident no search can ever fill is flagged to the dispatcher at once, with why."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.dispatch.locator_client import SearchImpossible, check_searchable
from shared.events import NoResponderAvailable, ResponderOffered
from tests.unit.dispatch_support import HERE, Engine, engine_at, north


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    async with engine_at(tmp_path / "dispatch.db") as e:
        yield e


async def test_a_place_the_index_cannot_hold_is_flagged_at_once_not_retried(
    engine: Engine,
) -> None:
    engine.locator.add("volunteer", *north(HERE, 100))
    incident_id = await engine.report("other", at=(86.0, HERE[1]))

    (flag,) = await engine.events(NoResponderAvailable)
    assert isinstance(flag, NoResponderAvailable)
    assert flag.incident_id == incident_id
    assert flag.reason == "location_unsearchable"
    assert (await engine.detail(incident_id)).no_responder
    # The periodic retry changes nothing: no second flag, no offer, nobody claimed.
    await engine.tick(60)
    assert len(await engine.events(NoResponderAvailable)) == 1
    assert await engine.events(ResponderOffered) == []
    assert engine.locator.claims == []


async def test_nobody_free_still_says_so(engine: Engine) -> None:
    await engine.report("other")
    (flag,) = await engine.events(NoResponderAvailable)
    assert isinstance(flag, NoResponderAvailable)
    assert flag.reason == "nobody_free"


@pytest.mark.parametrize(
    ("lat", "lon", "kinds", "reason"),
    [
        (86.0, 113.75, ["volunteer"], "location_unsearchable"),
        (23.0, 181.0, ["volunteer"], "location_unsearchable"),
        (23.0, 113.75, [], "plan_unfillable"),
        (23.0, 113.75, ["firefighter"], "plan_unfillable"),
    ],
)
def test_searches_that_can_never_succeed(
    lat: float, lon: float, kinds: list[str], reason: str
) -> None:
    with pytest.raises(SearchImpossible) as impossible:
        check_searchable(lat=lat, lon=lon, kinds=kinds)
    assert impossible.value.reason == reason
