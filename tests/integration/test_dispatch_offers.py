"""The dispatch engine on the real broker and Redis, with the real volunteer-locator:
reports become offers to the nearest responder, who accept, decline or stay silent,
and nobody is ever booked twice."""

from __future__ import annotations

import uuid

from tests.harness import Infra, eventually
from tests.integration.dispatch_stack import DISPATCHER, HERE, gather, north, running_stack


async def test_a_report_reaches_the_nearest_responders_offer(infra: Infra) -> None:
    async with running_stack(infra) as stack:
        near = await stack.add_responder("volunteer", north(HERE, 100))
        far = await stack.add_responder("volunteer", north(HERE, 600))

        incident_id = await stack.incident_of(await stack.report("other", HERE))

        (offered,) = await stack.offers(incident_id=incident_id)
        assert offered.payload["responder_id"] == str(near.responder_id)
        offer_id = offered.payload["offer_id"]
        await stack.wait_locator_status(near, "offered")

        # Only the offered responder may answer.
        assert await stack.answer(far, offer_id, "accept") == 403
        assert await stack.answer(near, offer_id, "accept") == 200
        assert await stack.answer(near, offer_id, "accept") == 409
        await stack.wait_locator_status(near, "busy")

        detail = await stack.detail(incident_id)
        assert [(u["responder_id"], u["status"]) for u in detail["units"]] == [
            (str(near.responder_id), "assigned")
        ]
        assert detail["milestones"][0]["stage"] == "T1"
        assert detail["milestones"][0]["state"] == "met"

        # The responder drives the rest of the clocks and, once cleared, is free again.
        path = f"/v1/incidents/{incident_id}/units/{near.responder_id}/status"
        async with stack.dispatch.client(near.token) as app:
            for status in ("en_route", "on_scene", "cleared"):
                answer = await app.post(path, json={"status": status})
                assert answer.status_code == 200, answer.text
        async with stack.dispatch.client(far.token) as other:
            assert (await other.post(path, json={"status": "on_scene"})).status_code == 403
        await stack.wait_locator_status(near, "free")
        detail = await stack.detail(incident_id)
        assert {m["stage"]: m["state"] for m in detail["milestones"]} == {
            "T1": "met",
            "T3": "met",
            "T5": "met",
        }
        assert [t["type"] for t in detail["timeline"]][:2] == ["IncidentOpened", "ResponderOffered"]


async def test_a_decline_goes_to_the_next_nearest(infra: Infra) -> None:
    async with running_stack(infra) as stack:
        first = await stack.add_responder("volunteer", north(HERE, 100))
        second = await stack.add_responder("volunteer", north(HERE, 300))
        incident_id = await stack.incident_of(await stack.report("other", HERE))
        (offered,) = await stack.offers(incident_id=incident_id)
        assert offered.payload["responder_id"] == str(first.responder_id)

        assert await stack.answer(first, offered.payload["offer_id"], "decline") == 200

        offers = await stack.offers(incident_id=incident_id, count=2)
        assert offers[1].payload["responder_id"] == str(second.responder_id)
        # The locator frees the first responder, but they are not asked again.
        await stack.wait_locator_status(first, "free")
        assert await stack.answer(second, offers[1].payload["offer_id"], "decline") == 200
        await eventually(lambda: stack.events("NoResponderAvailable", incident_id=incident_id))
        asked = [e.payload["responder_id"] for e in await stack.events("ResponderOffered")]
        assert asked == [str(first.responder_id), str(second.responder_id)]


async def test_silence_expires_the_offer_and_moves_on(infra: Infra) -> None:
    async with running_stack(infra, offer_timeout_s=1.5) as stack:
        first = await stack.add_responder("volunteer", north(HERE, 100))
        second = await stack.add_responder("volunteer", north(HERE, 300))
        incident_id = await stack.incident_of(await stack.report("other", HERE))
        (offered,) = await stack.offers(incident_id=incident_id)
        assert offered.payload["responder_id"] == str(first.responder_id)

        offers = await stack.offers(incident_id=incident_id, count=2)

        assert offers[1].payload["responder_id"] == str(second.responder_id)
        (expired,) = await stack.events("OfferExpired", incident_id=incident_id)
        assert expired.payload["offer_id"] == offered.payload["offer_id"]
        assert await stack.answer(first, offered.payload["offer_id"], "accept") == 409
        await stack.wait_locator_status(first, "free")


async def test_two_simultaneous_reports_never_share_one_free_responder(infra: Infra) -> None:
    async with running_stack(infra) as stack:
        only = await stack.add_responder("volunteer", north(HERE, 50))

        reports = await gather(
            stack.report("other", north(HERE, 0)), stack.report("fraud", north(HERE, 100))
        )
        incidents = [await stack.incident_of(r) for r in reports]

        (offered,) = await stack.offers(responder_id=only.responder_id)
        assert uuid.UUID(offered.payload["incident_id"]) in incidents
        (other,) = [i for i in incidents if str(i) != offered.payload["incident_id"]]
        await eventually(lambda: stack.events("NoResponderAvailable", incident_id=other))
        assert len(await stack.events("ResponderOffered")) == 1
        async with stack.dispatch.client(DISPATCHER) as desk:
            queue = (await desk.get("/v1/incidents", params={"status": "open"})).json()
        assert queue[0]["incident_id"] == str(other)
        assert queue[0]["no_responder"] is True


async def test_a_duplicate_report_joins_the_open_incident(infra: Infra) -> None:
    async with running_stack(infra) as stack:
        first = await stack.incident_of(await stack.report("theft", north(HERE, 0)))
        second_report = await stack.report("theft", north(HERE, 60))

        assert await stack.incident_of(second_report) == first
        (merged,) = await stack.events("ReportMerged")
        assert merged.payload["report_id"] == str(second_report)
        assert len((await stack.detail(first))["reports"]) == 2
        async with stack.dispatch.client(DISPATCHER) as desk:
            queue = (await desk.get("/v1/incidents", params={"status": "open"})).json()
        assert [i["incident_id"] for i in queue] == [str(first)]


async def test_an_escalated_incident_is_offered_when_someone_comes_on_duty(infra: Infra) -> None:
    async with running_stack(infra) as stack:
        incident_id = await stack.incident_of(await stack.report("other", HERE))
        await eventually(lambda: stack.events("NoResponderAvailable", incident_id=incident_id))
        async with stack.dispatch.client(DISPATCHER) as desk:
            queue = (await desk.get("/v1/incidents", params={"status": "open"})).json()
            assert (
                await desk.get("/v1/incidents", params={"status": "nonsense"})
            ).status_code == 422
        assert queue[0]["no_responder"] is True

        arriving = await stack.add_responder("patrol", north(HERE, 700), travel_mode="car")

        (offered,) = await stack.offers(incident_id=incident_id, timeout=15)
        assert offered.payload["responder_id"] == str(arriving.responder_id)
        assert (await stack.detail(incident_id))["no_responder"] is False
        assert len(await stack.events("NoResponderAvailable")) == 1
