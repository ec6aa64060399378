"""Alarms that mean it: red when nobody is coming, amber when a slot is unfilled but a
unit is on its way; and the decision trace each offer keeps."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.dispatch import service
from services.dispatch.alarms import AlarmLevel, alarm_level
from services.dispatch.domain import PlanSlot
from services.dispatch.trace import earlier_outcomes, explain
from shared.events import NoResponderAvailable, ResponderOffered, SlotUnfilled
from tests.unit.dispatch_support import HERE, Engine, engine_at, north


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    async with engine_at(tmp_path / "dispatch.db") as e:
        yield e


async def offers_of(engine: Engine) -> list[ResponderOffered]:
    return [e for e in await engine.events(ResponderOffered) if isinstance(e, ResponderOffered)]


def test_the_alarm_is_red_only_when_nobody_is_coming() -> None:
    assert alarm_level(missing_slots=0, open_offers=0, live_units=0) == AlarmLevel.NONE
    assert alarm_level(missing_slots=1, open_offers=1, live_units=0) == AlarmLevel.AMBER
    assert alarm_level(missing_slots=1, open_offers=0, live_units=1) == AlarmLevel.AMBER
    assert alarm_level(missing_slots=2, open_offers=0, live_units=0) == AlarmLevel.RED


async def test_no_volunteer_but_a_patrol_coming_is_amber_and_turns_red_when_it_declines(
    engine: Engine,
) -> None:
    patrol = engine.locator.add("patrol", *north(HERE, 300))
    incident_id = await engine.report("dispute")

    (offered,) = await offers_of(engine)
    assert offered.responder_id == patrol
    detail = await engine.detail(incident_id)
    assert (detail.slot_shortfall, detail.no_responder) == (True, False)
    (notice,) = await engine.events(SlotUnfilled)
    assert isinstance(notice, SlotUnfilled)
    assert notice.kinds == ("volunteer", "auxiliary")
    assert notice.coming == 1
    assert await engine.events(NoResponderAvailable) == []
    assert engine.metric("dispatch_slot_unfilled_total", category="dispute", grid="none") == 1
    assert engine.metric("dispatch_no_responder_total", category="dispute", grid="none") == 0
    # The queue does not flag an amber incident: only red goes on top.
    (queued,) = await service.list_incidents(dispatch=engine.dispatch, status="open")
    assert queued.slot_shortfall is True
    assert queued.no_responder is False

    await service.decline_offer(
        dispatch=engine.dispatch, offer_id=offered.offer_id, responder_id=str(patrol)
    )

    detail = await engine.detail(incident_id)
    assert (detail.slot_shortfall, detail.no_responder) == (False, True)
    (alarm,) = await engine.events(NoResponderAvailable)
    assert isinstance(alarm, NoResponderAvailable)
    assert engine.metric("dispatch_no_responder_total", category="dispute", grid="none") == 1
    assert len(await engine.events(SlotUnfilled)) == 1


async def test_an_accepted_patrol_keeps_it_amber_until_it_clears(engine: Engine) -> None:
    patrol = engine.locator.add("patrol", *north(HERE, 300))
    incident_id = await engine.report("dispute")
    (offered,) = await offers_of(engine)
    await service.accept_offer(
        dispatch=engine.dispatch, offer_id=offered.offer_id, responder_id=str(patrol)
    )
    assert (await engine.detail(incident_id)).slot_shortfall is True

    await service.set_unit_status(
        dispatch=engine.dispatch, incident_id=incident_id, responder_id=patrol, status="cleared"
    )
    await service.retry_waiting(dispatch=engine.dispatch, flagged_only=True)  # as retry_soon does

    detail = await engine.detail(incident_id)
    assert (detail.slot_shortfall, detail.no_responder) == (False, True)
    assert len(await engine.events(NoResponderAvailable)) == 1


async def test_a_volunteer_coming_free_clears_the_amber_notice(engine: Engine) -> None:
    engine.locator.add("patrol", *north(HERE, 300))
    incident_id = await engine.report("dispute")
    volunteer = engine.locator.add("volunteer", *north(HERE, 200))

    await service.retry_waiting(dispatch=engine.dispatch, flagged_only=True)

    assert volunteer in {o.responder_id for o in await offers_of(engine)}
    detail = await engine.detail(incident_id)
    assert (detail.slot_shortfall, detail.no_responder) == (False, False)


async def test_each_offer_keeps_why_this_responder_and_who_was_passed_over(
    engine: Engine,
) -> None:
    first = engine.locator.add("volunteer", *north(HERE, 100))
    busy = engine.locator.add("volunteer", *north(HERE, 200))
    engine.locator.responders[busy].status = "busy"
    spare = engine.locator.add("volunteer", *north(HERE, 300))
    patrol = engine.locator.add("patrol", *north(HERE, 450))
    incident_id = await engine.report("dispute")
    by_responder = {o.responder_id: o for o in await offers_of(engine)}
    assert set(by_responder) == {first, patrol}

    await service.decline_offer(
        dispatch=engine.dispatch, offer_id=by_responder[first].offer_id, responder_id=str(first)
    )

    detail = await engine.detail(incident_id)
    traces = {o.responder_id: o.trace for o in detail.offers}
    to_patrol, retry = traces[patrol], traces[spare]
    assert to_patrol is not None
    assert retry is not None
    assert (to_patrol.slot, to_patrol.slot_kinds) == (1, ["patrol"])
    assert {p.responder_id: p.reason for p in to_patrol.passed_over} == {
        first: "offered_this_incident",
        busy: "busy",
        spare: "wrong_kind",
    }
    assert retry.slot == 0
    assert [c.responder_id for c in retry.candidates if c.outcome == "claimed"] == [spare]
    assert {p.responder_id: p.reason for p in retry.passed_over} == {
        first: "declined_earlier",
        busy: "busy",
    }


def test_dispatch_names_what_an_excluded_responder_did_earlier() -> None:
    raw = {
        "radius_m": 500.0,
        "radius_step": 1,
        "candidates": [],
        "passed_over": [
            {"responder_id": "a", "reason": "excluded"},
            {"responder_id": "b", "reason": "excluded"},
            {"responder_id": "c", "reason": "excluded"},
            {"responder_id": "d", "reason": "wrong_kind"},
        ],
    }
    earlier = earlier_outcomes([("a", "declined"), ("b", "expired"), ("c", "accepted")], ["c"])

    trace = explain(raw, slot_index=1, slot=PlanSlot(("patrol",)), earlier=earlier)

    assert trace is not None
    assert [p["reason"] for p in trace["passed_over"]] == [
        "declined_earlier",
        "no_answer_earlier",
        "on_this_incident",
        "wrong_kind",
    ]
    assert trace["slot"] == 1
    assert trace["slot_kinds"] == ["patrol"]
