"""Review through the real stack: each offer's decision trace from a real claim, the
incident's export as JSON and CSV, and the shift report's route."""

from __future__ import annotations

import csv
import io
import uuid

from shared.auth import Role, mint_token
from tests.harness import AUTH_SECRET, Infra
from tests.integration.dispatch_stack import DISPATCHER, HERE, north, running_stack

OPERATOR = mint_token(secret=AUTH_SECRET, role=Role.OPERATOR, subject="ops-1")


async def test_an_incidents_export_carries_each_offers_trace_as_json_and_safe_csv(
    infra: Infra,
) -> None:
    async with running_stack(infra) as stack:
        first = await stack.add_responder("volunteer", north(HERE, 100))
        patrol = await stack.add_responder("patrol", north(HERE, 50))
        second = await stack.add_responder("volunteer", north(HERE, 400))
        async with stack.intake.client() as citizen:
            posted = await citizen.post(
                "/v1/reports",
                json={
                    "category": "dispute",
                    "location": {"lat": HERE[0], "lon": HERE[1]},
                    "address": '=HYPERLINK("http://evil")',
                },
            )
        assert posted.status_code == 202, posted.text
        incident_id = await stack.incident_of(uuid.UUID(posted.json()["report_id"]))
        offers = await stack.offers(incident_id=incident_id, count=2)
        to_first = next(o for o in offers if o.payload["responder_id"] == str(first.responder_id))
        assert await stack.answer(first, to_first.payload["offer_id"], "decline") == 200
        await stack.offers(incident_id=incident_id, responder_id=second.responder_id)

        path = f"/v1/incidents/{incident_id}/export"
        async with stack.dispatch.client(OPERATOR) as ops:
            as_json = await ops.get(path)
            as_csv = await ops.get(path, params={"format": "csv"})
            unknown = await ops.get(path, params={"format": "xlsx"})
            missing = await ops.get(f"/v1/incidents/{uuid.uuid4()}/export")
        async with stack.dispatch.client(first.token) as responder:
            refused = await responder.get(path)
        async with stack.dispatch.client() as anonymous:
            unauthenticated = await anonymous.get(path)

    assert (refused.status_code, unauthenticated.status_code) == (403, 401)
    assert (unknown.status_code, missing.status_code) == (422, 404)
    assert as_json.status_code == 200, as_json.text
    offers_out = {o["responder_id"]: o for o in as_json.json()["incident"]["offers"]}
    opening = offers_out[str(first.responder_id)]["trace"]
    assert opening["slot"] == 0
    assert {p["responder_id"]: p["reason"] for p in opening["passed_over"]} == {
        str(patrol.responder_id): "wrong_kind"
    }
    retry = offers_out[str(second.responder_id)]["trace"]
    assert {p["responder_id"]: p["reason"] for p in retry["passed_over"]} == {
        str(first.responder_id): "declined_earlier",
        str(patrol.responder_id): "offered_this_incident",
    }
    assert [c["outcome"] for c in retry["candidates"]] == ["claimed"]

    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    (incident_row,) = [r for r in rows if r["record"] == "incident"]
    assert incident_row["detail"] == '\'=HYPERLINK("http://evil")'
    passed = {(r["responder_id"], r["reason"]) for r in rows if r["record"] == "trace_passed_over"}
    assert (str(first.responder_id), "declined_earlier") in passed
    assert {"timeline", "offer", "trace_candidate", "milestone", "report"} <= {
        r["record"] for r in rows
    }


async def test_the_shift_report_answers_json_and_csv_and_refuses_a_bad_range(
    infra: Infra,
) -> None:
    async with running_stack(infra) as stack:
        await stack.add_responder("volunteer", north(HERE, 100))
        incident_id = await stack.incident_of(await stack.report("theft", HERE))
        await stack.offers(incident_id=incident_id)
        window = {"from": "2000-01-01T00:00:00Z", "to": "2000-01-20T00:00:00Z"}
        now = {"from": "2020-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}
        async with stack.dispatch.client(DISPATCHER) as desk:
            empty = await desk.get("/v1/shift-reports", params=window)
            too_long = await desk.get("/v1/shift-reports", params=now)
            backwards = await desk.get(
                "/v1/shift-reports", params={"from": window["to"], "to": window["from"]}
            )
        async with stack.dispatch.client() as anonymous:
            unauthenticated = await anonymous.get("/v1/shift-reports", params=window)

    assert empty.status_code == 200, empty.text
    assert empty.json()["incidents"] == 0
    assert empty.json()["from"].startswith("2000-01-01")
    assert (too_long.status_code, backwards.status_code) == (422, 422)
    assert unauthenticated.status_code == 401
