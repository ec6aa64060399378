"""Incidents with a fake clock and locator: duplicates, cancelling, resolving, merging,
manual assignment, the consumer's handlers, the live feed and surviving a restart."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from services.dispatch import service
from services.dispatch.handlers import build_batch_handlers, build_handlers
from services.dispatch.locator_client import MemoryLocator
from shared.clock import FakeClock
from shared.errors import Conflict, DomainError, Invalid
from shared.events import (
    AvailabilityChanged,
    DutyChanged,
    Envelope,
    GeoPoint,
    IncidentCancelled,
    IncidentOpened,
    IncidentResolved,
    OfferExpired,
    OfferWithdrawn,
    ReportCancelled,
    ReportMerged,
    ReportReceived,
    ResponderOffered,
    TargetBreached,
)
from tests.harness import eventually
from tests.unit.dispatch_support import HERE, Engine, engine_at, north


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    async with engine_at(tmp_path / "dispatch.db") as e:
        yield e


def report_event(
    category: str = "other", at: tuple[float, float] = HERE, **kw: object
) -> ReportReceived:
    return ReportReceived.model_validate(
        {
            "report_id": uuid.uuid4(),
            "category": category,
            "location": GeoPoint(lat=at[0], lon=at[1]),
            "received_at": kw.pop("received_at"),
            **kw,
        }
    )


async def freed(engine: Engine) -> list[uuid.UUID]:
    return [
        e.responder_id
        for e in await engine.events(AvailabilityChanged)
        if isinstance(e, AvailabilityChanged) and e.status == "free"
    ]


async def test_a_duplicate_report_joins_the_open_incident(engine: Engine) -> None:
    first = await engine.report("theft", north(HERE, 0))
    engine.clock.advance(120)

    joined = await engine.report("theft", north(HERE, 80))
    other_category = await engine.report("dispute", north(HERE, 80))
    too_far = await engine.report("theft", north(HERE, 400))

    assert joined == first
    assert len({first, other_category, too_far}) == 3
    (merged,) = await engine.events(ReportMerged)
    assert isinstance(merged, ReportMerged)
    assert merged.incident_id == first
    assert len((await engine.detail(first)).reports) == 2
    assert len(await engine.events(IncidentOpened)) == 3
    assert engine.metric("dispatch_reports_merged_total", category="theft") == 1


async def test_after_ten_minutes_a_report_opens_a_new_incident(engine: Engine) -> None:
    first = await engine.report("theft")
    engine.clock.advance(601)
    assert await engine.report("theft") != first


async def test_a_report_seen_twice_is_handled_once(engine: Engine) -> None:
    event = report_event(received_at=engine.clock.now())
    assert await service.receive_report(dispatch=engine.dispatch, report=event) is not None
    assert await service.receive_report(dispatch=engine.dispatch, report=event) is None
    assert len(await engine.events(IncidentOpened)) == 1


async def test_resolving_frees_every_unit_and_withdraws_every_offer(engine: Engine) -> None:
    volunteer = engine.locator.add("volunteer", *north(HERE, 100))
    patrol = engine.locator.add("patrol", *north(HERE, 500))
    incident_id = await engine.report("theft")
    offers = {
        e.responder_id: e
        for e in await engine.events(ResponderOffered)
        if isinstance(e, ResponderOffered)
    }
    await service.accept_offer(
        dispatch=engine.dispatch, offer_id=offers[volunteer].offer_id, responder_id=str(volunteer)
    )

    await service.resolve(dispatch=engine.dispatch, incident_id=incident_id)

    (withdrawn,) = await engine.events(OfferWithdrawn)
    assert isinstance(withdrawn, OfferWithdrawn)
    assert withdrawn.responder_id == patrol
    assert set(await freed(engine)) == {volunteer, patrol}
    assert len(await engine.events(IncidentResolved)) == 1
    detail = await engine.detail(incident_id)
    assert detail.status == "resolved"
    assert [u.status for u in detail.units] == ["cleared"]
    assert [o.status for o in detail.offers if o.responder_id == patrol] == ["withdrawn"]
    # A closed incident breaches nothing and its withdrawn offer never expires.
    await engine.tick(1000)
    assert await engine.events(TargetBreached, OfferExpired) == []
    with pytest.raises(DomainError) as closed:
        await service.resolve(dispatch=engine.dispatch, incident_id=incident_id)
    assert isinstance(closed.value, Conflict)
    with pytest.raises(DomainError) as answered:
        await service.accept_offer(
            dispatch=engine.dispatch, offer_id=offers[patrol].offer_id, responder_id=str(patrol)
        )
    assert isinstance(answered.value, Conflict)


async def test_a_dispatcher_can_cancel_an_incident(engine: Engine) -> None:
    responder = engine.locator.add("volunteer", *north(HERE, 100))
    incident_id = await engine.report("other")

    await service.cancel(dispatch=engine.dispatch, incident_id=incident_id)

    (cancelled,) = await engine.events(IncidentCancelled)
    assert isinstance(cancelled, IncidentCancelled)
    assert cancelled.reason == "dispatcher_cancelled"
    assert await freed(engine) == [responder]
    assert await service.list_incidents(dispatch=engine.dispatch, status="open") == []


async def test_the_incident_closes_when_every_report_is_cancelled(engine: Engine) -> None:
    responder = engine.locator.add("volunteer", *north(HERE, 100))
    first = report_event("theft", received_at=engine.clock.now())
    second = report_event("theft", north(HERE, 20), received_at=engine.clock.now())
    incident_id = await service.receive_report(dispatch=engine.dispatch, report=first)
    await service.receive_report(dispatch=engine.dispatch, report=second)
    assert incident_id is not None
    handlers = build_handlers(engine.dispatch)

    for report in (first, second):
        cancel = ReportCancelled(report_id=report.report_id, cancelled_at=engine.clock.now())
        await handlers[ReportCancelled](cancel, Envelope.wrap(cancel))
        if report is first:
            assert (await engine.detail(incident_id)).status == "open"

    (cancelled,) = await engine.events(IncidentCancelled)
    assert isinstance(cancelled, IncidentCancelled)
    assert cancelled.reason == "reporter_cancelled"
    assert responder in await freed(engine)


async def test_merging_moves_the_reports_and_frees_the_units(engine: Engine) -> None:
    responder = engine.locator.add("volunteer", *north(HERE, 100))
    target = await engine.report("theft", north(HERE, 0))
    source = await engine.report("dispute", north(HERE, 50))

    await service.merge(dispatch=engine.dispatch, incident_id=source, into=target)

    (closed,) = await engine.events(IncidentCancelled)
    assert isinstance(closed, IncidentCancelled)
    assert (closed.incident_id, closed.reason, closed.merged_into) == (source, "merged", target)
    moved = [e for e in await engine.events(ReportMerged) if isinstance(e, ReportMerged)]
    assert [(m.incident_id, m.from_incident_id) for m in moved] == [(target, source)]
    assert len((await engine.detail(target)).reports) == 2
    assert (await engine.detail(source)).status == "merged"
    assert responder not in await freed(engine)  # the volunteer was offered the target
    with pytest.raises(DomainError) as again:
        await service.merge(dispatch=engine.dispatch, incident_id=source, into=target)
    assert isinstance(again.value, Conflict)
    with pytest.raises(DomainError) as itself:
        await service.merge(dispatch=engine.dispatch, incident_id=target, into=target)
    assert isinstance(itself.value, Invalid)


async def test_a_dispatcher_assigns_a_named_responder_or_the_next_nearest(engine: Engine) -> None:
    incident_id = await engine.report("other")  # nobody on duty yet: flagged
    named = engine.locator.add("patrol", *north(HERE, 3000), travel_mode="car")
    nearest = engine.locator.add("volunteer", *north(HERE, 200))

    unit = await service.assign(
        dispatch=engine.dispatch, incident_id=incident_id, responder_id=named
    )
    assert (unit.responder_id, unit.status) == (named, "assigned")
    with pytest.raises(DomainError) as twice:
        await service.assign(dispatch=engine.dispatch, incident_id=incident_id, responder_id=named)
    assert isinstance(twice.value, Conflict)

    extra = await service.assign(
        dispatch=engine.dispatch, incident_id=incident_id, responder_id=None
    )
    assert extra.responder_id == nearest

    busy = [
        e.responder_id
        for e in await engine.events(AvailabilityChanged)
        if isinstance(e, AvailabilityChanged) and e.status == "busy"
    ]
    assert busy == [named, nearest]
    detail = await engine.detail(incident_id)
    assert detail.no_responder is False
    assert {u.responder_id for u in detail.units} == {named, nearest}


async def test_assigning_a_responder_who_is_not_free_is_a_conflict(engine: Engine) -> None:
    taken = engine.locator.add("volunteer", *north(HERE, 100))
    await engine.report("other", north(HERE, 0))
    second = await engine.report("fraud", north(HERE, 50))
    with pytest.raises(DomainError) as conflict:
        await service.assign(dispatch=engine.dispatch, incident_id=second, responder_id=taken)
    assert isinstance(conflict.value, Conflict)
    assert conflict.value.code == "responder_unavailable"


async def test_assignment_replaces_an_open_offer_for_the_same_unit(engine: Engine) -> None:
    offered = engine.locator.add("volunteer", *north(HERE, 100))
    chosen = engine.locator.add("patrol", *north(HERE, 900))
    engine.locator.responders[chosen].on_duty = False  # not offered automatically
    incident_id = await engine.report("other")
    engine.locator.responders[chosen].on_duty = True

    await service.assign(dispatch=engine.dispatch, incident_id=incident_id, responder_id=chosen)

    (withdrawn,) = await engine.events(OfferWithdrawn)
    assert isinstance(withdrawn, OfferWithdrawn)
    assert (withdrawn.responder_id, withdrawn.reason) == (offered, "reassigned")
    assert await freed(engine) == [offered]


async def test_coming_on_duty_or_freeing_up_wakes_the_waiting_incidents(engine: Engine) -> None:
    woken: list[str] = []
    engine.dispatch.retry_soon = lambda: woken.append("retry")
    handlers = build_handlers(engine.dispatch)
    rid = uuid.uuid4()
    events = [
        DutyChanged(responder_id=rid, on_duty=True, kind="volunteer"),
        DutyChanged(responder_id=rid, on_duty=False, kind="volunteer"),
        AvailabilityChanged(responder_id=rid, status="free", incident_id=uuid.uuid4()),
        AvailabilityChanged(responder_id=rid, status="busy", incident_id=uuid.uuid4()),
    ]
    for event in events:
        await handlers[type(event)](event, Envelope.wrap(event))
    assert woken == ["retry", "retry"]


async def test_every_change_reaches_the_live_feed(engine: Engine) -> None:
    engine.locator.add("volunteer", *north(HERE, 100))
    incident_id = await engine.report("other")
    kinds = [
        kind
        for change in engine.feed.published
        if change["incident_id"] == str(incident_id)
        for kind in change["events"]
    ]
    # Opened with its first offer, in one transaction: one change carries both.
    assert "IncidentOpened" in kinds
    assert "ResponderOffered" in kinds


async def test_a_restart_mid_offer_resumes_the_timers(tmp_path: Path) -> None:
    path = tmp_path / "dispatch.db"
    clock = FakeClock()
    locator = MemoryLocator()
    first = locator.add("volunteer", *north(HERE, 100))
    second = locator.add("volunteer", *north(HERE, 300))
    async with engine_at(path, clock=clock, locator=locator) as before:
        incident_id = await before.report("other")

    clock.advance(65)  # dispatch was down when the offer lapsed and T1 passed
    async with engine_at(path, clock=clock, locator=locator) as after:
        await after.tick(0)
        (expired,) = await after.events(OfferExpired)
        assert isinstance(expired, OfferExpired)
        assert expired.responder_id == first
        offered = [
            e for e in await after.events(ResponderOffered) if isinstance(e, ResponderOffered)
        ]
        assert [o.responder_id for o in offered] == [first, second]
        (breach,) = await after.events(TargetBreached)
        assert isinstance(breach, TargetBreached)
        assert breach.incident_id == incident_id
        assert clock.now() - (await after.detail(incident_id)).received_at == timedelta(seconds=65)


async def test_the_open_incidents_gauge_follows_opening_and_closing(engine: Engine) -> None:
    first = await engine.report("other", north(HERE, 0))
    engine.clock.advance(90)
    await engine.report("fraud", north(HERE, 5000))
    assert engine.metric("dispatch_open_incidents") == 2
    assert engine.metric("dispatch_oldest_open_incident_age_seconds") == 90

    await service.resolve(dispatch=engine.dispatch, incident_id=first)

    assert engine.metric("dispatch_open_incidents") == 1
    assert engine.metric("dispatch_oldest_open_incident_age_seconds") == 0


async def test_a_burst_of_changes_refreshes_the_gauges_once_after_the_pause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with engine_at(tmp_path / "dispatch.db", gauge_refresh_s=0.2) as debounced:
        queries: list[str] = []
        refresh = debounced.dispatch.refresh_gauges

        async def counted() -> None:
            queries.append("gauges")
            await refresh()

        monkeypatch.setattr(debounced.dispatch, "refresh_gauges", counted)
        for metres in (0, 5000, 10000):
            await debounced.report("fraud", north(HERE, metres))
        assert (queries, debounced.metric("dispatch_open_incidents")) == ([], 0)
        await eventually(lambda: debounced.metric("dispatch_open_incidents") == 3, timeout=5)
        assert queries == ["gauges"]


async def test_a_console_following_the_feed_sees_changes_after_it_subscribed(
    engine: Engine,
) -> None:
    async with engine.feed.follow() as changes:
        incident_id = await engine.report("other")
        change = await anext(changes)
    # Nobody is on duty: opened and flagged in the same transaction, one change.
    assert change == {
        "incident_id": str(incident_id),
        "events": ["IncidentOpened", "NoResponderAvailable"],
    }


async def test_a_run_of_reports_is_handled_side_by_side_and_duplicates_still_merge(
    engine: Engine,
) -> None:
    far = north(HERE, 2_000)
    near_here = engine.locator.add("volunteer", *north(HERE, 50))
    near_far = engine.locator.add("volunteer", *north(far, 50))
    now = engine.clock.now()
    run = [
        report_event(at=HERE, received_at=now),
        report_event(at=far, received_at=now),
        report_event(at=north(HERE, 20), received_at=now),  # a duplicate of the first
    ]
    handle = build_batch_handlers(engine.dispatch)[ReportReceived]

    await handle([(event, Envelope.wrap(event)) for event in run])
    await handle([(event, Envelope.wrap(event)) for event in run])  # redelivered: no change

    opened = await engine.events(IncidentOpened)
    offered = await engine.events(ResponderOffered)
    assert len(opened) == 2
    assert len(await engine.events(ReportMerged)) == 1
    assert sorted(str(e.responder_id) for e in offered if isinstance(e, ResponderOffered)) == (
        sorted([str(near_here), str(near_far)])
    )
