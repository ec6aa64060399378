"""Intake's door against the real broker and Redis: a report goes out once however
often it is retried, bad input leaves no trace, bursts are limited, and a report is
visible only to its own tracking token."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from sqlalchemy import func
from sqlmodel import select

from services.intake.app import create_app
from services.intake.models import OUTBOX, Report
from services.intake.settings import IntakeSettings
from shared.auth import INTAKE, Role, mint_token
from shared.events import REPORTS
from tests.harness import AUTH_SECRET, Infra, RunningApp, TopicReader, eventually, serve

THEFT = {"category": "theft", "location": {"lat": 22.54, "lon": 114.05}}


async def _rows(intake: RunningApp) -> tuple[int, int]:
    """How many reports and outbox events intake has saved."""
    async with intake.app.state.runtime.sessions() as session:
        reports = (await session.exec(select(func.count()).select_from(Report))).one()
        staged = (await session.exec(select(func.count()).select_from(OUTBOX))).one()
    return int(reports), int(staged)


async def _published(infra: Infra, report_id: str) -> list[str]:
    """The types of the events on ``reports`` about one report."""
    on_topic = await TopicReader(infra.kafka, REPORTS).read_all()
    return [e.type for e in on_topic if e.payload.get("report_id") == report_id]


async def _outbox_drained(intake: RunningApp) -> bool:
    """Whether every staged event has gone out."""
    async with intake.app.state.runtime.sessions() as session:
        pending = select(func.count()).select_from(OUTBOX).where(OUTBOX.c.published_at.is_(None))
        return int((await session.exec(pending)).one()) == 0


def _metric(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_a_report_retried_with_its_key_is_published_exactly_once(infra: Infra) -> None:
    async with serve(create_app(infra.settings(IntakeSettings, "intake"))) as intake:
        key = {"Idempotency-Key": f"app-{uuid.uuid4()}"}
        async with intake.client() as client:
            # Two racing posts with one key, then a late retry with the JSON laid out anew.
            racing = await asyncio.gather(
                client.post("/v1/reports", json=THEFT, headers=key),
                client.post("/v1/reports", json=THEFT, headers=key),
            )
            retry = await client.post(
                "/v1/reports",
                content=b'{"location": {"lon": 114.05, "lat": 22.54},  "category": "theft"}',
                headers={**key, "content-type": "application/json"},
            )
            changed_body = await client.post(
                "/v1/reports", json={**THEFT, "category": "fraud"}, headers=key
            )
            answers = [*racing, retry]
            assert [a.status_code for a in answers] == [202, 202, 202], [a.text for a in answers]
            report_ids = {a.json()["report_id"] for a in answers}
            assert len(report_ids) == 1
            report_id = report_ids.pop()
            assert len({a.json()["received_at"] for a in answers}) == 1

            # Every answer's tracking token follows the one report.
            for answer in answers:
                token = answer.json()["tracking_token"]
                view = await client.get(
                    f"/v1/reports/{report_id}", headers={"authorization": f"Bearer {token}"}
                )
                assert view.status_code == 200
                assert view.json()["report_id"] == report_id

            assert changed_body.status_code == 409
            assert changed_body.json()["error"]["code"] == "idempotency_key_reused"

            metrics = (await client.get("/metrics")).text

        await TopicReader(infra.kafka, REPORTS).wait_for(
            lambda e: e.payload.get("report_id") == report_id
        )
        await eventually(lambda: _outbox_drained(intake))
        assert await _published(infra, report_id) == ["ReportReceived"]
        assert await _rows(intake) == (1, 1)
        assert _metric(metrics, 'intake_reports_total{category="theft",outcome="accepted"}') == 1
        assert _metric(metrics, 'intake_reports_total{category="theft",outcome="duplicate"}') == 2


BAD_INPUTS: list[tuple[str, dict[str, Any], int, str, str]] = [
    # (what, request kwargs, status, error code, words the message must contain)
    (
        "unknown category",
        {"json": {**THEFT, "category": "ufo"}},
        422,
        "unknown_category",
        "category must be one of",
    ),
    (
        "latitude out of range",
        {"json": {"category": "theft", "location": {"lat": 91, "lon": 114.05}}},
        422,
        "invalid_input",
        "location.lat",
    ),
    (
        "longitude out of range",
        {"json": {"category": "theft", "location": {"lat": 22.5, "lon": -180.5}}},
        422,
        "invalid_input",
        "location.lon",
    ),
    (
        "NaN latitude",
        {
            "content": b'{"category": "theft", "location": {"lat": NaN, "lon": 114.05}}',
            "headers": {"content-type": "application/json"},
        },
        422,
        "invalid_input",
        "location.lat",
    ),
    (
        "latitude as a string",
        {"json": {"category": "theft", "location": {"lat": "22.5", "lon": 114.05}}},
        422,
        "invalid_input",
        "location.lat",
    ),
    (
        "description over 2000 characters",
        {"json": {**THEFT, "description": "x" * 2001}},
        422,
        "invalid_input",
        "description",
    ),
    (
        "phone not in E.164",
        {"json": {**THEFT, "reporter": {"phone": "138-0013-8000"}}},
        422,
        "invalid_input",
        "reporter.phone",
    ),
    (
        "unknown top-level field",
        {"json": {**THEFT, "status": "resolved"}},
        422,
        "invalid_input",
        "status",
    ),
    (
        "unknown nested field",
        {"json": {**THEFT, "reporter": {"name": "Li", "role": "dispatcher"}}},
        422,
        "invalid_input",
        "reporter.role",
    ),
    ("missing location", {"json": {"category": "theft"}}, 422, "invalid_input", "location"),
    (
        "not JSON",
        {"content": b"category=theft", "headers": {"content-type": "application/json"}},
        422,
        "invalid_input",
        "invalid",
    ),
    (
        "body over 16 KiB",
        {"json": {**THEFT, "address": "x" * (17 * 1024)}},
        413,
        "payload_too_large",
        "larger than 16384 bytes",
    ),
    (
        "NUL byte in the description",
        {"json": {**THEFT, "description": "bike\u0000taken"}},
        422,
        "invalid_input",
        "description",
    ),
    (
        "control character in the address",
        {"json": {**THEFT, "address": "No. 3\u001b[2J Binhe Rd"}},
        422,
        "invalid_input",
        "address",
    ),
    (
        "line break in the reporter's name",
        {"json": {**THEFT, "reporter": {"name": "Li\r\nX-Injected: 1"}}},
        422,
        "invalid_input",
        "reporter.name",
    ),
    (
        "outside the service area",
        {"json": {**THEFT, "location": {"lat": 86.0, "lon": 114.05}}},
        422,
        "invalid_input",
        "location.lat",
    ),
    (
        "far from every grid",
        {"json": {**THEFT, "location": {"lat": 31.23, "lon": 121.47}}},
        422,
        "outside_service_area",
        "call 110",
    ),
    (
        "bad Idempotency-Key",
        {"json": THEFT, "headers": {"Idempotency-Key": "has spaces in it"}},
        422,
        "invalid_input",
        "Idempotency-Key",
    ),
]


async def test_each_kind_of_bad_input_is_refused_whole(infra: Infra) -> None:
    async with serve(create_app(infra.settings(IntakeSettings, "intake"))) as intake:
        async with intake.client() as client:
            for what, request, status, code, words in BAD_INPUTS:
                answer = await client.post("/v1/reports", **request)
                assert answer.status_code == status, (what, answer.text)
                error = answer.json()["error"]
                assert error["code"] == code, (what, error)
                assert words in error["message"] + str(error["details"]), (what, error)
            metrics = (await client.get("/metrics")).text
        assert await _rows(intake) == (0, 0)
        assert await TopicReader(infra.kafka, REPORTS).read_all() == []
        # Unknown categories are counted under one label, so the metric stays small.
        assert _metric(metrics, 'intake_reports_total{category="invalid",outcome="rejected"}') >= 1
        assert 'category="ufo"' not in metrics


async def test_a_burst_over_the_limit_gets_429_with_retry_after(infra: Infra) -> None:
    settings = infra.settings(
        IntakeSettings, "intake", rate_limit_per_device=3, rate_limit_per_address=5
    )
    async with serve(create_app(settings)) as intake, intake.client() as client:
        phone_a = {**THEFT, "reporter": {"device_id": "phone-a"}}
        from_a = [(await client.post("/v1/reports", json=phone_a)).status_code for _ in range(4)]
        assert from_a == [202, 202, 202, 429]

        limited = await client.post("/v1/reports", json=phone_a)
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "rate_limited"
        assert 0 < int(limited.headers["retry-after"]) <= 60

        # Another device gets through until the shared address is over its own limit.
        phone_b = {**THEFT, "reporter": {"device_id": "phone-b"}}
        from_b = [(await client.post("/v1/reports", json=phone_b)).status_code for _ in range(2)]
        assert from_b == [429, 429]  # the address has now seen 7 posts against a limit of 5

        accepted, _ = await _rows(intake)
        assert accepted == 3
        await eventually(lambda: _outbox_drained(intake))
        assert len(await TopicReader(infra.kafka, REPORTS).read_all()) == 3
        metrics = (await client.get("/metrics")).text
        assert (
            _metric(metrics, 'intake_reports_total{category="theft",outcome="rate_limited"}') == 4
        )


async def test_only_the_reports_own_token_can_read_or_cancel_it(infra: Infra) -> None:
    async with serve(create_app(infra.settings(IntakeSettings, "intake"))) as intake:
        async with intake.client() as client:
            mine = (await client.post("/v1/reports", json=THEFT)).json()
            theirs = (await client.post("/v1/reports", json=THEFT)).json()
        report = f"/v1/reports/{mine['report_id']}"
        others = {
            "another report's token": theirs["tracking_token"],
            "a dispatcher": mint_token(secret=AUTH_SECRET, role=Role.DISPATCHER, subject="desk"),
            # Made good at intake, so it is the identity that is refused.
            "a responder bound to the id": mint_token(
                secret=AUTH_SECRET,
                role=Role.RESPONDER,
                subject=mine["report_id"],
                audience=(INTAKE,),
            ),
        }
        for who, token in others.items():
            async with intake.client(token) as client:
                for answer in (
                    await client.get(report),
                    await client.get(f"{report}/stream"),
                    await client.post(f"{report}/cancel"),
                ):
                    assert answer.status_code == 404, (who, answer.text)
                    assert answer.json()["error"]["code"] == "not_found"

        async with intake.client(mine["tracking_token"]) as client:
            # The right token on a wrong or malformed id looks exactly like a missing report.
            assert (await client.get(f"/v1/reports/{theirs['report_id']}")).status_code == 404
            assert (await client.get("/v1/reports/not-a-uuid")).status_code == 404
            view = await client.get(report)
        assert view.status_code == 200
        assert view.json()["status"] == "received"
        assert [s["step"] for s in view.json()["timeline"]] == ["received"]

        async with httpx.AsyncClient(base_url=intake.base_url) as anonymous:
            assert (await anonymous.get(report)).status_code == 401
            forged = await anonymous.get(report, headers={"authorization": "Bearer forged"})
            assert forged.status_code == 401
            assert forged.json()["error"]["code"] == "unauthorized"


async def test_the_reporter_can_cancel_once_and_the_cancel_is_published(infra: Infra) -> None:
    async with serve(create_app(infra.settings(IntakeSettings, "intake"))) as intake:
        async with intake.client() as client:
            posted = (await client.post("/v1/reports", json=THEFT)).json()
        async with intake.client(posted["tracking_token"]) as client:
            cancelled = await client.post(f"/v1/reports/{posted['report_id']}/cancel")
            again = await client.post(f"/v1/reports/{posted['report_id']}/cancel")
            view = (await client.get(f"/v1/reports/{posted['report_id']}")).json()
        assert cancelled.status_code == 200
        assert cancelled.json()["status"] == "cancelled"
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "report_closed"
        assert [s["step"] for s in view["timeline"]] == ["received", "cancelled"]

        await TopicReader(infra.kafka, REPORTS).wait_for(lambda e: e.type == "ReportCancelled")
        await eventually(lambda: _outbox_drained(intake))
        assert await _published(infra, posted["report_id"]) == [
            "ReportReceived",
            "ReportCancelled",
        ]
