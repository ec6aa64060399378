"""The 1-3-5 clocks with a fake clock: every stage met, breached at its deadline or
still pending; unit status transitions; zone tiers; metrics."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.dispatch import service
from shared.errors import Conflict, DomainError, NotFound
from shared.events import (
    AvailabilityChanged,
    IncidentOpened,
    MilestoneReached,
    ResponderOffered,
    TargetBreached,
    UnitStatusChanged,
)
from tests.unit.dispatch_support import HERE, KEY_AREA, Engine, engine_at, north


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    async with engine_at(tmp_path / "dispatch.db") as e:
        yield e


async def accept_all(engine: Engine) -> list[uuid.UUID]:
    """Every open offer is accepted; returns the responders in offer order."""
    accepted = []
    for offered in await engine.events(ResponderOffered):
        assert isinstance(offered, ResponderOffered)
        await service.accept_offer(
            dispatch=engine.dispatch,
            offer_id=offered.offer_id,
            responder_id=str(offered.responder_id),
        )
        accepted.append(offered.responder_id)
    return accepted


async def status(engine: Engine, incident_id: uuid.UUID, responder: uuid.UUID, to: str) -> None:
    await service.set_unit_status(
        dispatch=engine.dispatch, incident_id=incident_id, responder_id=responder, status=to
    )


async def breached_stages(engine: Engine) -> list[str]:
    return [e.stage for e in await engine.events(TargetBreached) if isinstance(e, TargetBreached)]


async def stages(engine: Engine, incident_id: uuid.UUID) -> dict[str, tuple[str, float | None]]:
    detail = await engine.detail(incident_id)
    return {m.stage: (m.state, m.seconds) for m in detail.milestones}


async def test_every_stage_is_met_with_the_seconds_it_took(engine: Engine) -> None:
    engine.locator.add("volunteer", *north(HERE, 100))
    engine.locator.add("patrol", *north(HERE, 900), travel_mode="car")
    incident_id = await engine.report("theft")
    engine.clock.advance(20)
    volunteer, patrol = await accept_all(engine)
    assert await stages(engine, incident_id) == {
        "T1": ("met", 20),
        "T3": ("pending", None),
        "T5": ("pending", None),
    }

    engine.clock.advance(40)
    await status(engine, incident_id, volunteer, "en_route")
    engine.clock.advance(60)
    await status(engine, incident_id, volunteer, "on_scene")
    assert (await stages(engine, incident_id))["T3"] == ("met", 120)
    assert (await stages(engine, incident_id))["T5"] == ("pending", None)

    engine.clock.advance(100)
    await status(engine, incident_id, patrol, "on_scene")

    assert await stages(engine, incident_id) == {
        "T1": ("met", 20),
        "T3": ("met", 120),
        "T5": ("met", 220),
    }
    reached = [e for e in await engine.events(MilestoneReached) if isinstance(e, MilestoneReached)]
    assert [(e.stage, e.seconds, e.target_s) for e in reached] == [
        ("T1", 20, 60),
        ("T3", 120, 180),
        ("T5", 220, 300),
    ]
    # Every deadline was met, so no timer has anything left to breach.
    await engine.tick(1000)
    assert await engine.events(TargetBreached) == []
    labels = {"category": "theft", "grid": "none"}
    assert engine.metric("dispatch_targets_met_total", stage="T5", **labels) == 1
    assert engine.metric("dispatch_response_seconds_bucket", stage="T3", le="120.0", **labels) == 1
    assert engine.metric("dispatch_response_seconds_bucket", stage="T3", le="60.0", **labels) == 0


async def test_a_target_breaches_at_its_deadline_while_the_incident_is_open(
    engine: Engine,
) -> None:
    incident_id = await engine.report("other")

    await engine.tick(59)
    assert await engine.events(TargetBreached) == []
    assert (await stages(engine, incident_id))["T1"] == ("pending", None)

    await engine.tick(1)

    (breach,) = await engine.events(TargetBreached)
    assert isinstance(breach, TargetBreached)
    assert (breach.incident_id, breach.stage, breach.target_s) == (incident_id, "T1", 60)
    assert (await stages(engine, incident_id))["T1"] == ("breached", None)
    assert (await engine.detail(incident_id)).status == "open"
    labels = {"stage": "T1", "category": "other", "grid": "none"}
    assert engine.metric("dispatch_targets_breached_total", **labels) == 1

    await engine.tick(240)
    assert await breached_stages(engine) == ["T1", "T3", "T5"]


async def test_a_breached_stage_keeps_its_state_but_records_when_it_was_reached(
    engine: Engine,
) -> None:
    incident_id = await engine.report("other")
    await engine.tick(70)
    responder = engine.locator.add("volunteer", *north(HERE, 100))
    await service.retry_waiting(dispatch=engine.dispatch)
    await accept_all(engine)

    assert (await stages(engine, incident_id))["T1"] == ("breached", 70)
    assert await engine.events(MilestoneReached) == []
    await status(engine, incident_id, responder, "on_scene")
    assert (await stages(engine, incident_id))["T3"] == ("met", 70)


async def test_a_stage_reached_late_before_its_timer_fires_is_breached(engine: Engine) -> None:
    responder = engine.locator.add("volunteer", *north(HERE, 100))
    incident_id = await engine.report("other")
    await accept_all(engine)
    engine.clock.advance(200)  # the T3 timer has not fired yet

    await status(engine, incident_id, responder, "on_scene")

    assert (await stages(engine, incident_id))["T3"] == ("breached", 200)
    assert await breached_stages(engine) == ["T3"]
    await engine.tick(0)
    assert len(await engine.events(TargetBreached)) == 1


async def test_a_key_area_tightens_the_targets(engine: Engine) -> None:
    incident_id = await engine.report("other", KEY_AREA)

    (opened,) = await engine.events(IncidentOpened)
    assert isinstance(opened, IncidentOpened)
    assert (opened.grid, opened.office, opened.zone_tier) == ("DC-01", "dongcheng-central", "key")
    assert [t.target_s for t in opened.targets] == [30, 90, 150]
    await engine.tick(30)
    assert (await stages(engine, incident_id))["T1"] == ("breached", None)


async def test_unit_status_moves_forward_and_cleared_frees_the_responder(engine: Engine) -> None:
    responder = engine.locator.add("volunteer", *north(HERE, 100))
    incident_id = await engine.report("other")
    await accept_all(engine)

    await status(engine, incident_id, responder, "en_route")
    await status(engine, incident_id, responder, "en_route")  # a repeat changes nothing
    await status(engine, incident_id, responder, "on_scene")
    with pytest.raises(DomainError) as backwards:
        await status(engine, incident_id, responder, "en_route")
    assert isinstance(backwards.value, Conflict)
    await status(engine, incident_id, responder, "cleared")

    changes = [
        e for e in await engine.events(UnitStatusChanged) if isinstance(e, UnitStatusChanged)
    ]
    assert [c.status for c in changes] == ["assigned", "en_route", "on_scene", "cleared"]
    availability = [
        (e.status, e.responder_id)
        for e in await engine.events(AvailabilityChanged)
        if isinstance(e, AvailabilityChanged)
    ]
    assert availability == [("busy", responder), ("free", responder)]
    with pytest.raises(DomainError) as cleared:
        await status(engine, incident_id, responder, "on_scene")
    assert isinstance(cleared.value, Conflict)


async def test_only_units_on_the_incident_have_a_status(engine: Engine) -> None:
    incident_id = await engine.report("other")
    with pytest.raises(DomainError) as missing:
        await status(engine, incident_id, uuid.uuid4(), "en_route")
    assert isinstance(missing.value, NotFound)
    with pytest.raises(DomainError) as no_incident:
        await status(engine, uuid.uuid4(), uuid.uuid4(), "en_route")
    assert isinstance(no_incident.value, NotFound)


async def test_the_queue_ranks_by_time_left_with_breaches_on_top(engine: Engine) -> None:
    engine.locator.add("volunteer", *north(HERE, 100))
    settled = await engine.report("other", north(HERE, 0))
    await accept_all(engine)  # T1 met at 0 s: next due is T3, at 180 s
    engine.clock.advance(30)
    engine.locator.add("volunteer", *north(HERE, 2100))
    waiting = await engine.report("other", north(HERE, 2000))  # offered, T1 due at 90 s
    engine.clock.advance(10)
    unanswerable = await engine.report("other", north(HERE, 9000))  # nobody left to offer

    queue = await service.list_incidents(dispatch=engine.dispatch, status="open")
    assert [i.incident_id for i in queue] == [unanswerable, waiting, settled]
    assert queue[0].no_responder is True
    assert queue[1].next_due_at is not None
    assert queue[2].next_due_at is not None
    assert queue[1].next_due_at < queue[2].next_due_at

    engine.clock.advance(50)  # 90 s: waiting's T1 passes before unanswerable's (100 s)
    await engine.tick(0)
    queue = await service.list_incidents(dispatch=engine.dispatch, status="open")
    assert [i.incident_id for i in queue] == [unanswerable, waiting, settled]
    assert queue[1].milestones[0].state == "breached"
    assert queue[2].milestones[0].state == "met"
