"""The dispatcher console's map: who is on duty, their status and where they were last seen."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.volunteer_locator.geo import offset
from shared.auth import Role, mint_token
from tests.harness import AUTH_SECRET, Infra
from tests.integration.locator_support import ORIGIN, running_locator

OPERATOR = mint_token(secret=AUTH_SECRET, role=Role.OPERATOR, subject="ops-1")


async def test_the_map_lists_on_duty_responders_with_status_and_position(infra: Infra) -> None:
    async with running_locator(infra) as locator:
        walker = await locator.register(kind="volunteer", travel_mode="foot")
        car = await locator.register(kind="patrol", travel_mode="car")
        silent = await locator.register(kind="volunteer")
        home = await locator.register(kind="patrol", on_duty=False)
        before = datetime.now(UTC)
        walker_at, car_at = offset(ORIGIN, north_m=300), offset(ORIGIN, east_m=900)
        await locator.place(walker, walker_at)
        await locator.place(car, car_at)
        await locator.place(home, offset(ORIGIN, north_m=50))
        booked = await locator.claim(responder_id=car.responder_id)
        assert booked.status_code == 200, booked.text

        async def show(**params: Any) -> list[dict[str, Any]]:
            answer = await locator.dispatcher.get("/v1/responders", params=params)
            assert answer.status_code == 200, answer.text
            rows: list[dict[str, Any]] = answer.json()
            return rows

        on_duty = {r["responder_id"]: r for r in await show(on_duty="true")}
        patrols = await show(on_duty="true", kinds="patrol")
        free_ones = await show(on_duty="true", status="free")
        capped = await show(on_duty="true", limit=2)
        everyone = await show()
        async with locator.running.client(OPERATOR) as operator:
            as_operator = await operator.get("/v1/responders", params={"on_duty": "true"})
        as_service = await locator.service.get("/v1/responders")
        async with locator.as_responder(walker) as client:
            as_responder = await client.get("/v1/responders")
        bad_kind = await locator.dispatcher.get("/v1/responders", params={"kinds": "tank"})
        too_many = await locator.dispatcher.get("/v1/responders", params={"limit": 10_001})

    assert set(on_duty) == {walker.responder_id, car.responder_id, silent.responder_id}
    mine = on_duty[walker.responder_id]
    assert mine["kind"] == "volunteer"
    assert mine["status"] == "free"
    assert abs(mine["lat"] - walker_at.lat) < 1e-9
    assert abs(mine["lon"] - walker_at.lon) < 1e-9
    assert datetime.fromisoformat(mine["last_seen_at"]) >= before.replace(microsecond=0)
    assert on_duty[car.responder_id]["status"] == "offered"
    assert abs(on_duty[car.responder_id]["lon"] - car_at.lon) < 1e-9
    assert on_duty[silent.responder_id]["lat"] is None
    assert on_duty[silent.responder_id]["last_seen_at"] is None
    assert [r["responder_id"] for r in patrols] == [car.responder_id]
    assert {r["responder_id"] for r in free_ones} == {walker.responder_id, silent.responder_id}
    assert len(capped) == 2
    assert len(everyone) == 4
    assert as_operator.status_code == 200
    assert len(as_operator.json()) == 3
    assert as_service.status_code == 403
    assert as_responder.status_code == 403
    assert bad_kind.status_code == 422
    assert too_many.status_code == 422
