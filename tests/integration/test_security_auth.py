"""Internal APIs, audiences, revocation, query tokens and stream caps on the real broker,
Redis and database, with all four services running."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import httpx

from shared.auth import LOCATOR, NOTIFICATION, Role, mint_token
from tests.harness import AUTH_SECRET, Infra, RunningApp, eventually
from tests.integration.all_services import all_services
from tests.integration.dispatch_stack import DISPATCHER, HERE, Stack, north, running_stack
from tests.integration.locator_support import ORIGIN, running_locator
from tests.integration.notification_support import notification


async def test_claims_take_the_service_role_only_and_holds_are_capped(infra: Infra) -> None:
    async with running_locator(infra, claim_hold_s=1) as locator:
        who = await locator.register()
        await locator.place(who, ORIGIN)
        body = {"incident_id": str(uuid.uuid4()), "lat": ORIGIN.lat, "lon": ORIGIN.lon}

        refused = await locator.dispatcher.post("/v1/claims", json=body)
        assert refused.status_code == 403, refused.text
        release = {"responder_id": who.responder_id, "incident_id": body["incident_id"]}
        assert (
            await locator.dispatcher.post("/v1/claims/release", json=release)
        ).status_code == 403
        async with locator.as_responder(who) as phone:
            assert (await phone.post("/v1/claims", json=body)).status_code == 403
        # A service token minted for another service is not good here at all.
        elsewhere = mint_token(
            secret=AUTH_SECRET, role=Role.SERVICE, subject="x", audience=(NOTIFICATION,)
        )
        async with locator.running.client(elsewhere) as other:
            assert (await other.post("/v1/claims", json=body)).status_code == 401

        granted = await locator.claim(ORIGIN, incident_id=body["incident_id"], hold_s=3600)
        assert granted.status_code == 200, granted.text
        assert granted.json()["hold_s"] == 1
        # The hold lapses after the configured second, not the hour asked for.

        async def claimable_again() -> bool:
            return (await locator.claim(ORIGIN)).status_code == 200

        await eventually(claimable_again, timeout=15, interval=0.2)


async def test_access_token_in_the_query_is_refused_off_the_live_streams(infra: Infra) -> None:
    async with all_services(infra) as services:
        token = DISPATCHER
        for service, path in [
            ("dispatch", "/v1/incidents"),
            ("volunteer-locator", "/v1/responders"),
            ("notification", "/v1/deliveries"),
        ]:
            async with services[service].client() as client:
                answer = await client.get(path, params={"access_token": token})
            assert answer.status_code == 401, (service, answer.text)
            async with services[service].client(token) as client:
                assert (await client.get(path)).status_code == 200, service


@contextlib.asynccontextmanager
async def open_stream(app: RunningApp, path: str, token: str) -> AsyncIterator[httpx.Response]:
    """A live stream opened with ``?access_token=``, as a browser's EventSource would."""
    async with (
        app.client() as client,
        client.stream("GET", path, params={"access_token": token}) as response,
    ):
        yield response


async def test_live_streams_are_capped_per_caller(infra: Infra) -> None:
    async with notification(infra, max_streams_per_caller=2) as notifier:
        path = "/v1/dispatchers/stream"
        async with (
            open_stream(notifier, path, DISPATCHER) as one,
            open_stream(notifier, path, DISPATCHER) as two,
        ):
            assert (one.status_code, two.status_code) == (200, 200)
            async with open_stream(notifier, path, DISPATCHER) as three:
                assert three.status_code == 429
                assert int(three.headers["retry-after"]) > 0
                await three.aread()
                assert three.json()["error"]["code"] == "too_many_streams"
            other = mint_token(secret=AUTH_SECRET, role=Role.DISPATCHER, subject="desk-2")
            async with open_stream(notifier, path, other) as someone_else:
                assert someone_else.status_code == 200

        # Closed streams give their slots back.
        async def reopens() -> bool:
            async with open_stream(notifier, path, DISPATCHER) as again:
                return again.status_code == 200

        await eventually(reopens, timeout=10, interval=0.1)


async def _status(app: RunningApp, token: str, method: str, path: str) -> int:
    async with app.client(token) as client:
        return (await client.request(method, path)).status_code


async def test_a_revoked_responder_is_refused_everywhere_and_the_offer_moves_on(
    infra: Infra,
) -> None:
    async with all_services(infra) as services:
        stack = Stack(
            infra, services["intake"], services["volunteer-locator"], services["dispatch"]
        )
        lost = await stack.add_responder("volunteer", north(HERE, 100))
        backup = await stack.add_responder("volunteer", north(HERE, 400))
        rid = lost.responder_id
        incident_id = await stack.incident_of(await stack.report("other", HERE))
        (offered,) = await stack.offers(incident_id=incident_id)
        assert offered.payload["responder_id"] == str(rid)
        notifier = services["notification"]

        # The phone's live stream is open when the phone is lost.
        stream_path = f"/v1/responders/{rid}/stream"
        async with open_stream(notifier, stream_path, lost.token) as live:
            assert live.status_code == 200
            async with stack.locator.client(DISPATCHER) as desk:
                revoked = await desk.post(f"/v1/responders/{rid}/revoke")
            assert revoked.status_code == 200, revoked.text
            assert revoked.json()["on_duty"] is False

            # The open stream is ended (the read finishes instead of waiting forever).
            async def drained() -> bool:
                async for _ in live.aiter_bytes():
                    pass
                return True

            await asyncio.wait_for(drained(), timeout=15)

        checks = [
            (stack.locator, "GET", f"/v1/responders/{rid}"),
            (stack.dispatch, "POST", f"/v1/offers/{offered.payload['offer_id']}/accept"),
            (notifier, "GET", stream_path),
        ]
        for app, method, path in checks:

            async def refused(app: RunningApp = app, method: str = method, p: str = path) -> bool:
                return await _status(app, lost.token, method, p) == 401

            await eventually(refused, timeout=10, interval=0.05)

        # Off duty and out of the index: nearest never returns them.
        async with stack.locator.client(DISPATCHER) as desk:
            me = (await desk.get(f"/v1/responders/{rid}")).json()
            assert me["on_duty"] is False
            near = await desk.get("/v1/responders/nearest", params={"lat": HERE[0], "lon": HERE[1]})
        assert str(rid) not in [r["responder_id"] for r in near.json()]

        # The pending offer is withdrawn and the incident offered to the next nearest.
        withdrawn = await stack.incidents.wait_for(
            lambda e: e.type == "OfferWithdrawn" and e.payload["responder_id"] == str(rid),
            timeout=15,
        )
        assert withdrawn[0].payload["reason"] == "responder_revoked"
        (reoffered,) = await stack.offers(incident_id=incident_id, responder_id=backup.responder_id)
        assert reoffered.payload["incident_id"] == str(incident_id)

        # A new token for the same responder works everywhere again.
        async with stack.locator.client(DISPATCHER) as desk:
            issued = await desk.post(f"/v1/responders/{rid}/token")
        assert issued.status_code == 200, issued.text
        fresh = issued.json()["token"]
        assert await _status(stack.locator, fresh, "GET", f"/v1/responders/{rid}") == 200

        async def works_at_dispatch() -> bool:
            # 404: past the auth check, there is simply no such offer.
            return (
                await _status(stack.dispatch, fresh, "POST", f"/v1/offers/{uuid.uuid4()}/accept")
                == 404
            )

        await eventually(works_at_dispatch, timeout=10)
        async with open_stream(notifier, stream_path, fresh) as again:
            assert again.status_code == 200
        # The old token stays refused.
        assert await _status(stack.locator, lost.token, "GET", f"/v1/responders/{rid}") == 401


async def test_a_responder_token_is_not_good_at_intake(infra: Infra) -> None:
    async with running_stack(infra) as stack:
        responder = await stack.add_responder("volunteer", north(HERE, 100))
        report_id = await stack.report("other", HERE)
        assert (
            await _status(stack.intake, responder.token, "GET", f"/v1/reports/{report_id}") == 401
        )
        only_locator = mint_token(
            secret=AUTH_SECRET,
            role=Role.RESPONDER,
            subject=str(responder.responder_id),
            audience=(LOCATOR,),
        )
        path = f"/v1/offers/{uuid.uuid4()}/accept"
        assert await _status(stack.dispatch, only_locator, "POST", path) == 401
