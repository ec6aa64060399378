"""The responder registry: who may register, see and change whom, and the events it
announces through the outbox."""

from __future__ import annotations

import uuid

from services.volunteer_locator.app import create_app
from services.volunteer_locator.geo import offset
from services.volunteer_locator.settings import LocatorSettings
from shared.events import RESPONDER_STATUS
from tests.harness import Infra, TopicReader, eventually, serve
from tests.integration.locator_support import DISPATCHER, ORIGIN, running_locator


async def test_registration_returns_a_token_and_announces_the_responder(infra: Infra) -> None:
    async with running_locator(infra) as locator:
        who = await locator.register(kind="auxiliary", travel_mode="bicycle", skills=["first_aid"])
        async with locator.as_responder(who) as client:
            own = await client.get(f"/v1/responders/{who.responder_id}")
            off = await client.put(
                f"/v1/responders/{who.responder_id}/duty", json={"on_duty": False}
            )
        events = await TopicReader(infra.kafka, RESPONDER_STATUS).wait_for(
            lambda e: e.payload["responder_id"] == who.responder_id, count=3
        )

    assert own.status_code == 200
    body = own.json()
    assert body["kind"] == "auxiliary"
    assert body["travel_mode"] == "bicycle"
    assert body["skills"] == ["first_aid"]
    assert body["on_duty"] is True
    assert body["status"] == "free"
    assert off.json()["on_duty"] is False
    assert [e.type for e in events] == ["ResponderRegistered", "DutyChanged", "DutyChanged"]
    assert [e.payload.get("on_duty") for e in events[1:]] == [True, False]


async def test_the_registry_refuses_what_a_caller_may_not_do(infra: Infra) -> None:
    async with running_locator(infra) as locator:
        alice = await locator.register()
        bob = await locator.register()
        async with locator.as_responder(alice) as client:
            see_bob = await client.get(f"/v1/responders/{bob.responder_id}")
            bench_bob = await client.put(
                f"/v1/responders/{bob.responder_id}/duty", json={"on_duty": False}
            )
            register = await client.post(
                "/v1/responders",
                json={"name": "X", "kind": "volunteer", "travel_mode": "foot"},
            )
            nearest = await client.get(
                "/v1/responders/nearest", params={"lat": ORIGIN.lat, "lon": ORIGIN.lon}
            )
        missing = await locator.dispatcher.get(f"/v1/responders/{uuid.uuid4()}")
        unknown_field = await locator.dispatcher.post(
            "/v1/responders",
            json={"name": "X", "kind": "volunteer", "travel_mode": "foot", "rank": "chief"},
        )
        bad_kind = await locator.dispatcher.post(
            "/v1/responders", json={"name": "X", "kind": "sheriff", "travel_mode": "foot"}
        )
        bob_now = (await locator.dispatcher.get(f"/v1/responders/{bob.responder_id}")).json()

    assert see_bob.status_code == 403
    assert bench_bob.status_code == 403
    assert register.status_code == 403
    assert nearest.status_code == 403
    assert missing.status_code == 404
    assert unknown_field.status_code == 422
    assert unknown_field.json()["error"]["code"] == "invalid_input"
    assert bad_kind.status_code == 422
    assert bob_now["on_duty"] is True


async def test_a_restarted_locator_with_an_empty_redis_rebuilds_its_cache(infra: Infra) -> None:
    settings = infra.settings(LocatorSettings, "locator")
    async with serve(create_app(settings)) as first, first.client(DISPATCHER) as client:
        answer = await client.post(
            "/v1/responders", json={"name": "R", "kind": "patrol", "travel_mode": "car"}
        )
        responder_id = answer.json()["responder_id"]
        token = answer.json()["token"]
        await client.put(f"/v1/responders/{responder_id}/duty", json={"on_duty": True})

    # The same database, but a Redis (another logical db) that has never heard of anyone.
    async with running_locator(
        infra, database_url=settings.database_url, redis_url=infra.redis_db_url(5)
    ) as second:
        async with second.running.client(token) as responder:
            at = offset(ORIGIN, north_m=700)
            posted = await responder.post(
                f"/v1/responders/{responder_id}/location", json={"lat": at.lat, "lon": at.lon}
            )
        found = await eventually(second.nearest)

    assert posted.status_code == 202
    assert [r["responder_id"] for r in found] == [responder_id]
    assert found[0]["kind"] == "patrol"
