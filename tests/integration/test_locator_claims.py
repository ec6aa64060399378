"""Claims and releases as dispatch makes them, on the real broker and Redis: nobody is
ever booked twice, holds lapse by themselves, and dispatch's bookings keep the index true."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from services.volunteer_locator.geo import offset
from shared.events import AvailabilityChanged, BookingsReconciled
from shared.kafka import KafkaPublisher, publish_event
from tests.harness import Infra, eventually
from tests.integration.locator_support import ORIGIN, Locator, Registered, running_locator


async def test_fifty_concurrent_claims_around_one_responder_give_exactly_one_success(
    infra: Infra,
) -> None:
    async with running_locator(infra) as locator:
        only = await locator.register()
        await locator.place(only, offset(ORIGIN, north_m=150))

        answers = await asyncio.gather(
            *(locator.claim(offset(ORIGIN, east_m=i)) for i in range(50))
        )
        after = await locator.position(only.responder_id)
        status = (await locator.dispatcher.get(f"/v1/responders/{only.responder_id}")).json()

    codes = sorted(a.status_code for a in answers)
    assert codes == [200] + [404] * 49
    winner = next(a for a in answers if a.status_code == 200)
    assert winner.json()["responder_id"] == only.responder_id
    assert after is not None
    assert status["status"] == "offered"


async def test_claims_fall_through_to_the_next_nearest_and_release_frees(infra: Infra) -> None:
    incident = str(uuid.uuid4())
    async with running_locator(infra) as locator:
        near = await locator.register()
        far = await locator.register()
        await locator.place(near, offset(ORIGIN, north_m=100))
        await locator.place(far, offset(ORIGIN, north_m=600))

        first = await locator.claim(incident_id=incident)
        second = await locator.claim()
        wrong_release = await locator.service.post(
            "/v1/claims/release",
            json={"responder_id": near.responder_id, "incident_id": str(uuid.uuid4())},
        )
        still_held = await locator.nearest(limit=5)
        right_release = await locator.service.post(
            "/v1/claims/release", json={"responder_id": near.responder_id, "incident_id": incident}
        )
        free_again = await locator.nearest(limit=5)

    assert first.json()["responder_id"] == near.responder_id
    assert second.json()["responder_id"] == far.responder_id
    assert wrong_release.json()["released"] is False
    assert still_held == []
    assert right_release.json()["released"] is True
    assert [r["responder_id"] for r in free_again] == [near.responder_id]


async def test_a_named_claim_books_that_responder_or_says_409(infra: Infra) -> None:
    async with running_locator(infra) as locator:
        who = await locator.register()
        resting = await locator.register(on_duty=False)
        await locator.place(who, offset(ORIGIN, north_m=3000))
        await locator.place(resting, offset(ORIGIN, north_m=10))

        named = await locator.claim(responder_id=who.responder_id)
        again = await locator.claim(responder_id=who.responder_id)
        off_duty = await locator.claim(responder_id=resting.responder_id)

    assert named.status_code == 200, named.text
    assert named.json()["responder_id"] == who.responder_id
    assert abs(named.json()["distance_m"] - 3000) < 5
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "responder_unavailable"
    assert off_duty.status_code == 409


async def test_an_unconfirmed_hold_lapses_and_the_responder_is_free_again(infra: Infra) -> None:
    async with running_locator(infra, sweep_interval_s=0.2) as locator:
        who = await locator.register()
        await locator.place(who, offset(ORIGIN, north_m=100))

        held = await locator.claim(hold_s=1)
        during = await locator.nearest()

        async def free_again() -> bool:
            return [r["responder_id"] for r in await locator.nearest()] == [who.responder_id]

        await eventually(free_again, timeout=10)

    assert held.status_code == 200
    assert during == []


async def test_dispatch_bookings_on_responder_status_keep_the_index_true(infra: Infra) -> None:
    incident = uuid.uuid4()
    publisher = KafkaPublisher(infra.kafka, client_id="dispatch-test")
    await publisher.start()
    await publisher.wait_connected(10)
    try:
        async with running_locator(infra) as locator:
            who = await locator.register()
            await locator.place(who, offset(ORIGIN, north_m=100))
            claimed = await locator.claim(incident_id=str(incident))
            assert claimed.status_code == 200
            responder = uuid.UUID(who.responder_id)

            await publish_event(
                publisher,
                AvailabilityChanged(responder_id=responder, status="busy", incident_id=incident),
            )

            await eventually(lambda: _has_status(locator, who, "busy"))
            # The hold timer no longer applies once busy, and a free for another incident
            # is a late event that must not free this booking.
            await publish_event(
                publisher,
                AvailabilityChanged(
                    responder_id=responder, status="free", incident_id=uuid.uuid4()
                ),
            )
            await publish_event(
                publisher,
                AvailabilityChanged(responder_id=responder, status="free", incident_id=incident),
            )
            await eventually(lambda: _has_status(locator, who, "free"))
            found = await locator.nearest()
    finally:
        await publisher.stop()

    assert [r["responder_id"] for r in found] == [who.responder_id]


async def _status(locator: Locator, who: Registered) -> str:
    """The responder's status as the locator tells a dispatcher."""
    answer = await locator.dispatcher.get(f"/v1/responders/{who.responder_id}")
    return str(answer.json()["status"])


async def _has_status(locator: Locator, who: Registered, expected: str) -> bool:
    return await _status(locator, who) == expected


async def test_a_booking_dispatch_no_longer_lists_lapses_after_the_grace(infra: Infra) -> None:
    publisher = KafkaPublisher(infra.kafka, client_id="dispatch-test")
    await publisher.start()
    await publisher.wait_connected(10)
    try:
        async with running_locator(infra) as locator:
            kept, forgotten = await locator.register(), await locator.register()
            await locator.place(kept, offset(ORIGIN, north_m=100))
            await locator.place(forgotten, offset(ORIGIN, north_m=200))
            for who in (kept, forgotten):
                await publish_event(
                    publisher,
                    AvailabilityChanged(
                        responder_id=uuid.UUID(who.responder_id),
                        status="busy",
                        incident_id=uuid.uuid4(),
                    ),
                )

            await eventually(lambda: _has_status(locator, forgotten, "busy"))
            await eventually(lambda: _has_status(locator, kept, "busy"))
            # Dispatch's truth lists only ``kept``: the free ``AvailabilityChanged`` for
            # ``forgotten`` was lost, say. The forgotten booking lapses after the grace.
            await publish_event(
                publisher,
                BookingsReconciled(
                    taken_at=datetime.now(UTC),
                    responder_ids=(uuid.UUID(kept.responder_id),),
                    grace_s=1.0,
                ),
            )
            await eventually(lambda: _has_status(locator, forgotten, "free"), timeout=15)
            found = await locator.nearest()
            kept_status = await _status(locator, kept)
    finally:
        await publisher.stop()

    assert [r["responder_id"] for r in found] == [forgotten.responder_id]
    assert kept_status == "busy"
