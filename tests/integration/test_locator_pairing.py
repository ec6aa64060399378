"""Pairing a responder's phone: a dispatcher issues a short code, the phone trades it once
for the responder's token; codes lapse, work once and cannot be guessed in bulk."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from services.volunteer_locator.pairing import ALPHABET
from shared.auth import Role, verify_token
from tests.harness import AUTH_SECRET, Infra
from tests.integration.locator_support import running_locator


async def test_a_phone_trades_a_pairing_code_once_for_the_responders_token(infra: Infra) -> None:
    async with running_locator(infra) as locator:
        who = await locator.register(on_duty=False)
        issued = await locator.dispatcher.post(f"/v1/responders/{who.responder_id}/pairing")
        assert issued.status_code == 201, issued.text
        body = issued.json()
        code = body["code"]
        assert len(code) == 8
        assert set(code) <= set(ALPHABET)  # no 0/O or 1/I/L to misread
        assert body["url"].endswith(f"/responder/#code={code}")
        assert body["qr_svg"].startswith("<svg")
        async with locator.running.client() as phone:
            traded = await phone.post(f"/v1/pairing/{code.lower()}")
            assert traded.status_code == 200, traded.text
            assert traded.json()["responder_id"] == who.responder_id
            token = traded.json()["token"]
            again = await phone.post(f"/v1/pairing/{code}")
            assert again.status_code == 404, again.text
            assert again.json()["error"]["code"] == "not_found"
        principal = verify_token(token, secret=AUTH_SECRET, audience="volunteer-locator")
        assert principal.is_(Role.RESPONDER, who.responder_id)
        # The token works as the one registration gave: the phone goes on duty.
        async with locator.running.client(token) as phone:
            duty = await phone.put(
                f"/v1/responders/{who.responder_id}/duty", json={"on_duty": True}
            )
            assert duty.status_code == 200, duty.text


async def test_two_phones_racing_with_one_code_get_one_token(infra: Infra) -> None:
    async with running_locator(infra) as locator:
        who = await locator.register(on_duty=False)
        code = (await locator.dispatcher.post(f"/v1/responders/{who.responder_id}/pairing")).json()[
            "code"
        ]
        async with locator.running.client() as phone:
            answers = await asyncio.gather(*(phone.post(f"/v1/pairing/{code}") for _ in range(5)))
        assert sorted(a.status_code for a in answers) == [200, 404, 404, 404, 404]


async def test_a_pairing_code_lapses(infra: Infra) -> None:
    async with running_locator(infra, pairing_ttl_s=1) as locator:
        who = await locator.register(on_duty=False)
        code = (await locator.dispatcher.post(f"/v1/responders/{who.responder_id}/pairing")).json()[
            "code"
        ]
        await asyncio.sleep(1.5)
        async with locator.running.client() as phone:
            lapsed = await phone.post(f"/v1/pairing/{code}")
        assert lapsed.status_code == 404, lapsed.text


async def test_guessing_codes_is_rate_limited(infra: Infra) -> None:
    async with running_locator(infra, pairing_attempts_per_window=3) as locator:
        who = await locator.register(on_duty=False)
        code = (await locator.dispatcher.post(f"/v1/responders/{who.responder_id}/pairing")).json()[
            "code"
        ]
        async with locator.running.client() as phone:
            for guess in ("AAAAAAAA", "BBBBBBBB", "CCCCCCCC"):
                assert (await phone.post(f"/v1/pairing/{guess}")).status_code == 404
            refused = await phone.post(f"/v1/pairing/{code}")
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["code"] == "rate_limited"


async def test_only_a_dispatcher_issues_codes_and_only_for_someone_registered(
    infra: Infra,
) -> None:
    async with running_locator(infra) as locator:
        who = await locator.register(on_duty=False)
        async with locator.as_responder(who) as phone:
            own = await phone.post(f"/v1/responders/{who.responder_id}/pairing")
        assert own.status_code == 403, own.text
        async with httpx.AsyncClient(base_url=locator.running.base_url) as anonymous:
            assert (
                await anonymous.post(f"/v1/responders/{who.responder_id}/pairing")
            ).status_code == 401
        unknown = await locator.dispatcher.post(f"/v1/responders/{uuid.uuid4()}/pairing")
        assert unknown.status_code == 404, unknown.text
