"""Notification's HTTP routes: thin, they call the service functions.

Webhook registration is one call, ``POST /v1/webhooks`` with
``{url, audience: reporter|dispatcher, report_id?}``:

- ``reporter`` webhooks get the status updates of one report's incident. The reporter's
  app registers one with its tracking token (for its own report only); a dispatcher,
  operator or service may register one for any report.
- ``dispatcher`` webhooks get breaches and "no responder available"; dispatchers,
  operators and services may register them.

Every webhook is signed with ``WEBHOOK_SIGNING_SECRET``: ``X-Notification-Timestamp``
(unix seconds) and ``X-Notification-Signature: sha256=<hex HMAC-SHA256 of
"{timestamp}.{body}">``. Without the secret, webhooks are off and registration is refused.

Webhooks cannot reach inside: a URL must be https to a public address, unless the
audience's allowlist (``WEBHOOK_ALLOWED_HOSTS`` for dispatchers,
``WEBHOOK_REPORTER_ALLOWED_HOSTS`` for reporters) admits it; a report has at most
``WEBHOOK_MAX_PER_REPORT`` webhooks; registrations are rate-limited per caller and per
report. The address rules are checked again, after DNS, at every call (``egress.py``).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from sse_starlette import EventSourceResponse

from services.notification import service
from services.notification.channels import DISPATCHERS
from services.notification.context import Notifier
from services.notification.models import (
    AttemptPublic,
    DeliveryPublic,
    WebhookCreate,
    WebhookPublic,
)
from shared.auth import Principal, Role, StreamPrincipal, require_roles, require_self_or
from shared.errors import AUTHENTICATED as AUTH
from shared.errors import error_responses
from shared.streams import STREAM_RESPONSES, StreamLimiterDep, capped_stream

router = APIRouter(prefix="/v1", tags=["notification"])
STREAM: dict[int | str, dict[str, Any]] = {200: {"content": {"text/event-stream": {}}}}


async def get_notifier(request: Request) -> Notifier:
    """Notification's context, built in ``create_app``."""
    notifier: Notifier = request.app.state.notifier
    return notifier


NotifierDep = Annotated[Notifier, Depends(get_notifier)]
StreamingDispatcher = Annotated[Principal, Depends(require_roles(Role.DISPATCHER, stream=True))]
LogReader = Annotated[Principal, Depends(require_roles(Role.DISPATCHER, Role.OPERATOR))]
WebhookOwner = Annotated[
    Principal,
    Depends(require_roles(Role.REPORTER, Role.DISPATCHER, Role.OPERATOR, Role.SERVICE)),
]
LastEventId = Annotated[str | None, Header(alias="Last-Event-ID")]


async def _stream(
    *,
    notifier: Notifier,
    recipient: str,
    last_event_id: str | None,
    principal: Principal,
    streams: StreamLimiterDep,
) -> EventSourceResponse:
    start = await service.stream_start(
        redis=notifier.redis, recipient=recipient, last_event_id=last_event_id
    )
    return capped_stream(
        streams,
        principal,
        notifier.hub.messages(
            recipient=recipient, after=start, poll_s=notifier.settings.stream_poll_s
        ),
        ping=notifier.settings.stream_ping_s,
    )


@router.get(
    "/responders/{responder_id}/stream",
    response_class=EventSourceResponse,
    responses={**STREAM, **error_responses(*AUTH, 400, 422), **STREAM_RESPONSES},
)
async def responder_stream(
    responder_id: uuid.UUID,
    principal: StreamPrincipal,
    streams: StreamLimiterDep,
    notifier: NotifierDep,
    last_event_id: LastEventId = None,
) -> EventSourceResponse:
    """That responder's offers and updates, live (SSE); ``Last-Event-ID`` replays missed ones.

    Takes ``?access_token=`` for EventSource; 429 beyond ``MAX_STREAMS_PER_CALLER``; the
    stream ends when the responder is revoked.
    """
    require_self_or(principal, role=Role.RESPONDER, subject=str(responder_id), others=())
    return await _stream(
        notifier=notifier,
        recipient=str(responder_id),
        last_event_id=last_event_id,
        principal=principal,
        streams=streams,
    )


@router.get(
    "/dispatchers/stream",
    response_class=EventSourceResponse,
    responses={**STREAM, **error_responses(*AUTH, 400, 422), **STREAM_RESPONSES},
)
async def dispatcher_stream(
    who: StreamingDispatcher,
    streams: StreamLimiterDep,
    notifier: NotifierDep,
    last_event_id: LastEventId = None,
) -> EventSourceResponse:
    """Breaches and "no responder available", live (SSE)."""
    return await _stream(
        notifier=notifier,
        recipient=DISPATCHERS,
        last_event_id=last_event_id,
        principal=who,
        streams=streams,
    )


@router.post(
    "/webhooks",
    status_code=201,
    response_model=WebhookPublic,
    responses=error_responses(
        *AUTH,
        409,
        413,
        422,
        429,
        notes={
            403: "This role may not register webhooks, or not for this report",
            409: "Webhooks are off on this server (`webhooks_disabled`), or the report "
            "already has its maximum of webhooks (`too_many_webhooks`)",
            422: "A bad body (`invalid_input`), or a URL webhooks may not reach "
            "(`webhook_url_refused`): not https, or a loopback, private, link-local, "
            "multicast, reserved, CGNAT or cloud-metadata address that the allowlist does "
            "not admit, or a host that does not resolve",
            429: "Too many registrations by this caller or for this report",
        },
    ),
)
async def post_webhook(
    body: WebhookCreate,
    principal: WebhookOwner,
    notifier: NotifierDep,
) -> WebhookPublic:
    """Register a reporter or dispatcher webhook (refused if it could reach inside)."""
    webhook = await service.register_webhook(
        sessions=notifier.sessions,
        body=body,
        principal=principal,
        webhooks_enabled=notifier.settings.webhook_signing_secret is not None,
        rules=service.WebhookRules(
            dispatcher_policy=notifier.settings.dispatcher_policy,
            reporter_policy=notifier.settings.reporter_policy,
            max_per_report=notifier.settings.webhook_max_per_report,
            registrations_per_window=notifier.settings.webhook_registrations_per_window,
            window_s=notifier.settings.webhook_registration_window_s,
        ),
        limiter=notifier.limiter,
        resolver=notifier.resolver,
        now=notifier.clock.now(),
    )
    return WebhookPublic(
        webhook_id=webhook.id,
        url=webhook.url,
        audience=webhook.audience,
        report_id=webhook.report_id,
        created_at=webhook.created_at,
    )


@router.get(
    "/deliveries", response_model=list[DeliveryPublic], responses=error_responses(*AUTH, 422)
)
async def get_deliveries(
    _: LogReader,
    notifier: NotifierDep,
    incident_id: uuid.UUID | None = None,
    responder_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[DeliveryPublic]:
    """The delivery log, newest first, with every attempt."""
    rows = await service.list_deliveries(
        sessions=notifier.sessions, incident_id=incident_id, responder_id=responder_id, limit=limit
    )
    return [
        DeliveryPublic(
            delivery_id=d.id,
            event_id=d.event_id,
            event_type=d.event_type,
            channel=d.channel,
            audience=d.audience,
            recipient=d.recipient,
            incident_id=d.incident_id,
            responder_id=d.responder_id,
            status=d.status,
            attempts=[
                AttemptPublic(
                    attempt=a.attempt,
                    outcome=a.outcome,
                    latency_ms=a.latency_ms,
                    error=a.error,
                    attempted_at=a.attempted_at,
                )
                for a in attempts
            ],
            occurred_at=d.occurred_at,
            created_at=d.created_at,
            sent_at=d.sent_at,
            dead_lettered_at=d.dead_lettered_at,
        )
        for d, attempts in rows
    ]
