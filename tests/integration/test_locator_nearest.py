"""Who is nearest, on the real broker and Redis: ranked by ETA, never stale or off duty,
and never moved backwards by a late ping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.volunteer_locator.geo import offset
from shared.clock import FakeClock
from tests.harness import Infra, eventually
from tests.integration.locator_support import ORIGIN, Locator, running_locator


async def test_a_car_two_km_away_beats_a_walker_at_800_m(infra: Infra) -> None:
    async with running_locator(infra) as locator:
        walker = await locator.register(kind="volunteer", travel_mode="foot")
        car = await locator.register(kind="patrol", travel_mode="car")
        await locator.place(walker, offset(ORIGIN, north_m=800))
        await locator.place(car, offset(ORIGIN, east_m=2000))

        best = await locator.nearest(limit=1)
        both = await locator.nearest(limit=5)
        claim = await locator.claim()

    assert [r["responder_id"] for r in best] == [car.responder_id]
    assert best[0]["kind"] == "patrol"
    assert abs(best[0]["distance_m"] - 2000) < 5
    assert abs(best[0]["eta_s"] - 2000 / (35 / 3.6)) < 1
    assert best[0]["status"] == "free"
    assert [r["responder_id"] for r in both] == [car.responder_id, walker.responder_id]
    assert abs(both[1]["eta_s"] - 800 / (5 / 3.6)) < 1
    assert claim.status_code == 200, claim.text
    assert claim.json()["responder_id"] == car.responder_id
    assert claim.json()["travel_mode"] == "car"


async def test_kinds_skills_and_exclusions_filter_the_answer(infra: Infra) -> None:
    async with running_locator(infra) as locator:
        medic = await locator.register(kind="volunteer", skills=["first_aid"])
        plain = await locator.register(kind="volunteer")
        officer = await locator.register(kind="patrol")
        for who, north in ((medic, 300), (plain, 100), (officer, 200)):
            await locator.place(who, offset(ORIGIN, north_m=north))

        with_skill = await locator.nearest(skills="first_aid")
        patrol_only = await locator.nearest(kinds="patrol")
        not_plain = await locator.nearest(exclude=plain.responder_id, limit=1)

    assert [r["responder_id"] for r in with_skill] == [medic.responder_id]
    assert [r["responder_id"] for r in patrol_only] == [officer.responder_id]
    assert [r["responder_id"] for r in not_plain] == [officer.responder_id]


async def test_stale_and_off_duty_responders_are_never_returned(infra: Infra) -> None:
    async with running_locator(infra) as locator:
        fresh = await locator.register()
        off_duty = await locator.register(on_duty=False)
        stale = await locator.register()
        going_home = await locator.register()
        await locator.place(fresh, offset(ORIGIN, north_m=400))
        await locator.place(off_duty, offset(ORIGIN, north_m=100))
        await locator.place(
            stale,
            offset(ORIGIN, north_m=50),
            recorded_at=datetime.now(UTC) - timedelta(seconds=300),
        )
        await locator.place(going_home, offset(ORIGIN, north_m=200))
        off = await locator.dispatcher.put(
            f"/v1/responders/{going_home.responder_id}/duty", json={"on_duty": False}
        )
        assert off.status_code == 200

        found = await locator.nearest(limit=10)
        first = await locator.claim()
        second = await locator.claim()

    assert [r["responder_id"] for r in found] == [fresh.responder_id]
    assert first.json()["responder_id"] == fresh.responder_id
    assert second.status_code == 404
    assert second.json()["error"]["code"] == "no_responder_available"
    assert second.json()["error"]["details"]["radius_m"] == 10_000


async def _finds(locator: Locator, responder_id: str) -> bool:
    return [r["responder_id"] for r in await locator.nearest()] == [responder_id]


async def test_a_responder_without_pings_drops_out_until_the_next_ping(infra: Infra) -> None:
    clock = FakeClock(datetime.now(UTC))
    async with running_locator(infra, clock=clock, stale_after_s=120) as locator:
        who = await locator.register()
        await locator.place(who, offset(ORIGIN, north_m=300))
        # Their registration and their position arrive separately: wait for both.
        await eventually(lambda: _finds(locator, who.responder_id), timeout=10)
        before = await locator.nearest()

        clock.advance(121)
        silent = await locator.nearest()

        await locator.place(who, offset(ORIGIN, north_m=250))
        back = await locator.nearest()

    assert [r["responder_id"] for r in before] == [who.responder_id]
    assert silent == []
    assert [r["responder_id"] for r in back] == [who.responder_id]
    assert abs(back[0]["distance_m"] - 250) < 2


async def test_an_out_of_order_ping_does_not_move_a_responder_backwards(infra: Infra) -> None:
    now = datetime.now(UTC)
    async with running_locator(infra) as locator:
        who = await locator.register()
        newest = offset(ORIGIN, north_m=300)
        await locator.place(who, newest, recorded_at=now)
        late = await locator.ping(
            who, offset(ORIGIN, north_m=900), recorded_at=now - timedelta(seconds=10)
        )
        assert late.status_code == 202
        # A later ping proves the late one has been consumed before we look.
        marker = await locator.register()
        await locator.place(marker, offset(ORIGIN, north_m=5000))

        held = await locator.position(who.responder_id)
        found = await locator.nearest(limit=1)

    assert held is not None
    assert abs(held["lat"] - newest.lat) < 1e-9
    assert abs(found[0]["distance_m"] - 300) < 2


async def test_a_responder_cannot_post_another_responders_location(infra: Infra) -> None:
    async with running_locator(infra) as locator:
        alice = await locator.register()
        bob = await locator.register()
        async with locator.as_responder(alice) as client:
            forged = await client.post(
                f"/v1/responders/{bob.responder_id}/location",
                json={"lat": ORIGIN.lat, "lon": ORIGIN.lon},
            )
        by_dispatcher = await locator.dispatcher.post(
            f"/v1/responders/{bob.responder_id}/location",
            json={"lat": ORIGIN.lat, "lon": ORIGIN.lon},
        )
        await locator.place(alice, offset(ORIGIN, north_m=100))

        bob_position = await locator.position(bob.responder_id)
        found = await locator.nearest(limit=10)

    assert forged.status_code == 403
    assert forged.json()["error"]["code"] == "forbidden"
    assert by_dispatcher.status_code == 403
    assert bob_position is None
    assert [r["responder_id"] for r in found] == [alice.responder_id]


async def test_a_gateway_batch_is_indexed_and_oversized_batches_are_refused(
    infra: Infra,
) -> None:
    async with running_locator(infra) as locator:
        people = [await locator.register() for _ in range(3)]
        spots = [offset(ORIGIN, north_m=100 * (i + 1)) for i in range(len(people))]
        pings = [
            {"responder_id": who.responder_id, "lat": at.lat, "lon": at.lon}
            for who, at in zip(people, spots, strict=True)
        ]
        accepted = await locator.service.post("/v1/locations/batch", json={"pings": pings})
        too_many = await locator.service.post(
            "/v1/locations/batch", json={"pings": [pings[0]] * 1001}
        )
        as_dispatcher = await locator.dispatcher.post("/v1/locations/batch", json={"pings": pings})

        async def all_three() -> list[str]:
            found = [r["responder_id"] for r in await locator.nearest(limit=10)]
            return found if len(found) == 3 else []

        found = await eventually(all_three)

    assert accepted.status_code == 202
    assert accepted.json() == {"accepted": 3}
    assert too_many.status_code in (413, 422)
    assert as_dispatcher.status_code == 403
    assert found == [who.responder_id for who in people]
