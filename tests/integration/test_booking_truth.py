"""One truth about who is booked, on the real broker and Redis with the real locator:
Redis coming back empty is noticed and rebuilt without a restart, and a locator that
forgot a booking never gets that responder booked twice."""

from __future__ import annotations

import uuid

from tests.harness import Infra, eventually
from tests.integration.dispatch_stack import (
    HERE,
    SERVICE,
    Responder,
    Stack,
    north,
    running_stack,
)

# Far enough from HERE that its report is never merged with one at HERE.
ELSEWHERE = north(HERE, 3000)


async def ping(stack: Stack, responder: Responder, at: tuple[float, float]) -> None:
    async with stack.locator.client(responder.token) as app:
        answer = await app.post(
            f"/v1/responders/{responder.responder_id}/location", json={"lat": at[0], "lon": at[1]}
        )
    assert answer.status_code == 202, answer.text


async def accept_first_offer(stack: Stack, responder: Responder, incident_id: uuid.UUID) -> None:
    (offered,) = await stack.offers(incident_id=incident_id)
    assert offered.payload["responder_id"] == str(responder.responder_id)
    assert await stack.answer(responder, offered.payload["offer_id"], "accept") == 200
    await stack.wait_locator_status(responder, "busy")


async def test_after_redis_comes_back_empty_a_report_next_to_a_pinging_responder_gets_an_offer(
    infra: Infra,
) -> None:
    async with running_stack(infra) as stack:
        responder = await stack.add_responder("volunteer", north(HERE, 100))
        await infra.flush_redis()
        await ping(stack, responder, north(HERE, 100))

        incident_id = await stack.incident_of(await stack.report("other", HERE))

        (offered,) = await stack.offers(incident_id=incident_id, timeout=20)
        assert offered.payload["responder_id"] == str(responder.responder_id)


async def test_after_redis_comes_back_empty_a_responder_is_found_before_their_next_ping(
    infra: Infra,
) -> None:
    async with running_stack(infra) as stack:
        responder = await stack.add_responder("volunteer", north(HERE, 100))
        await infra.flush_redis()

        # The rebuilt index places them where the database last saw them.
        await stack.wait_locator_status(responder, "free", timeout=20)


async def test_after_redis_comes_back_empty_a_booked_responder_is_busy_again(
    infra: Infra,
) -> None:
    async with running_stack(infra) as stack:
        booked = await stack.add_responder("volunteer", north(HERE, 100))
        await accept_first_offer(
            stack, booked, await stack.incident_of(await stack.report("other", HERE))
        )

        await infra.flush_redis()

        # Dispatch restates its bookings when the locator asks after its rebuild.
        await stack.wait_locator_status(booked, "busy", timeout=20)


async def test_a_responder_the_locator_forgot_is_booked_is_skipped_and_restated(
    infra: Infra,
) -> None:
    async with running_stack(infra) as stack:
        booked = await stack.add_responder("volunteer", ELSEWHERE)
        other = await stack.add_responder("volunteer", north(ELSEWHERE, 800))
        first = await stack.incident_of(await stack.report("other", ELSEWHERE))
        await accept_first_offer(stack, booked, first)

        # The locator's index drifts: it holds the booked responder as free again.
        async with stack.locator.client(SERVICE) as caller:
            answer = await caller.post(
                "/v1/claims/release",
                json={"responder_id": str(booked.responder_id), "incident_id": str(first)},
            )
        assert answer.json()["released"] is True
        await stack.wait_locator_status(booked, "free")

        second = await stack.incident_of(await stack.report("other", north(ELSEWHERE, 20 + 200)))

        # The next nearest is offered at once, and the locator hears the booking again.
        (offered,) = await stack.offers(incident_id=second)
        assert offered.payload["responder_id"] == str(other.responder_id)
        await stack.wait_locator_status(booked, "busy")
        detail = await stack.detail(second)
        assert detail["no_responder"] is False


async def test_a_responder_is_never_offered_while_booked_elsewhere(infra: Infra) -> None:
    async with running_stack(infra) as stack:
        booked = await stack.add_responder("volunteer", ELSEWHERE)
        first = await stack.incident_of(await stack.report("other", ELSEWHERE))
        await accept_first_offer(stack, booked, first)
        async with stack.locator.client(SERVICE) as caller:
            released = await caller.post(
                "/v1/claims/release",
                json={"responder_id": str(booked.responder_id), "incident_id": str(first)},
            )
        assert released.json()["released"] is True

        second = await stack.incident_of(await stack.report("other", north(ELSEWHERE, 400)))

        # Nobody else is near: the incident is flagged, never offered to the booked one.
        async def flagged() -> bool:
            return bool((await stack.detail(second))["no_responder"])

        await eventually(flagged, timeout=10)
        assert await stack.events("ResponderOffered", incident_id=second) == []
