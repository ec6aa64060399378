"""The dispatch domain on its own: plans, grids, duplicates, state machines, milestones
and queue order. No database, no clock but the values passed in."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from services.dispatch.domain import (
    DEFAULT_STAGES,
    MilestoneState,
    OpenIncidentView,
    PlanSlot,
    Progress,
    QueueEntry,
    UnitTimes,
    box_around,
    check_offer_answerable,
    check_unit_transition,
    distance_m,
    find_duplicate,
    is_flagged,
    judge_deadline,
    judge_stage,
    late_breach_seconds,
    manual_slot,
    progress_of,
    slots_to_offer,
    tightened,
    urgency_key,
)
from services.dispatch.grids import GridIndex
from services.dispatch.plans import default_plans, load_plans, plan_for
from shared.errors import Conflict

T0 = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_shipped_plans_follow_the_dispatch_rules() -> None:
    plans = default_plans()
    assert all("volunteer" not in slot.kinds for slot in plans["violence"].slots)
    assert plans["medical"].slots[0].skills == ("first_aid",)
    for category in ("dispute", "theft", "suspicious", "medical", "fire", "traffic"):
        first, reinforcement = plans[category].slots
        assert "volunteer" in first.kinds
        assert reinforcement.kinds == ("patrol",)
    for category in ("fraud", "missing_person", "other"):
        (only,) = plans[category].slots
        assert set(only.kinds) == {"volunteer", "auxiliary", "patrol"}
    assert [s.target_s for s in plans["theft"].stages] == [60, 180, 300]


def test_an_unknown_category_gets_the_fallback_plan() -> None:
    plan = plan_for(default_plans(), "graffiti")
    assert plan.category == "graffiti"
    assert plan.slots == default_plans()["other"].slots


def test_plans_load_from_a_json_file(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "plans.json"
    path.write_text(
        '{"violence": {"priority": 1, "units": [{"kinds": ["patrol"]}],'
        ' "stages": [{"stage": "T2", "kind": "arrive", "target_s": 120}]}}'
    )
    plans = load_plans(str(path))
    assert [s.stage for s in plans["violence"].stages] == ["T2"]
    assert "other" in plans


def test_a_zone_tier_tightens_targets_but_never_loosens_them() -> None:
    assert [s.target_s for s in tightened(DEFAULT_STAGES, factor=0.5)] == [30, 90, 150]
    assert [s.target_s for s in tightened(DEFAULT_STAGES, factor=2.0)] == [60, 180, 300]
    overridden = tightened(DEFAULT_STAGES, factor=1.0, overrides={"T1": 2})
    assert [s.target_s for s in overridden] == [2, 180, 300]


def test_grids_are_found_by_ray_casting() -> None:
    grids = GridIndex.load(None)
    key = grids.locate(23.020, 113.750)
    assert key is not None
    assert (key.grid, key.zone_tier) == ("DC-01", "key")
    urban = grids.locate(23.020, 113.760)
    assert urban is not None
    assert urban.zone_tier == "urban"
    assert grids.locate(23.050, 113.750) is None
    assert grids.locate(22.54, 114.05) is None


def test_a_hole_in_a_polygon_is_outside_it() -> None:
    square = [[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0], [0.0, 0.0]]
    hole = [[4.0, 4.0], [6.0, 4.0], [6.0, 6.0], [4.0, 6.0], [4.0, 4.0]]
    grids = GridIndex.from_geojson(
        {
            "type": "FeatureCollection",
            "features": [
                {
                    "type": "Feature",
                    "properties": {"grid": "ring", "office": None, "zone_tier": "other"},
                    "geometry": {"type": "Polygon", "coordinates": [square, hole]},
                }
            ],
        }
    )
    assert grids.locate(2.0, 2.0) is not None
    assert grids.locate(5.0, 5.0) is None


def _open(category: str, lat: float, lon: float, seconds_ago: float) -> OpenIncidentView:
    return OpenIncidentView(f"{category}-{lat}", category, lat, lon, at(-seconds_ago))


@pytest.mark.parametrize(
    ("category", "metres", "minutes_later", "joins"),
    [
        ("theft", 100, 5, True),
        ("theft", 149, 9.9, True),
        ("theft", 200, 5, False),
        ("theft", 100, 11, False),
        ("dispute", 10, 1, False),
    ],
)
def test_a_duplicate_is_same_category_within_150_m_and_10_minutes(
    category: str, metres: float, minutes_later: float, joins: bool
) -> None:
    incident = _open("theft", 23.05, 113.75, 0)
    found = find_duplicate(
        [incident],
        category=category,
        lat=23.05 + metres / 111_195.0,
        lon=113.75,
        received_at=at(minutes_later * 60),
        radius_m=150,
        window_s=600,
    )
    assert (found is incident) is joins


def test_the_nearest_duplicate_wins() -> None:
    far = _open("theft", 23.05 + 120 / 111_195.0, 113.75, 0)
    near = _open("theft", 23.05 + 20 / 111_195.0, 113.75, 0)
    found = find_duplicate(
        [far, near],
        category="theft",
        lat=23.05,
        lon=113.75,
        received_at=at(10),
        radius_m=150,
        window_s=600,
    )
    assert found is near


@pytest.mark.parametrize(("lat", "lon"), [(23.05, 113.75), (-33.9, 18.4), (64.1, -21.9)])
def test_the_box_for_the_duplicate_query_holds_every_point_within_the_radius(
    lat: float, lon: float
) -> None:
    box = box_around(lat, lon, 150)
    assert box.lon is not None
    for bearing in range(0, 360, 15):
        b = math.radians(bearing)
        # A point 150 m away on this bearing (flat-earth step, then the exact distance).
        p_lat = lat + 150 * math.cos(b) / 111_195
        p_lon = lon + 150 * math.sin(b) / (111_195 * math.cos(math.radians(lat)))
        assert distance_m(lat, lon, p_lat, p_lon) == pytest.approx(150, rel=0.01)
        assert box.lat[0] <= p_lat <= box.lat[1]
        assert box.lon[0] <= p_lon <= box.lon[1]
    assert box.lat[1] - box.lat[0] < 2 * 160 / 111_195  # and not much more


def test_a_box_across_the_antimeridian_or_at_a_pole_leaves_longitude_open() -> None:
    assert box_around(10.0, 179.9999, 150).lon is None
    assert box_around(89.9999, 0.0, 150).lon is None


def test_units_without_a_unit_or_offer_are_offered() -> None:
    assert slots_to_offer(2, filled=[], pending=[]) == [0, 1]
    assert slots_to_offer(2, filled=[0], pending=[1]) == []
    assert slots_to_offer(2, filled=[1], pending=[]) == [0]


def test_an_offer_is_answerable_only_while_pending_and_unexpired() -> None:
    assert check_offer_answerable("pending", expires_at=at(30), now=at(29)) is True
    assert check_offer_answerable("pending", expires_at=at(30), now=at(30)) is False
    for closed in ("accepted", "declined", "expired", "withdrawn"):
        with pytest.raises(Conflict):
            check_offer_answerable(closed, expires_at=at(30), now=at(1))


def test_units_only_move_forward() -> None:
    assert check_unit_transition("assigned", "en_route") is True
    assert check_unit_transition("assigned", "on_scene") is True
    assert check_unit_transition("on_scene", "cleared") is True
    assert check_unit_transition("en_route", "en_route") is False
    with pytest.raises(Conflict):
        check_unit_transition("on_scene", "en_route")
    with pytest.raises(Conflict):
        check_unit_transition("cleared", "on_scene")


def test_progress_needs_every_required_unit_on_scene_to_reinforce() -> None:
    one = UnitTimes(responding_at=at(20), on_scene_at=at(100))
    two = UnitTimes(responding_at=at(40), on_scene_at=at(250))
    assert progress_of([one], required_units=2) == Progress(at(20), at(100), None)
    assert progress_of([two, one], required_units=2) == Progress(at(20), at(100), at(250))


@pytest.mark.parametrize(
    ("reached", "expected"),
    [
        (None, None),
        (59, MilestoneState.MET),
        (60, MilestoneState.MET),
        (61, MilestoneState.BREACHED),
    ],
)
def test_a_stage_is_met_in_time_or_breached(
    reached: float | None, expected: MilestoneState | None
) -> None:
    progress = Progress(at(reached) if reached is not None else None, None, None)
    outcome = judge_stage(
        state="pending", kind="respond", due_at=at(60), received_at=T0, progress=progress
    )
    if expected is None:
        assert outcome is None
    else:
        assert outcome is not None
        assert outcome.state == expected
        assert outcome.seconds == reached


def test_a_settled_stage_does_not_change() -> None:
    progress = Progress(at(10), at(20), at(30))
    for state in ("met", "breached"):
        assert (
            judge_stage(
                state=state, kind="arrive", due_at=at(180), received_at=T0, progress=progress
            )
            is None
        )


def test_a_deadline_passes_only_for_a_pending_stage() -> None:
    assert judge_deadline(state="pending", due_at=at(60), now=at(60)) is True
    assert judge_deadline(state="pending", due_at=at(60), now=at(59)) is False
    assert judge_deadline(state="met", due_at=at(60), now=at(100)) is False


def test_the_queue_puts_flagged_first_then_least_time_left() -> None:
    calm = QueueEntry(flagged=False, next_due_at=at(200), priority=1, received_at=T0)
    pressing = QueueEntry(flagged=False, next_due_at=at(30), priority=4, received_at=T0)
    breached = QueueEntry(flagged=True, next_due_at=at(300), priority=4, received_at=T0)
    settled = QueueEntry(flagged=False, next_due_at=None, priority=1, received_at=T0)
    ordered = sorted([settled, calm, pressing, breached], key=urgency_key)
    assert ordered == [breached, pressing, calm, settled]


def test_a_manual_assignment_fills_the_first_slot_without_a_unit() -> None:
    slots = (PlanSlot(("volunteer", "auxiliary"), ("first_aid",)), PlanSlot(("patrol",)))
    assert manual_slot(slots, filled=[]) == (0, slots[0])
    assert manual_slot(slots, filled=[0]) == (1, slots[1])
    assert manual_slot(slots, filled=[1]) == (0, slots[0])


def test_a_manual_assignment_past_the_plan_takes_any_kind_of_the_plan() -> None:
    slots = (PlanSlot(("volunteer", "auxiliary")), PlanSlot(("patrol",)))
    index, extra = manual_slot(slots, filled=[0, 1, 2])
    assert index == 5  # after every slot and every unit, so it never meets a real slot
    assert extra == PlanSlot(("auxiliary", "patrol", "volunteer"))


def test_a_breached_stage_reached_late_records_its_seconds_once() -> None:
    received = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    reached = received + timedelta(seconds=75)
    late = late_breach_seconds(
        state=MilestoneState.BREACHED, seconds=None, reached=reached, received_at=received
    )
    assert late == 75.0
    for state, seconds, at in (
        (MilestoneState.BREACHED, 75.0, reached),  # already recorded
        (MilestoneState.BREACHED, None, None),  # not reached yet
        (MilestoneState.MET, None, reached),  # met stages are judged elsewhere
    ):
        late = late_breach_seconds(state=state, seconds=seconds, reached=at, received_at=received)
        assert late is None


def test_the_queue_flags_incidents_with_nobody_available_or_a_breached_stage() -> None:
    pending, met, breached = MilestoneState.PENDING, MilestoneState.MET, MilestoneState.BREACHED
    assert is_flagged(no_responder=True, stage_states=[pending])
    assert is_flagged(no_responder=False, stage_states=[met, breached, pending])
    assert not is_flagged(no_responder=False, stage_states=[met, pending])
    assert not is_flagged(no_responder=False, stage_states=[])
