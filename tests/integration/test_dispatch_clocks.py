"""The 1-3-5 clocks, the live queue stream and restarts, on the real broker, Redis and
volunteer-locator."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta

import httpx

from shared.auth import ALL_SERVICES, Role, mint_token
from tests.harness import AUTH_SECRET, Infra
from tests.integration.dispatch_stack import (
    DISPATCHER,
    HERE,
    dispatch_settings,
    north,
    running_stack,
    serve_dispatch,
    stack_without_dispatch,
)


async def test_a_target_breach_fires_at_the_deadline_while_the_incident_is_open(
    infra: Infra,
) -> None:
    async with running_stack(infra, target_overrides_s={"T1": 2}) as stack:
        incident_id = await stack.incident_of(await stack.report("other", HERE))
        opened = (await stack.events("IncidentOpened", incident_id=incident_id))[0]

        breaches = await stack.incidents.wait_for(
            lambda e: e.type == "TargetBreached" and e.payload["incident_id"] == str(incident_id),
            timeout=10,
        )

        (breach,) = breaches
        assert breach.payload["stage"] == "T1"
        received_at = opened.payload["received_at"]
        due = datetime.fromisoformat(received_at) + timedelta(seconds=2)
        assert breach.occurred_at >= due
        detail = await stack.detail(incident_id)
        assert detail["status"] == "open"
        assert detail["milestones"][0]["state"] == "breached"
        async with stack.dispatch.client() as anyone:
            metrics = (await anyone.get("/metrics")).text
        assert 'dispatch_targets_breached_total{category="other",grid="none",stage="T1"} 1.0' in (
            metrics
        )


async def test_the_queue_stream_pushes_every_change(infra: Infra) -> None:
    async with running_stack(infra) as stack:
        url = f"{stack.dispatch.base_url}/v1/queue/stream"
        # Good at dispatch (audience), so it is the role that is refused.
        reporter = mint_token(
            secret=AUTH_SECRET, role=Role.REPORTER, subject="r", audience=ALL_SERVICES
        )
        async with httpx.AsyncClient(timeout=10) as client:
            refused = await client.get(url, params={"access_token": reporter})
            assert refused.status_code == 403
            page = await client.get(f"{stack.dispatch.base_url}/console")
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            async with client.stream("GET", url, params={"access_token": DISPATCHER}) as stream:
                lines = stream.aiter_lines()
                assert await anext(lines) == "event: queue"
                assert json.loads((await anext(lines)).removeprefix("data: ")) == []
                report_id = await stack.report("other", HERE)
                incident_id = await stack.incident_of(report_id)
                async for line in lines:
                    if line.startswith("data: ") and str(incident_id) in line:
                        change = json.loads(line.removeprefix("data: "))
                        assert "IncidentOpened" in change["events"]
                        break


async def test_a_restart_mid_offer_loses_nothing_and_books_nobody_twice(infra: Infra) -> None:
    async with stack_without_dispatch(infra) as stack:
        first = await stack.add_responder("volunteer", north(HERE, 100))
        second = await stack.add_responder("volunteer", north(HERE, 300))
        settings = dispatch_settings(infra, stack.locator, offer_timeout_s=3)
        async with serve_dispatch(stack, settings):
            report_id = await stack.report("other", HERE)
            incident_id = await stack.incident_of(report_id)
            (offered,) = await stack.offers(incident_id=incident_id)
            assert offered.payload["responder_id"] == str(first.responder_id)
        # Dispatch is down mid-offer, and the offer lapses while nobody is running.
        await asyncio.sleep(3.5)
        assert await stack.events("OfferExpired") == []

        async with serve_dispatch(stack, settings) as dispatch:
            offers = await stack.offers(incident_id=incident_id, count=2)
            assert offers[1].payload["responder_id"] == str(second.responder_id)
            (expired,) = await stack.events("OfferExpired", incident_id=incident_id)
            assert expired.payload["offer_id"] == offered.payload["offer_id"]
            await stack.wait_locator_status(first, "free")
            await stack.wait_locator_status(second, "offered")

            detail = await stack.detail(incident_id)
            assert detail["status"] == "open"
            assert [r["report_id"] for r in detail["reports"]] == [str(report_id)]
            pending = [o for o in detail["offers"] if o["status"] == "pending"]
            assert [o["responder_id"] for o in pending] == [str(second.responder_id)]
            async with dispatch.client(DISPATCHER) as desk:
                queue = (await desk.get("/v1/incidents", params={"status": "open"})).json()
            assert [i["incident_id"] for i in queue] == [str(incident_id)]
            assert len(await stack.events("IncidentOpened")) == 1
            assert await stack.answer(second, offers[1].payload["offer_id"], "accept") == 200
            await stack.wait_locator_status(second, "busy")
