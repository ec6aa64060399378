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
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from sse_starlette import EventSourceResponse

from services.notification import service
from services.notification.channels import DISPATCHERS
from services.notification.live import LiveHub
from services.notification.models import (
    AttemptPublic,
    DeliveryPublic,
    WebhookCreate,
    WebhookPublic,
)
from services.notification.settings import NotificationSettings
from shared.auth import CurrentPrincipal, Principal, Role, require_roles, require_self_or
from shared.deps import ClockDep, RuntimeDep
from shared.errors import AUTHENTICATED as AUTH
from shared.errors import error_responses
from shared.runtime import Runtime

router = APIRouter(prefix="/v1", tags=["notification"])
STREAM: dict[int | str, dict[str, Any]] = {200: {"content": {"text/event-stream": {}}}}


def get_settings(request: Request) -> NotificationSettings:
    """Notification's settings."""
    settings: NotificationSettings = request.app.state.settings
    return settings


def get_hub(request: Request) -> LiveHub:
    """This instance's live-stream hub."""
    hub: LiveHub = request.app.state.hub
    return hub


SettingsDep = Annotated[NotificationSettings, Depends(get_settings)]
HubDep = Annotated[LiveHub, Depends(get_hub)]
Dispatcher = Annotated[Principal, Depends(require_roles(Role.DISPATCHER))]
LogReader = Annotated[Principal, Depends(require_roles(Role.DISPATCHER, Role.OPERATOR))]
WebhookOwner = Annotated[
    Principal,
    Depends(require_roles(Role.REPORTER, Role.DISPATCHER, Role.OPERATOR, Role.SERVICE)),
]
LastEventId = Annotated[str | None, Header(alias="Last-Event-ID")]


async def _stream(
    *,
    runtime: Runtime,
    hub: LiveHub,
    settings: NotificationSettings,
    recipient: str,
    last_event_id: str | None,
) -> EventSourceResponse:
    start = await service.stream_start(
        redis=runtime.redis, recipient=recipient, last_event_id=last_event_id
    )
    return EventSourceResponse(
        hub.messages(recipient=recipient, after=start, poll_s=settings.stream_poll_s),
        ping=settings.stream_ping_s,
    )


@router.get(
    "/responders/{responder_id}/stream",
    response_class=EventSourceResponse,
    responses={**STREAM, **error_responses(*AUTH, 400, 422)},
)
async def responder_stream(
    responder_id: uuid.UUID,
    principal: CurrentPrincipal,
    runtime: RuntimeDep,
    hub: HubDep,
    settings: SettingsDep,
    last_event_id: LastEventId = None,
) -> EventSourceResponse:
    """That responder's offers and updates, live (SSE); ``Last-Event-ID`` replays missed ones."""
    require_self_or(principal, role=Role.RESPONDER, subject=str(responder_id), others=())
    return await _stream(
        runtime=runtime,
        hub=hub,
        settings=settings,
        recipient=str(responder_id),
        last_event_id=last_event_id,
    )


@router.get(
    "/dispatchers/stream",
    response_class=EventSourceResponse,
    responses={**STREAM, **error_responses(*AUTH, 400, 422)},
)
async def dispatcher_stream(
    _: Dispatcher,
    runtime: RuntimeDep,
    hub: HubDep,
    settings: SettingsDep,
    last_event_id: LastEventId = None,
) -> EventSourceResponse:
    """Breaches and "no responder available", live (SSE)."""
    return await _stream(
        runtime=runtime,
        hub=hub,
        settings=settings,
        recipient=DISPATCHERS,
        last_event_id=last_event_id,
    )


@router.post(
    "/webhooks",
    status_code=201,
    response_model=WebhookPublic,
    responses=error_responses(
        *AUTH, 409, 413, 422, notes={409: "Webhooks are not configured on this server"}
    ),
)
async def post_webhook(
    body: WebhookCreate,
    principal: WebhookOwner,
    runtime: RuntimeDep,
    settings: SettingsDep,
    clock: ClockDep,
) -> WebhookPublic:
    """Register a reporter or dispatcher webhook."""
    webhook = await service.register_webhook(
        sessions=runtime.sessions,
        body=body,
        principal=principal,
        webhooks_enabled=settings.webhook_signing_secret is not None,
        now=clock.now(),
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
    runtime: RuntimeDep,
    incident_id: uuid.UUID | None = None,
    responder_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[DeliveryPublic]:
    """The delivery log, newest first, with every attempt."""
    rows = await service.list_deliveries(
        sessions=runtime.sessions, incident_id=incident_id, responder_id=responder_id, limit=limit
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
