"""Intake's HTTP routes: thin, they call the service functions."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from sse_starlette import EventSourceResponse, ServerSentEvent

from services.intake import service
from services.intake.context import Intake
from services.intake.models import ReportAccepted, ReportCreate, ReportPublic
from shared.auth import CurrentPrincipal, StreamPrincipal
from shared.errors import error_responses
from shared.http import client_address
from shared.streams import STREAM_RESPONSES, StreamLimiterDep, capped_stream


async def get_intake(request: Request) -> Intake:
    """Intake's context, built in ``create_app``."""
    intake: Intake = request.app.state.intake
    return intake


IntakeDep = Annotated[Intake, Depends(get_intake)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=r"^[\x21-\x7e]{1,200}$",
        description="Repeat a post with the same key to get the same report back.",
    ),
]
LastEventId = Annotated[str | None, Header(alias="Last-Event-ID")]

# A reporter's token opens only its own report; any other id is 404, never 403.
ERRORS = error_responses(401, 404, 422, notes={404: "No such report for this token"})


class CountRejectedReports(APIRoute):
    """Counts posts refused by validation, which fails before the route function runs."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def counted(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError:
                (await get_intake(request)).metrics.count(
                    category=await _posted_category(request), outcome="rejected"
                )
                raise

        return counted


async def _posted_category(request: Request) -> object:
    try:
        body = json.loads(await request.body())
    except ValueError:
        return None
    return body.get("category") if isinstance(body, dict) else None


posting = APIRouter(prefix="/v1", tags=["reports"], route_class=CountRejectedReports)
router = APIRouter(prefix="/v1", tags=["reports"])


@posting.post(
    "/reports",
    status_code=202,
    response_model=ReportAccepted,
    responses=error_responses(
        409,
        413,
        422,
        429,
        notes={
            409: "The Idempotency-Key was used with another body",
            422: "Bad input, or a place outside the service area; nothing was saved",
        },
    ),
)
async def post_report(
    body: ReportCreate,
    request: Request,
    intake: IntakeDep,
    idempotency_key: IdempotencyKey = None,
) -> ReportAccepted:
    """Take a citizen's report. No token needed; the answer carries the tracking token."""
    receipt = await service.receive_report(
        work=intake.work,
        limiter=intake.limiter,
        metrics=intake.metrics,
        settings=intake.settings,
        area=intake.area,
        body=body,
        idempotency_key=idempotency_key,
        client_address=client_address(request),
        now=intake.clock.now(),
    )
    report = receipt.report
    return ReportAccepted.model_validate(
        {
            "report_id": report.id,
            "tracking_token": service.tracking_token(settings=intake.settings, report_id=report.id),
            "status": report.status,
            "received_at": report.received_at,
        }
    )


@router.get("/reports/{report_id}", response_model=ReportPublic, responses=ERRORS)
async def get_report(
    report_id: str, principal: CurrentPrincipal, intake: IntakeDep
) -> ReportPublic:
    """The report's status and timeline (its tracking token only)."""
    rid = service.reporter_report_id(principal=principal, report_id=report_id)
    return await service.report_view(sessions=intake.sessions, report_id=rid)


@router.get(
    "/reports/{report_id}/stream",
    response_class=EventSourceResponse,
    responses={**ERRORS, **STREAM_RESPONSES, 200: {"content": {"text/event-stream": {}}}},
)
async def stream_report(
    report_id: str,
    principal: StreamPrincipal,
    streams: StreamLimiterDep,
    intake: IntakeDep,
    last_event_id: LastEventId = None,
) -> EventSourceResponse:
    """Live steps of the report as server-sent events (its tracking token only).

    EventSource clients may pass the token as ``?access_token=``. Each event's id is the
    step's id, so a reconnect with ``Last-Event-ID`` resumes after the last step seen.
    A caller holding ``MAX_STREAMS_PER_CALLER`` streams gets 429.
    """
    rid = service.reporter_report_id(principal=principal, report_id=report_id)
    await service.report_view(sessions=intake.sessions, report_id=rid)  # 404 before streaming
    after_id = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0

    async def events() -> AsyncIterator[ServerSentEvent]:
        async for step_id, update in service.report_updates(
            sessions=intake.sessions,
            changes=intake.changes,
            report_id=rid,
            after_id=after_id,
            resync_s=intake.settings.stream_resync_s,
        ):
            yield ServerSentEvent(data=update.model_dump_json(), event="step", id=str(step_id))

    return capped_stream(streams, principal, events(), ping=intake.settings.stream_resync_s)


@router.post(
    "/reports/{report_id}/cancel",
    response_model=ReportPublic,
    responses={**ERRORS, **error_responses(409, notes={409: "Already resolved or cancelled"})},
)
async def cancel_report(
    report_id: str,
    principal: CurrentPrincipal,
    intake: IntakeDep,
) -> ReportPublic:
    """Withdraw the report (its tracking token only); 409 once it is resolved or cancelled."""
    rid = service.reporter_report_id(principal=principal, report_id=report_id)
    await service.cancel_report(work=intake.work, report_id=rid, now=intake.clock.now())
    await intake.changes.announce([rid])
    return await service.report_view(sessions=intake.sessions, report_id=rid)
