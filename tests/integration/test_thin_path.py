"""The thin path through the real broker: a report posted to intake becomes an
incident that dispatch serves on its queue."""

from __future__ import annotations

import httpx

from services.dispatch.app import create_app as create_dispatch
from services.dispatch.settings import DispatchSettings
from services.intake.app import create_app as create_intake
from services.intake.settings import IntakeSettings
from shared.auth import ALL_SERVICES, Role, mint_token
from shared.events import REPORTS
from tests.harness import AUTH_SECRET, Infra, TopicReader, eventually, serve


async def test_report_becomes_an_incident_on_the_queue(infra: Infra) -> None:
    async with (
        serve(create_intake(infra.settings(IntakeSettings, "intake"))) as intake,
        serve(create_dispatch(infra.settings(DispatchSettings, "dispatch"))) as dispatch,
    ):
        async with intake.client() as client:
            answer = await client.post(
                "/v1/reports",
                json={"category": "theft", "location": {"lat": 22.54, "lon": 114.05}},
            )
        assert answer.status_code == 202, answer.text
        report_id = answer.json()["report_id"]

        dispatcher = mint_token(secret=AUTH_SECRET, role=Role.DISPATCHER, subject="desk-1")

        async def incident_listed() -> list[dict[str, object]]:
            async with dispatch.client(dispatcher) as client:
                queue = (await client.get("/v1/incidents", params={"status": "open"})).json()
            return [i for i in queue if i["category"] == "theft"]

        listed = await eventually(incident_listed, timeout=5)
        assert len(listed) == 1

        on_topic = await TopicReader(infra.kafka, REPORTS).read_all()
        assert [e.payload["report_id"] for e in on_topic] == [report_id]


async def test_queue_refuses_callers_without_a_dispatcher_token(infra: Infra) -> None:
    # Good at dispatch (audience), so it is the role that is refused.
    reporter_token = mint_token(
        secret=AUTH_SECRET, role=Role.REPORTER, subject="r", audience=ALL_SERVICES
    )
    async with (
        serve(create_dispatch(infra.settings(DispatchSettings, "dispatch"))) as dispatch,
        httpx.AsyncClient(base_url=dispatch.base_url) as client,
    ):
        anonymous = await client.get("/v1/incidents")
        reporter = await client.get(
            "/v1/incidents", headers={"authorization": f"Bearer {reporter_token}"}
        )
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "unauthorized"
    assert reporter.status_code == 403
