"""Dispatch's one truth about who is booked, on a fake locator: a claim for a responder
dispatch already holds goes to the next one at once and restates the booking; the
reconcile lists everyone booked; and reports within the duplicate radius always share a
merge lock, wherever the cell borders fall."""

from __future__ import annotations

import math
import random
from pathlib import Path

from services.dispatch import service
from services.dispatch.merge_locks import lock_keys
from services.dispatch.service.bookings import reconcile_bookings
from shared.events import AvailabilityChanged, BookingsReconciled, ResponderOffered
from tests.unit.dispatch_support import HERE, Engine, engine_at, north


async def offers(engine: Engine) -> list[ResponderOffered]:
    return [e for e in await engine.events(ResponderOffered) if isinstance(e, ResponderOffered)]


async def test_a_claim_for_a_responder_booked_elsewhere_goes_to_the_next_at_once(
    tmp_path: Path,
) -> None:
    async with engine_at(tmp_path / "d.db") as engine:
        booked = engine.locator.add("volunteer", *north(HERE, 100))
        first = await engine.report("other", north(HERE, 3000))
        # The locator forgets the booking (its Redis came back empty, say).
        engine.locator.set_availability(booked, "free", first)
        nearby = engine.locator.add("volunteer", *north(HERE, 500))

        second = await engine.report("other", HERE)

        offered = await offers(engine)
        assert [(o.incident_id, o.responder_id) for o in offered] == [
            (first, booked),
            (second, nearby),
        ]
        restated = [
            e
            for e in await engine.events(AvailabilityChanged)
            if isinstance(e, AvailabilityChanged) and e.status == "busy"
        ]
        assert [(e.responder_id, e.incident_id) for e in restated] == [(booked, first)]
        assert engine.metric("dispatch_claims_refused_total") == 1


async def test_a_claim_for_the_only_responder_booked_elsewhere_flags_the_incident(
    tmp_path: Path,
) -> None:
    async with engine_at(tmp_path / "d.db") as engine:
        booked = engine.locator.add("volunteer", *north(HERE, 100))
        first = await engine.report("other", HERE)
        engine.locator.set_availability(booked, "free", first)

        second = await engine.report("other", north(HERE, 3000))

        assert (await engine.detail(second)).no_responder is True
        offered = await offers(engine)
        assert [o.incident_id for o in offered] == [first]


async def test_the_reconcile_restates_every_booking_and_lists_them(tmp_path: Path) -> None:
    async with engine_at(tmp_path / "d.db") as engine:
        offered = engine.locator.add("volunteer", *north(HERE, 100))
        accepted = engine.locator.add("volunteer", *north(HERE, 3100))
        first = await engine.report("other", HERE)
        second = await engine.report("other", north(HERE, 3000))
        (_, offer) = await offers(engine)
        await service.accept_offer(
            dispatch=engine.dispatch, offer_id=offer.offer_id, responder_id=str(accepted)
        )
        before = len(await engine.events())

        assert await reconcile_bookings(dispatch=engine.dispatch, reason="periodic") == 2

        staged = (await engine.events())[before:]
        busy = {
            (e.responder_id, e.incident_id) for e in staged if isinstance(e, AvailabilityChanged)
        }
        assert busy == {(offered, first), (accepted, second)}
        (listed,) = [e for e in staged if isinstance(e, BookingsReconciled)]
        assert set(listed.responder_ids) == {offered, accepted}
        assert listed.grace_s > engine.dispatch.settings.reconcile_interval_s


def _metres_away(point: tuple[float, float], metres: float, bearing: float) -> tuple[float, float]:
    lat = point[0] + metres * math.cos(bearing) / 111_195.0
    lon = point[1] + metres * math.sin(bearing) / (111_195.0 * math.cos(math.radians(point[0])))
    return (lat, lon)


def test_reports_within_the_radius_always_share_a_merge_lock() -> None:
    rng = random.Random(14)
    for _ in range(2000):
        a = (HERE[0] + rng.uniform(-0.2, 0.2), HERE[1] + rng.uniform(-0.2, 0.2))
        b = _metres_away(a, rng.uniform(0, 150), rng.uniform(0, 2 * math.pi))
        keys_a = set(lock_keys(category="fight", lat=a[0], lon=a[1], radius_m=150))
        keys_b = set(lock_keys(category="fight", lat=b[0], lon=b[1], radius_m=150))
        assert keys_a & keys_b


def test_other_categories_never_share_a_merge_lock() -> None:
    fight = set(lock_keys(category="fight", lat=HERE[0], lon=HERE[1], radius_m=150))
    fire = set(lock_keys(category="fire", lat=HERE[0], lon=HERE[1], radius_m=150))
    assert not fight & fire
