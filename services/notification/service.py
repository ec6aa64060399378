"""Notification's commands and queries: plain functions with keyword arguments.

Events become :class:`Notice` s (who should hear what), and notices become
:class:`Delivery` rows, one per recipient and channel, written ``pending`` in the
same transaction as the incident's party list. The workers send them afterwards.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import delete, func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.notification.channels import DISPATCHERS, stream_key
from services.notification.egress import EgressPolicy, Resolver, WebhookRefused
from services.notification.models import (
    Audience,
    Delivery,
    DeliveryAttempt,
    IncidentParty,
    Webhook,
    WebhookCreate,
)
from shared.auth import Principal, Role
from shared.db import SessionFactory, transaction
from shared.errors import Conflict, Forbidden, Invalid, Malformed, RateLimited
from shared.events import Envelope, ResponderOffered, UnitStatusChanged
from shared.ratelimit import Limit, RateLimiter, bucket

RESPONDER = "responder"
REPORT = "report"


@dataclass(frozen=True)
class Routing:
    """Which channels each audience is reached on (from settings)."""

    responder_channels: Sequence[str] = ("stream",)
    webhooks_enabled: bool = False
    dispatcher_webhook_url: str | None = None
    max_hooks_per_report: int = 3


@dataclass(frozen=True)
class Notice:
    """Something one audience should hear; ``responder_id`` names the responder addressed."""

    audience: Audience
    message: dict[str, Any]
    responder_id: uuid.UUID | None = None


def base_message(kind: str, envelope: Envelope, incident_id: uuid.UUID) -> dict[str, Any]:
    """The fields every message carries."""
    return {
        "type": kind,
        "event_id": str(envelope.event_id),
        "event_type": envelope.type,
        "incident_id": str(incident_id),
        "occurred_at": envelope.occurred_at.isoformat(),
    }


def offer_message(
    event: ResponderOffered, envelope: Envelope, *, dispatch_url: str
) -> dict[str, Any]:
    """An offer with its accept and decline links and its expiry."""
    offers = f"{dispatch_url.rstrip('/')}/v1/offers/{event.offer_id}"
    return {
        **base_message("offer", envelope, event.incident_id),
        "offer_id": str(event.offer_id),
        "category": event.category,
        "location": event.location.model_dump(mode="json"),
        "address": event.address,
        "distance_m": event.distance_m,
        "eta_s": event.eta_s,
        "expires_at": event.expires_at.isoformat(),
        "accept_url": f"{offers}/accept",
        "decline_url": f"{offers}/decline",
    }


def assignment_message(
    event: UnitStatusChanged, envelope: Envelope, *, dispatch_url: str
) -> dict[str, Any]:
    """A dispatcher's direct assignment: where to go, and where to report progress."""
    incident = f"{dispatch_url.rstrip('/')}/v1/incidents/{event.incident_id}"
    return {
        **base_message("assignment", envelope, event.incident_id),
        "category": event.category,
        "location": event.location.model_dump(mode="json") if event.location else None,
        "address": event.address,
        "eta_s": event.eta_s,
        "status_url": f"{incident}/units/{event.responder_id}/status",
    }


# --- the incident's parties -----------------------------------------------------


async def add_party(
    session: AsyncSession, *, incident_id: uuid.UUID, party: str, ref_id: uuid.UUID
) -> None:
    """Remember that ``ref_id`` (a responder or a report) belongs to the incident."""
    if await session.get(IncidentParty, (incident_id, party, ref_id)) is None:
        session.add(IncidentParty(incident_id=incident_id, party=party, ref_id=ref_id))
        await session.flush()


async def remove_party(
    session: AsyncSession, *, incident_id: uuid.UUID, party: str, ref_id: uuid.UUID | None = None
) -> None:
    """Forget one party of the incident, or all of that kind when ``ref_id`` is None."""
    query = delete(IncidentParty).where(
        col(IncidentParty.incident_id) == incident_id, col(IncidentParty.party) == party
    )
    if ref_id is not None:
        query = query.where(col(IncidentParty.ref_id) == ref_id)
    await session.exec(query)


async def parties(session: AsyncSession, *, incident_id: uuid.UUID, party: str) -> list[uuid.UUID]:
    """The responders or reports the incident concerns."""
    rows = await session.exec(
        select(IncidentParty.ref_id).where(
            IncidentParty.incident_id == incident_id, IncidentParty.party == party
        )
    )
    return sorted(rows.all())


# --- deliveries -------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    channel: str
    recipient: str
    url: str | None = None


async def _targets(
    session: AsyncSession, *, notice: Notice, incident_id: uuid.UUID, routing: Routing
) -> list[_Target]:
    if notice.audience == "responder":
        return [_Target(c, str(notice.responder_id)) for c in routing.responder_channels]
    if notice.audience == "dispatcher":
        targets = [_Target("stream", DISPATCHERS)]
        if routing.webhooks_enabled:
            if routing.dispatcher_webhook_url:
                targets.append(_Target("webhook", "configured", routing.dispatcher_webhook_url))
            hooks = await session.exec(select(Webhook).where(Webhook.audience == "dispatcher"))
            targets += [_Target("webhook", str(h.id), h.url) for h in hooks.all()]
        return targets
    if not routing.webhooks_enabled:
        return []
    reports = await parties(session, incident_id=incident_id, party=REPORT)
    if not reports:
        return []
    hooks = await session.exec(
        select(Webhook)
        .where(Webhook.audience == "reporter", col(Webhook.report_id).in_(reports))
        .order_by(col(Webhook.created_at), col(Webhook.id))
    )
    # The registration cap holds here too: only a report's first hooks are called, even
    # if two registrations raced past the count.
    per_report: dict[uuid.UUID | None, int] = {}
    reporter_targets: list[_Target] = []
    for hook in hooks.all():
        per_report[hook.report_id] = per_report.get(hook.report_id, 0) + 1
        if per_report[hook.report_id] <= routing.max_hooks_per_report:
            reporter_targets.append(_Target("webhook", str(hook.id), hook.url))
    return reporter_targets


@dataclass(frozen=True)
class Recorded:
    """An event's deliveries: ``new`` rows, leased to this instance's workers from the
    start, and ``unsent`` ones written before (a redelivery after a crash), which the
    workers must claim first."""

    new: list[Delivery]
    unsent: list[Delivery]


async def record_deliveries(
    session: AsyncSession,
    *,
    envelope: Envelope,
    incident_id: uuid.UUID,
    notices: Sequence[Notice],
    routing: Routing,
    now: datetime,
    lease_for: Callable[[str], timedelta],
) -> Recorded:
    """Write a pending delivery per recipient and channel, leased for ``lease_for`` its
    channel, so no other instance's sweep takes it before this one's workers do.

    Rows already written for this event are not written again, and come back only if
    they have not gone out yet.
    """
    event_id = str(envelope.event_id)
    existing = {
        (d.channel, d.recipient): d
        for d in (await session.exec(select(Delivery).where(Delivery.event_id == event_id))).all()
    }
    recorded = Recorded(new=[], unsent=[])
    for notice in notices:
        for target in await _targets(
            session, notice=notice, incident_id=incident_id, routing=routing
        ):
            found = existing.get((target.channel, target.recipient))
            if found is not None:
                if found.status == "pending" and found not in recorded.unsent + recorded.new:
                    recorded.unsent.append(found)
                continue
            delivery = Delivery(
                event_id=event_id,
                event_type=envelope.type,
                channel=target.channel,
                audience=notice.audience,
                recipient=target.recipient,
                target=target.url,
                incident_id=incident_id,
                responder_id=notice.responder_id,
                message=json.dumps(notice.message, separators=(",", ":")),
                occurred_at=envelope.occurred_at,
                created_at=now,
                lease_until=now + lease_for(target.channel),
            )
            session.add(delivery)
            existing[(target.channel, target.recipient)] = delivery
            recorded.new.append(delivery)
    await session.flush()
    return recorded


async def list_deliveries(
    *,
    sessions: SessionFactory,
    incident_id: uuid.UUID | None,
    responder_id: uuid.UUID | None,
    limit: int,
) -> list[tuple[Delivery, list[DeliveryAttempt]]]:
    """The delivery log, newest first, each delivery with its attempts in order."""
    async with sessions() as session:
        query = select(Delivery).order_by(col(Delivery.created_at).desc()).limit(limit)
        if incident_id is not None:
            query = query.where(Delivery.incident_id == incident_id)
        if responder_id is not None:
            query = query.where(Delivery.responder_id == responder_id)
        deliveries = list((await session.exec(query)).all())
        attempts: dict[uuid.UUID, list[DeliveryAttempt]] = {d.id: [] for d in deliveries}
        if deliveries:
            rows = await session.exec(
                select(DeliveryAttempt)
                .where(col(DeliveryAttempt.delivery_id).in_(list(attempts)))
                .order_by(col(DeliveryAttempt.attempt))
            )
            for attempt in rows.all():
                attempts[attempt.delivery_id].append(attempt)
    return [(d, attempts[d.id]) for d in deliveries]


# --- webhooks -----------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookRules:
    """What registration checks: the address rules, the cap and the rate limit."""

    dispatcher_policy: EgressPolicy
    reporter_policy: EgressPolicy
    max_per_report: int = 3
    registrations_per_window: int = 10
    window_s: int = 600


async def register_webhook(
    *,
    sessions: SessionFactory,
    body: WebhookCreate,
    principal: Principal,
    webhooks_enabled: bool,
    rules: WebhookRules,
    limiter: RateLimiter,
    resolver: Resolver,
    now: datetime,
) -> Webhook:
    """Register a webhook. A reporter may register one for its own report only.

    Every attempt counts against the caller's and the report's rate limit, refused ones
    too (so registration cannot be used to probe internal names). The URL must pass the
    audience's address rules now, and is checked again at every call.
    """
    if principal.role is Role.REPORTER and (
        body.audience != "reporter" or str(body.report_id) != principal.subject
    ):
        raise Forbidden("a reporter may register a webhook for its own report")
    if not webhooks_enabled:
        raise Conflict("webhooks are not configured on this server", code="webhooks_disabled")
    caller = f"{principal.role.value}:{principal.subject}"
    limits = [Limit(bucket("webhook-caller", caller), rules.registrations_per_window)]
    if body.report_id is not None:
        limits.append(
            Limit(bucket("webhook-report", str(body.report_id)), rules.registrations_per_window)
        )
    wait_s = await limiter.hit(limits, window_s=rules.window_s)
    if wait_s:
        raise RateLimited(
            f"too many webhook registrations; try again in {wait_s} s", retry_after_s=wait_s
        )
    policy = rules.reporter_policy if body.audience == "reporter" else rules.dispatcher_policy
    try:
        await policy.resolve(str(body.url), resolver)
    except WebhookRefused as exc:
        raise Invalid(str(exc), code="webhook_url_refused") from exc
    webhook = Webhook(
        url=str(body.url),
        audience=body.audience,
        report_id=body.report_id,
        created_by=caller[:64],
        created_at=now,
    )
    async with transaction(sessions) as session:
        if body.report_id is not None:
            count = (
                await session.exec(
                    select(func.count())
                    .select_from(Webhook)
                    .where(Webhook.report_id == body.report_id)
                )
            ).one()
            if count >= rules.max_per_report:
                raise Conflict(
                    f"a report may have at most {rules.max_per_report} webhooks",
                    code="too_many_webhooks",
                )
        session.add(webhook)
    return webhook


# --- live streams -------------------------------------------------------------------

_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")


async def stream_start(*, redis: Redis, recipient: str, last_event_id: str | None) -> str:
    """Where a client's stream starts: after its ``Last-Event-ID``, else after the newest entry.

    Fixed before the response starts, so nothing added after the client connected is missed.
    """
    if last_event_id:
        if not _STREAM_ID.match(last_event_id):
            raise Malformed("Last-Event-ID is not an id we sent", code="bad_last_event_id")
        return last_event_id
    newest = await redis.xrevrange(stream_key(recipient), count=1)
    return str(newest[0][0]) if newest else "0-0"
