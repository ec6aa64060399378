"""A claim's decision trace through the real locator and Redis: the top candidates, and
every closer responder passed over with the reason the desk would want to know."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from services.volunteer_locator.geo import offset
from tests.harness import Infra
from tests.integration.locator_support import ORIGIN, running_locator


async def test_a_traced_claim_names_each_closer_responder_and_why_they_were_passed_over(
    infra: Infra,
) -> None:
    async with running_locator(infra) as locator:
        busy = await locator.register()
        patrol = await locator.register(kind="patrol")
        declined = await locator.register()
        stale = await locator.register()
        resting = await locator.register(on_duty=False)
        revoked = await locator.register()
        chosen = await locator.register(travel_mode="bicycle", skills=["first_aid"])
        walker = await locator.register(skills=["first_aid"])
        busy_skilled = await locator.register(skills=["first_aid"])
        await locator.place(busy_skilled, offset(ORIGIN, north_m=50))
        await locator.place(busy, offset(ORIGIN, north_m=100))
        await locator.place(patrol, offset(ORIGIN, north_m=150))
        await locator.place(declined, offset(ORIGIN, north_m=200))
        old = datetime.now(UTC) - timedelta(minutes=10)
        await locator.place(stale, offset(ORIGIN, north_m=250), recorded_at=old)
        await locator.place(resting, offset(ORIGIN, east_m=120))
        await locator.place(revoked, offset(ORIGIN, east_m=140))
        await locator.place(walker, offset(ORIGIN, east_m=300))
        await locator.place(chosen, offset(ORIGIN, north_m=400))
        answer = await locator.dispatcher.post(f"/v1/responders/{revoked.responder_id}/revoke")
        assert answer.status_code == 200, answer.text
        # Someone else's incident holds the nearest first-aider.
        other = await locator.claim(
            offset(ORIGIN, north_m=50), kinds=["volunteer"], skills=["first_aid"]
        )
        assert other.json()["responder_id"] == busy_skilled.responder_id

        traced = await locator.claim(
            kinds=["volunteer"],
            skills=["first_aid"],
            exclude=[declined.responder_id],
            trace=True,
        )
        plain = await locator.claim(kinds=["volunteer"], incident_id=str(uuid.uuid4()))

    assert traced.status_code == 200, traced.text
    body = traced.json()
    assert body["responder_id"] == chosen.responder_id
    trace = body["trace"]
    # Fewer than five eligible anywhere: the search went out to its last step.
    assert trace["radius_step"] == 5
    assert trace["radius_m"] == body["radius_m"]
    candidates = {c["responder_id"]: c for c in trace["candidates"]}
    assert candidates[chosen.responder_id]["outcome"] == "claimed"
    assert candidates[chosen.responder_id]["skills"] == ["first_aid"]
    assert candidates[walker.responder_id]["outcome"] == "ranked_lower"
    reasons = {p["responder_id"]: p["reason"] for p in trace["passed_over"]}
    assert reasons == {
        busy_skilled.responder_id: "busy",
        busy.responder_id: "wrong_skill",
        patrol.responder_id: "wrong_kind",
        declined.responder_id: "excluded",
        stale.responder_id: "stale_position",
        resting.responder_id: "off_duty",
        revoked.responder_id: "revoked",
    }
    assert "trace" not in plain.json() or plain.json()["trace"] is None
