"""Notification on the real broker and Redis: offers reach the right responder's
stream, reconnecting responders catch up, webhooks are signed, retried and
dead-lettered, and a duplicate event is delivered once."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

from services.notification.channels import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    verify,
)
from shared.auth import Role
from shared.events import (
    INCIDENTS,
    Envelope,
    IncidentResolved,
    OfferAccepted,
    OfferExpired,
    TargetBreached,
    UnitStatusChanged,
    dead_letter_topic,
)
from tests.harness import Infra, TopicReader, eventually, serve
from tests.integration.notification_support import (
    DISPATCH_URL,
    WEBHOOK_SECRET,
    Receiver,
    delivery_log,
    dispatch_publisher,
    notification,
    offer,
    publish,
    register_webhook,
    responder_stream,
    token,
    wait_sent,
)


def breach(incident_id: uuid.UUID | None = None) -> TargetBreached:
    """A T1 breach as dispatch would publish it."""
    return TargetBreached(
        incident_id=incident_id or uuid.uuid4(), stage="T1", target_s=60, category="dispute"
    )


async def test_an_offer_reaches_the_offered_responder_and_no_one_else(infra: Infra) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    async with notification(infra) as app, dispatch_publisher(infra) as publisher:
        async with (
            responder_stream(app, alice) as alice_stream,
            responder_stream(app, bob) as bob_stream,
        ):
            for_alice = offer(responder_id=alice)
            await publish(publisher, Envelope.wrap(for_alice))
            received = await alice_stream.next()

            for_bob = offer(responder_id=bob)
            await publish(publisher, Envelope.wrap(for_bob))
            bob_first = await bob_stream.next()

        assert received.event == "offer"
        assert received.id
        assert received.data["offer_id"] == str(for_alice.offer_id)
        assert received.data["incident_id"] == str(for_alice.incident_id)
        assert (
            received.data["accept_url"] == f"{DISPATCH_URL}/v1/offers/{for_alice.offer_id}/accept"
        )
        assert (
            received.data["decline_url"] == f"{DISPATCH_URL}/v1/offers/{for_alice.offer_id}/decline"
        )
        assert datetime.fromisoformat(received.data["expires_at"]) == for_alice.expires_at
        # Bob's first message is his own offer: Alice's never reached his stream.
        assert bob_first.data["offer_id"] == str(for_bob.offer_id)

        log = await wait_sent(app, 1, responder_id=str(alice))
        assert [(d["channel"], d["event_type"]) for d in log] == [("stream", "ResponderOffered")]


async def test_only_the_responder_may_open_their_stream(infra: Infra) -> None:
    alice = uuid.uuid4()
    async with notification(infra) as app:
        async with app.client() as anonymous:
            nobody = await anonymous.get(f"/v1/responders/{alice}/stream")
        async with app.client(token(Role.RESPONDER, str(uuid.uuid4()))) as other:
            someone_else = await other.get(f"/v1/responders/{alice}/stream")
        async with app.client(token(Role.DISPATCHER, "desk-1")) as desk:
            dispatcher = await desk.get(f"/v1/responders/{alice}/stream")
    assert nobody.status_code == 401
    assert someone_else.status_code == 403
    assert someone_else.json()["error"]["code"] == "forbidden"
    assert dispatcher.status_code == 403


async def test_a_reconnecting_responder_gets_what_it_missed(infra: Infra) -> None:
    alice = uuid.uuid4()
    async with notification(infra) as app, dispatch_publisher(infra) as publisher:
        first = offer(responder_id=alice)
        async with responder_stream(app, alice) as stream:
            await publish(publisher, Envelope.wrap(first))
            seen = await stream.next()
        assert seen.data["offer_id"] == str(first.offer_id)

        # While Alice is away, the first offer lapses and a second one comes.
        expired = OfferExpired(
            incident_id=first.incident_id, offer_id=first.offer_id, responder_id=alice
        )
        second = offer(responder_id=alice)
        await publish(publisher, Envelope.wrap(expired))
        await publish(publisher, Envelope.wrap(second))
        await wait_sent(app, 3, responder_id=str(alice))

        async with responder_stream(app, alice, last_event_id=seen.id) as stream:
            missed = [await stream.next(), await stream.next()]

    # Two incidents, two partitions: the missed messages may come in either order.
    assert {(m.event, m.data["offer_id"]) for m in missed} == {
        ("offer_withdrawn", str(first.offer_id)),
        ("offer", str(second.offer_id)),
    }
    assert [m.data["reason"] for m in missed if m.event == "offer_withdrawn"] == ["expired"]
    ids = [tuple(int(part) for part in m.id.split("-")) for m in (seen, *missed)]
    assert ids == sorted(set(ids))


async def test_a_responder_on_the_way_is_stood_down_when_a_dispatcher_resolves(
    infra: Infra,
) -> None:
    alice = uuid.uuid4()
    offered = offer(responder_id=alice)
    incident_id = offered.incident_id
    # What dispatch publishes, in this order, for an accepted offer and then a dispatcher's
    # resolve: the unit is cleared just before the incident is closed.
    story = [
        offered,
        OfferAccepted(
            incident_id=incident_id,
            offer_id=offered.offer_id,
            responder_id=alice,
            kind="volunteer",
            eta_s=172.8,
        ),
        UnitStatusChanged(
            incident_id=incident_id, responder_id=alice, kind="volunteer", status="en_route"
        ),
        UnitStatusChanged(
            incident_id=incident_id, responder_id=alice, kind="volunteer", status="cleared"
        ),
        IncidentResolved(incident_id=incident_id, resolved_at=datetime.now(UTC)),
    ]
    async with (
        notification(infra) as app,
        dispatch_publisher(infra) as publisher,
        responder_stream(app, alice) as stream,
    ):
        for event in story:
            await publish(publisher, Envelope.wrap(event))
        seen = [await stream.next(), await stream.next()]

    assert [m.event for m in seen] == ["offer", "incident_closed"]
    assert seen[1].data["incident_id"] == str(incident_id)
    assert seen[1].data["reason"] == "resolved"


async def test_a_flaky_webhook_gets_the_event_once_with_a_valid_signature(infra: Infra) -> None:
    receiver = Receiver(fail_first=2)
    async with (
        serve(receiver.app()) as hook,
        notification(infra) as app,
        dispatch_publisher(infra) as publisher,
    ):
        registered = await register_webhook(
            app,
            url=f"{hook.base_url}/hook",
            audience="dispatcher",
            bearer=token(Role.DISPATCHER, "desk-1"),
        )
        assert registered.status_code == 201, registered.text

        event = breach()
        envelope = Envelope.wrap(event)
        await publish(publisher, envelope)
        webhook_log = await wait_sent(app, 1, channel="webhook", incident_id=str(event.incident_id))

    assert [a["outcome"] for a in webhook_log[0]["attempts"]] == ["retry", "retry", "sent"]
    assert len(receiver.calls) == 3
    assert len(receiver.accepted) == 1
    headers, body = receiver.accepted[0]
    assert verify(
        WEBHOOK_SECRET, headers[TIMESTAMP_HEADER.lower()], body, headers[SIGNATURE_HEADER.lower()]
    )
    assert not verify(
        "not-the-secret", headers[TIMESTAMP_HEADER.lower()], body, headers[SIGNATURE_HEADER.lower()]
    )
    message = json.loads(body)
    assert message["type"] == "target_breached"
    assert message["event_id"] == str(envelope.event_id)
    assert message["stage"] == "T1"
    # Every retry is the same delivery, so a receiver can recognise a repeat.
    assert len({h[DELIVERY_HEADER.lower()] for h, _, _ in receiver.calls}) == 1


async def test_a_dead_webhook_is_dead_lettered_while_other_deliveries_flow(infra: Infra) -> None:
    receiver = Receiver(always_fail=True, release=asyncio.Event())
    alice = uuid.uuid4()
    async with (
        serve(receiver.app()) as hook,
        notification(infra, webhook_max_attempts=3, webhook_timeout_s=30) as app,
        dispatch_publisher(infra) as publisher,
    ):
        registered = await register_webhook(
            app,
            url=f"{hook.base_url}/hook",
            audience="dispatcher",
            bearer=token(Role.OPERATOR, "ops"),
        )
        assert registered.status_code == 201, registered.text
        event = breach()
        envelope = Envelope.wrap(event)
        await publish(publisher, envelope)
        await asyncio.wait_for(receiver.arrived.wait(), 10)

        # The receiver is holding the webhook call; an offer still reaches Alice.
        async with responder_stream(app, alice) as stream:
            for_alice = offer(responder_id=alice)
            await publish(publisher, Envelope.wrap(for_alice))
            received = await stream.next()
        assert received.data["offer_id"] == str(for_alice.offer_id)
        assert receiver.calls == []

        receiver.release.set()  # type: ignore[union-attr]
        dead = await TopicReader(infra.kafka, dead_letter_topic(INCIDENTS)).wait_for(
            lambda e: (
                e.type == "DeadLetter"
                and e.payload.get("delivery", {}).get("event_id") == str(envelope.event_id)
            ),
            timeout=15,
        )

        async def failed() -> list[dict[str, object]]:
            log = await delivery_log(app, incident_id=str(event.incident_id))
            return [d for d in log if d["channel"] == "webhook" and d["dead_lettered_at"]]

        webhook_log = await eventually(failed, timeout=10)
        full_log = await delivery_log(app, incident_id=str(event.incident_id))

    assert dead[0].payload["delivery"]["channel"] == "webhook"
    assert dead[0].payload["delivery"]["attempts"] == 3
    assert json.loads(dead[0].payload["message"])["type"] == "target_breached"
    assert webhook_log[0]["status"] == "failed"
    assert [a["outcome"] for a in webhook_log[0]["attempts"]] == ["retry", "retry", "failed"]
    assert len(receiver.calls) == 3
    # The dispatchers' live stream got the same breach, unaffected by the dead webhook.
    assert [(d["channel"], d["status"]) for d in full_log if d["channel"] == "stream"] == [
        ("stream", "sent")
    ]


async def test_a_duplicate_event_is_delivered_once(infra: Infra) -> None:
    receiver = Receiver()
    alice = uuid.uuid4()
    async with (
        serve(receiver.app()) as hook,
        notification(infra) as app,
        dispatch_publisher(infra) as publisher,
    ):
        registered = await register_webhook(
            app,
            url=f"{hook.base_url}/hook",
            audience="dispatcher",
            bearer=token(Role.SERVICE, "dispatch"),
        )
        assert registered.status_code == 201, registered.text
        async with responder_stream(app, alice) as stream:
            first = offer(responder_id=alice)
            envelope = Envelope.wrap(first)
            await publish(publisher, envelope)
            await publish(publisher, envelope)
            alarm = Envelope.wrap(breach(first.incident_id))
            await publish(publisher, alarm)
            await publish(publisher, alarm)
            expired = OfferExpired(
                incident_id=first.incident_id, offer_id=first.offer_id, responder_id=alice
            )
            await publish(publisher, Envelope.wrap(expired))
            messages = [await stream.next(), await stream.next()]

        log = await wait_sent(app, 4, incident_id=str(first.incident_id))

    # The repeat of the offer never reached the stream: the next message is the expiry.
    assert [m.event for m in messages] == ["offer", "offer_withdrawn"]
    by_event = sorted((d["event_type"], d["channel"], d["recipient"]) for d in log)
    assert by_event == [
        ("OfferExpired", "stream", str(alice)),
        ("ResponderOffered", "stream", str(alice)),
        ("TargetBreached", "stream", "dispatchers"),
        ("TargetBreached", "webhook", registered.json()["webhook_id"]),
    ]
    assert [json.loads(b)["event_id"] for _, b in receiver.accepted] == [str(alarm.event_id)]
