"""Offers with a fake clock and locator: nearest first, accept, decline, expiry,
parallel units, escalation and no double booking."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.dispatch import service
from services.dispatch.models import Offer
from shared.errors import Conflict, DomainError, Forbidden, NotFound
from shared.events import (
    AvailabilityChanged,
    IncidentOpened,
    NoResponderAvailable,
    OfferAccepted,
    OfferDeclined,
    OfferExpired,
    ResponderOffered,
    UnitStatusChanged,
)
from tests.unit.dispatch_support import HERE, Engine, engine_at, north


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    async with engine_at(tmp_path / "dispatch.db") as e:
        yield e


async def offers_of(engine: Engine) -> list[ResponderOffered]:
    return [e for e in await engine.events(ResponderOffered) if isinstance(e, ResponderOffered)]


async def offer_row(engine: Engine, offered: ResponderOffered) -> Offer:
    async with engine.dispatch.sessions() as s:
        offer = await s.get(Offer, offered.offer_id)
    assert offer is not None
    return offer


async def test_a_report_is_offered_to_the_nearest_eligible_responder(engine: Engine) -> None:
    near = engine.locator.add("volunteer", *north(HERE, 100))
    engine.locator.add("volunteer", *north(HERE, 400))

    incident_id = await engine.report("other")

    (opened,) = await engine.events(IncidentOpened)
    assert isinstance(opened, IncidentOpened)
    assert opened.incident_id == incident_id
    (offered,) = await offers_of(engine)
    assert offered.responder_id == near
    assert offered.incident_id == incident_id
    assert offered.distance_m == pytest.approx(100, abs=1)
    assert (offered.expires_at - engine.clock.now()).total_seconds() == 30
    assert engine.metric("dispatch_latency_seconds_count", category="other") == 1
    assert engine.metric("dispatch_offers_total", outcome="offered", kind="volunteer") == 1


async def test_a_multi_unit_plan_offers_its_units_in_parallel(engine: Engine) -> None:
    volunteer = engine.locator.add("volunteer", *north(HERE, 50))
    patrol = engine.locator.add("patrol", *north(HERE, 800), travel_mode="car")

    await engine.report("theft")

    offered = await offers_of(engine)
    assert {o.responder_id for o in offered} == {volunteer, patrol}


async def test_violence_is_never_offered_to_volunteers(engine: Engine) -> None:
    engine.locator.add("volunteer", *north(HERE, 10))
    patrol = engine.locator.add("patrol", *north(HERE, 900))

    await engine.report("violence")

    assert [o.responder_id for o in await offers_of(engine)] == [patrol]


async def test_medical_wants_first_aid(engine: Engine) -> None:
    engine.locator.add("volunteer", *north(HERE, 10))
    medic = engine.locator.add("volunteer", *north(HERE, 300), skills=("first_aid",))

    await engine.report("medical")

    assert medic in [o.responder_id for o in await offers_of(engine)]


async def test_accepting_makes_a_unit_and_tells_the_locator_busy(engine: Engine) -> None:
    responder = engine.locator.add("volunteer", *north(HERE, 100))
    incident_id = await engine.report("other")
    (offered,) = await offers_of(engine)
    engine.clock.advance(12)

    offer = await service.accept_offer(
        dispatch=engine.dispatch, offer_id=offered.offer_id, responder_id=str(responder)
    )

    assert offer.status == "accepted"
    (accepted,) = await engine.events(OfferAccepted)
    assert isinstance(accepted, OfferAccepted)
    assert accepted.responder_id == responder
    (busy,) = await engine.events(AvailabilityChanged)
    assert isinstance(busy, AvailabilityChanged)
    assert (busy.status, busy.incident_id) == ("busy", incident_id)
    (assigned,) = await engine.events(UnitStatusChanged)
    assert isinstance(assigned, UnitStatusChanged)
    assert assigned.status == "assigned"
    detail = await engine.detail(incident_id)
    assert [(u.responder_id, u.status) for u in detail.units] == [(responder, "assigned")]
    t1 = detail.milestones[0]
    assert (t1.stage, t1.state, t1.seconds) == ("T1", "met", 12)
    assert engine.metric("dispatch_offers_total", outcome="accepted", kind="volunteer") == 1


async def test_only_the_offered_responder_may_answer(engine: Engine) -> None:
    engine.locator.add("volunteer", *north(HERE, 100))
    other = engine.locator.add("volunteer", *north(HERE, 300))
    await engine.report("other")
    (offered,) = await offers_of(engine)

    for answer in (service.accept_offer, service.decline_offer):
        with pytest.raises(DomainError) as refused:
            await answer(
                dispatch=engine.dispatch, offer_id=offered.offer_id, responder_id=str(other)
            )
        assert isinstance(refused.value, Forbidden)
    assert (await offer_row(engine, offered)).status == "pending"


async def test_answering_an_answered_offer_is_a_conflict(engine: Engine) -> None:
    responder = engine.locator.add("volunteer", *north(HERE, 100))
    await engine.report("other")
    (offered,) = await offers_of(engine)
    await service.accept_offer(
        dispatch=engine.dispatch, offer_id=offered.offer_id, responder_id=str(responder)
    )

    for answer in (service.accept_offer, service.decline_offer):
        with pytest.raises(DomainError) as conflict:
            await answer(
                dispatch=engine.dispatch, offer_id=offered.offer_id, responder_id=str(responder)
            )
        assert isinstance(conflict.value, Conflict)


async def test_an_unknown_offer_is_not_found(engine: Engine) -> None:
    import uuid

    with pytest.raises(DomainError) as missing:
        await service.accept_offer(
            dispatch=engine.dispatch, offer_id=uuid.uuid4(), responder_id=str(uuid.uuid4())
        )
    assert isinstance(missing.value, NotFound)


async def test_declining_frees_the_responder_and_offers_the_next_nearest(engine: Engine) -> None:
    first = engine.locator.add("volunteer", *north(HERE, 100))
    second = engine.locator.add("volunteer", *north(HERE, 300))
    incident_id = await engine.report("other")
    (offered,) = await offers_of(engine)

    await service.decline_offer(
        dispatch=engine.dispatch, offer_id=offered.offer_id, responder_id=str(first)
    )

    (declined,) = await engine.events(OfferDeclined)
    assert isinstance(declined, OfferDeclined)
    assert declined.responder_id == first
    (freed,) = await engine.events(AvailabilityChanged)
    assert isinstance(freed, AvailabilityChanged)
    assert (freed.responder_id, freed.status, freed.incident_id) == (first, "free", incident_id)
    assert [o.responder_id for o in await offers_of(engine)] == [first, second]
    assert engine.metric("dispatch_offers_total", outcome="declined", kind="volunteer") == 1


async def test_a_declined_responder_is_never_asked_again_for_that_incident(engine: Engine) -> None:
    first = engine.locator.add("volunteer", *north(HERE, 100))
    second = engine.locator.add("volunteer", *north(HERE, 300))
    incident_id = await engine.report("other")
    (offer1,) = await offers_of(engine)
    await service.decline_offer(
        dispatch=engine.dispatch, offer_id=offer1.offer_id, responder_id=str(first)
    )
    await engine.deliver_availability()  # the locator frees the first responder
    offer2 = (await offers_of(engine))[-1]

    await service.decline_offer(
        dispatch=engine.dispatch, offer_id=offer2.offer_id, responder_id=str(second)
    )

    assert [o.responder_id for o in await offers_of(engine)] == [first, second]
    (flag,) = await engine.events(NoResponderAvailable)
    assert isinstance(flag, NoResponderAvailable)
    assert flag.incident_id == incident_id


async def test_an_unanswered_offer_expires_at_its_deadline_and_moves_on(engine: Engine) -> None:
    first = engine.locator.add("volunteer", *north(HERE, 100))
    second = engine.locator.add("volunteer", *north(HERE, 300))
    incident_id = await engine.report("other")

    await engine.tick(29.9)
    assert await engine.events(OfferExpired) == []

    await engine.tick(0.1)

    (expired,) = await engine.events(OfferExpired)
    assert isinstance(expired, OfferExpired)
    assert expired.responder_id == first
    (freed,) = await engine.events(AvailabilityChanged)
    assert isinstance(freed, AvailabilityChanged)
    assert (freed.responder_id, freed.status, freed.incident_id) == (first, "free", incident_id)
    assert [o.responder_id for o in await offers_of(engine)] == [first, second]
    assert engine.metric("dispatch_offers_total", outcome="expired", kind="volunteer") == 1


async def test_accepting_a_lapsed_offer_is_a_conflict_and_moves_on(engine: Engine) -> None:
    first = engine.locator.add("volunteer", *north(HERE, 100))
    second = engine.locator.add("volunteer", *north(HERE, 300))
    await engine.report("other")
    (offered,) = await offers_of(engine)
    engine.clock.advance(31)  # the timer has not fired yet

    with pytest.raises(DomainError) as conflict:
        await service.accept_offer(
            dispatch=engine.dispatch, offer_id=offered.offer_id, responder_id=str(first)
        )

    assert isinstance(conflict.value, Conflict)
    assert (await offer_row(engine, offered)).status == "expired"
    assert [o.responder_id for o in await offers_of(engine)] == [first, second]
    assert await engine.tick(0) == 0  # the lapsed offer's timer went with it


async def test_nobody_available_is_flagged_once_and_retried(engine: Engine) -> None:
    incident_id = await engine.report("other")
    await service.retry_waiting(dispatch=engine.dispatch)
    await service.retry_waiting(dispatch=engine.dispatch)

    (flag,) = await engine.events(NoResponderAvailable)
    assert isinstance(flag, NoResponderAvailable)
    assert flag.kinds == ("volunteer", "auxiliary", "patrol")
    (queued,) = await service.list_incidents(dispatch=engine.dispatch, status="open")
    assert queued.no_responder is True

    arriving = engine.locator.add("patrol", *north(HERE, 500))
    await service.retry_waiting(dispatch=engine.dispatch)

    (offered,) = await offers_of(engine)
    assert offered.responder_id == arriving
    assert (await engine.detail(incident_id)).no_responder is False
    assert engine.metric("dispatch_no_responder_total", category="other", grid="none") == 1


async def test_a_locator_that_cannot_answer_is_retried_without_flagging(engine: Engine) -> None:
    engine.locator.down = True
    responder = engine.locator.add("volunteer", *north(HERE, 100))
    incident_id = await engine.report("other")
    assert await offers_of(engine) == []
    assert (await engine.detail(incident_id)).no_responder is False

    engine.locator.down = False
    await service.retry_waiting(dispatch=engine.dispatch)

    assert [o.responder_id for o in await offers_of(engine)] == [responder]


async def test_one_free_responder_is_never_offered_two_incidents(engine: Engine) -> None:
    only = engine.locator.add("volunteer", *north(HERE, 50))
    first = await engine.report("other", north(HERE, 0))
    second = await engine.report("fraud", north(HERE, 100))

    offered = await offers_of(engine)
    assert [(o.incident_id, o.responder_id) for o in offered] == [(first, only)]
    assert (await engine.detail(second)).no_responder is True
