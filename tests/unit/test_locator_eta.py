"""ETA and nearest-by-ETA ranking, with an in-memory candidate source (no network)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

import pytest

from services.volunteer_locator.eta import StraightLineEta, find_nearest
from services.volunteer_locator.geo import Candidate, Point, haversine_m, offset
from services.volunteer_locator.settings import DEFAULT_RADIUS_STEPS_M
from shared.responders import DEFAULT_SPEEDS_KMH

ORIGIN = Point(lat=22.54, lon=114.05)


@dataclass
class Placed:
    responder_id: str
    kind: str
    travel_mode: str
    at: Point
    skills: frozenset[str] = frozenset()


@dataclass
class FakeIndex:
    """Brute force over a list; records the radii it was asked for."""

    placed: list[Placed]
    radii: list[float] = field(default_factory=list)

    async def within(
        self,
        *,
        origin: Point,
        radius_m: float,
        kinds: Collection[str],
        skills: Collection[str],
        exclude: Collection[str],
    ) -> list[Candidate]:
        self.radii.append(radius_m)
        out = []
        for p in self.placed:
            d = haversine_m(origin, p.at)
            if (
                d <= radius_m
                and p.kind in kinds
                and set(skills) <= p.skills
                and p.responder_id not in exclude
            ):
                out.append(Candidate(p.responder_id, p.kind, p.travel_mode, d))
        return out


async def nearest(index: FakeIndex, *, limit: int = 1, **filters: Collection[str]) -> list[str]:
    result = await find_nearest(
        source=index,
        eta=StraightLineEta(DEFAULT_SPEEDS_KMH),
        origin=ORIGIN,
        kinds=filters.get("kinds", ("patrol", "auxiliary", "volunteer")),
        skills=filters.get("skills", ()),
        exclude=filters.get("exclude", ()),
        limit=limit,
        steps_m=[*DEFAULT_RADIUS_STEPS_M],
    )
    return [r.responder_id for r in result.ranked]


async def test_eta_is_distance_over_the_travel_modes_speed() -> None:
    eta = StraightLineEta(DEFAULT_SPEEDS_KMH)
    candidates = [
        Candidate("w", "volunteer", "foot", 800),
        Candidate("c", "patrol", "car", 2000),
        Candidate("b", "volunteer", "bicycle", 1500),
    ]
    etas = await eta.estimate(origin=ORIGIN, candidates=candidates)
    assert etas == pytest.approx([576.0, 2000 / (35 / 3.6), 360.0])


async def test_a_car_two_km_away_beats_a_walker_at_800_m() -> None:
    index = FakeIndex(
        [
            Placed("walker", "volunteer", "foot", offset(ORIGIN, north_m=800)),
            Placed("car", "patrol", "car", offset(ORIGIN, east_m=2000)),
        ]
    )
    assert await nearest(index) == ["car"]
    # The walker turned up at the 1 km step; the search went on far enough to find the car.
    assert max(index.radii) >= 2000


async def test_the_search_stops_at_the_first_step_when_nobody_farther_could_be_faster() -> None:
    index = FakeIndex(
        [
            Placed("car-near", "patrol", "car", offset(ORIGIN, north_m=100)),
            Placed("car-far", "patrol", "car", offset(ORIGIN, north_m=4000)),
        ]
    )
    assert await nearest(index) == ["car-near"]
    assert index.radii == [500]


async def test_ranking_is_by_eta_across_kinds_and_modes() -> None:
    index = FakeIndex(
        [
            Placed("foot-300", "volunteer", "foot", offset(ORIGIN, north_m=300)),  # 216 s
            Placed("bike-700", "auxiliary", "bicycle", offset(ORIGIN, east_m=700)),  # 168 s
            Placed("moto-3000", "patrol", "motorbike", offset(ORIGIN, north_m=-3000)),  # 360 s
            Placed("car-1500", "patrol", "car", offset(ORIGIN, east_m=-1500)),  # 154 s
        ]
    )
    assert await nearest(index, limit=4) == ["car-1500", "bike-700", "foot-300", "moto-3000"]


async def test_filters_and_exclusions_apply_before_ranking() -> None:
    index = FakeIndex(
        [
            Placed("medic", "volunteer", "foot", offset(ORIGIN, north_m=400), frozenset({"fa"})),
            Placed("plain", "volunteer", "car", offset(ORIGIN, north_m=50)),
            Placed("officer", "patrol", "car", offset(ORIGIN, north_m=60)),
        ]
    )
    assert await nearest(index, skills=("fa",)) == ["medic"]
    assert await nearest(index, kinds=("patrol",)) == ["officer"]
    assert await nearest(index, exclude=("plain", "officer")) == ["medic"]


async def test_nobody_within_the_maximum_radius_means_an_empty_answer() -> None:
    index = FakeIndex([Placed("far", "patrol", "car", offset(ORIGIN, north_m=12_000))])
    result = await find_nearest(
        source=index,
        eta=StraightLineEta(DEFAULT_SPEEDS_KMH),
        origin=ORIGIN,
        kinds=("patrol",),
        skills=(),
        exclude=(),
        limit=1,
        steps_m=[*DEFAULT_RADIUS_STEPS_M],
    )
    assert result.ranked == []
    assert result.radius_m == 10_000
    assert index.radii == [500, 1000, 2000, 5000, 10_000]


def test_distances_agree_with_redis_geo() -> None:
    # 0.01 degrees of latitude on Redis's sphere.
    assert haversine_m(ORIGIN, Point(ORIGIN.lat + 0.01, ORIGIN.lon)) == pytest.approx(1112.26, 0.01)
    assert haversine_m(ORIGIN, offset(ORIGIN, north_m=800, east_m=600)) == pytest.approx(1000, 0.01)


def test_speeds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        StraightLineEta({"foot": 0})
