"""Redis comes back empty under notification, on the real broker, Redis and database: the
live streams are put back from the delivery log, so a responder who reconnects still
gets the offer they had not read, in order, and never an offer already past its expiry."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis

from services.notification.app import create_app
from services.notification.channels import stream_key
from shared.events import Envelope, OfferWithdrawn
from shared.redis_epoch import RedisEpoch
from tests.harness import Infra, eventually, serve
from tests.integration.notification_support import (
    dispatch_publisher,
    notification,
    notification_settings,
    offer,
    publish,
    responder_stream,
    wait_sent,
)


async def stream_entries(infra: Infra, recipient: uuid.UUID) -> list[dict[str, Any]]:
    """The messages on a responder's stream, oldest first."""
    redis = Redis.from_url(infra.redis_url, decode_responses=True)
    try:
        entries: Any = await redis.xrange(stream_key(str(recipient)))
    finally:
        await redis.aclose()
    return [json.loads(fields["data"]) for _, fields in entries]


async def test_an_offer_sent_before_redis_came_back_empty_reaches_the_reconnecting_responder(
    infra: Infra,
) -> None:
    responder = uuid.uuid4()
    async with notification(infra) as app, dispatch_publisher(infra) as publisher:
        async with responder_stream(app, responder) as phone:
            earlier = offer(responder_id=responder)
            await publish(publisher, Envelope.wrap(earlier))
            last_read = await phone.next()
        # The phone is offline; an offer reaches its stream, then Redis loses everything.
        missed = offer(responder_id=responder)
        await publish(publisher, Envelope.wrap(missed))
        await wait_sent(app, 2, channel="stream", responder_id=str(responder))
        await infra.flush_redis()

        async with responder_stream(app, responder, last_event_id=last_read.id) as phone:
            replayed = [await phone.next()]
            while replayed[-1].data.get("offer_id") != str(missed.offer_id):
                replayed.append(await phone.next())

    assert replayed[-1].event == "offer"
    assert replayed[-1].data["expires_at"] == missed.expires_at.isoformat()
    # At least once: what was read may come again, but never after what followed it.
    assert [e.data["offer_id"] for e in replayed] in (
        [str(missed.offer_id)],
        [str(earlier.offer_id), str(missed.offer_id)],
    )


async def test_a_notification_started_on_an_empty_redis_puts_back_the_streams(
    infra: Infra,
) -> None:
    responder = uuid.uuid4()
    settings = notification_settings(infra)
    async with dispatch_publisher(infra) as publisher:
        async with (
            serve(create_app(settings)) as first,
            responder_stream(first, responder) as phone,
        ):
            await publish(publisher, Envelope.wrap(offer(responder_id=responder)))
            last_read = await phone.next()
            missed = offer(responder_id=responder)
            await publish(publisher, Envelope.wrap(missed))
            await wait_sent(first, 2, channel="stream", responder_id=str(responder))
            await phone.close()

        # Notification was down while Redis came back with nothing (another logical db).
        empty = settings.model_copy(update={"redis_url": infra.redis_db_url(5)})
        async with (
            serve(create_app(empty)) as second,
            responder_stream(second, responder, last_event_id=last_read.id) as phone,
        ):
            seen = [await phone.next()]
            while seen[-1].data.get("offer_id") != str(missed.offer_id):
                seen.append(await phone.next())

    assert seen[-1].event == "offer"


async def test_the_rebuilt_stream_keeps_the_order_and_leaves_out_lapsed_offers(
    infra: Infra,
) -> None:
    responder = uuid.uuid4()
    # The epoch is checked only when the test says so, to put a message in between.
    async with (
        notification(infra, redis_epoch_interval_s=3600) as app,
        dispatch_publisher(infra) as publisher,
    ):
        lapsed = offer(responder_id=responder).model_copy(
            update={"expires_at": datetime.now(UTC) - timedelta(seconds=1)}
        )
        pending = offer(responder_id=responder)
        await publish(publisher, Envelope.wrap(lapsed))
        await publish(publisher, Envelope.wrap(pending))
        await wait_sent(app, 2, channel="stream", responder_id=str(responder))
        await infra.flush_redis()

        # Taken back after Redis came back, before notification noticed.
        withdrawn = OfferWithdrawn(
            incident_id=pending.incident_id,
            offer_id=pending.offer_id,
            responder_id=responder,
            reason="incident_closed",
        )
        await publish(publisher, Envelope.wrap(withdrawn))
        await wait_sent(app, 3, channel="stream", responder_id=str(responder))
        epoch: RedisEpoch = app.app.state.redis_epoch
        epoch.check_soon()
        await eventually(lambda: epoch.rebuilds >= 1, timeout=15)

        async with responder_stream(app, responder, last_event_id="0-0") as phone:
            replayed = [await phone.next() for _ in range(3)]
        on_stream = await stream_entries(infra, responder)

    # The withdrawal comes after the offer it takes back, as the phone must see them.
    assert [(e.event, e.data["offer_id"]) for e in replayed] == [
        ("offer_withdrawn", str(pending.offer_id)),
        ("offer", str(pending.offer_id)),
        ("offer_withdrawn", str(pending.offer_id)),
    ]
    assert str(lapsed.offer_id) not in {m.get("offer_id") for m in on_stream}
    assert len(on_stream) == 3
