"""The grouped nearest search (one GEO key per kind and travel mode, a few per key) gives
the same answer as the plain search, with an in-memory grouped source (no network)."""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from services.volunteer_locator.eta import (
    GroupHits,
    GroupQuery,
    StraightLineEta,
    find_nearest,
    find_nearest_grouped,
)
from services.volunteer_locator.geo import Candidate, Point, haversine_m, offset
from services.volunteer_locator.index import groups_of
from services.volunteer_locator.settings import DEFAULT_RADIUS_STEPS_M
from shared.responders import DEFAULT_SPEEDS_KMH, KINDS
from tests.unit.test_locator_eta import ORIGIN, FakeIndex, Placed

ETA = StraightLineEta(DEFAULT_SPEEDS_KMH)
STEPS = [*DEFAULT_RADIUS_STEPS_M]


@dataclass
class FakeGroupedIndex:
    """Brute force per group, nearest first, cut at the count; records what was asked."""

    placed: list[Placed]
    asked: list[list[GroupQuery]] = field(default_factory=list)

    async def nearest_in_groups(
        self,
        *,
        origin: Point,
        queries: Sequence[GroupQuery],
        skills: Collection[str],
        exclude: Collection[str],
    ) -> list[GroupHits]:
        self.asked.append(list(queries))
        out = []
        for q in queries:
            found = sorted(
                (
                    Candidate(p.responder_id, p.kind, p.travel_mode, haversine_m(origin, p.at))
                    for p in self.placed
                    if p.kind == q.kind
                    and p.travel_mode == q.travel_mode
                    and set(skills) <= p.skills
                    and p.responder_id not in exclude
                ),
                key=lambda c: c.distance_m,
            )
            within = [c for c in found if c.distance_m <= q.radius_m]
            out.append(GroupHits(q.kind, q.travel_mode, within[: q.count], len(within) >= q.count))
        return out


async def grouped(
    index: FakeGroupedIndex, *, limit: int, kinds: Sequence[str] = KINDS
) -> list[str]:
    result = await find_nearest_grouped(
        source=index,
        eta=ETA,
        origin=ORIGIN,
        groups=groups_of(kinds),
        skills=(),
        exclude=(),
        limit=limit,
        steps_m=STEPS,
    )
    return [r.responder_id for r in result.ranked]


async def test_a_car_two_km_away_beats_a_walker_at_800_m() -> None:
    index = FakeGroupedIndex(
        [
            Placed("walker", "volunteer", "foot", offset(ORIGIN, north_m=800)),
            Placed("car", "patrol", "car", offset(ORIGIN, east_m=2000)),
        ]
    )
    assert await grouped(index, limit=1) == ["car"]


async def test_a_crowd_of_walkers_near_by_does_not_hide_a_faster_car() -> None:
    # Ten walkers within 100 m (72 s at most); a car at 600 m takes 62 s.
    walkers = [
        Placed(f"w{i}", "volunteer", "foot", offset(ORIGIN, north_m=10 * (i + 1)))
        for i in range(10)
    ]
    index = FakeGroupedIndex([*walkers, Placed("car", "patrol", "car", offset(ORIGIN, east_m=600))])
    assert await grouped(index, limit=1) == ["w0"]
    # The car (62 s) comes between the walker at 80 m (58 s) and the one at 90 m (65 s).
    assert (await grouped(index, limit=10))[7:10] == ["w7", "car", "w8"]


async def test_dense_random_placements_agree_with_the_plain_search() -> None:
    rng = random.Random(3)
    modes = ("foot", "bicycle", "motorbike", "car")
    placed = [
        Placed(
            f"r{i}",
            rng.choice(KINDS),
            rng.choice(modes),
            offset(ORIGIN, north_m=rng.uniform(-3000, 3000), east_m=rng.uniform(-3000, 3000)),
        )
        for i in range(3000)
    ]
    grouped_index = FakeGroupedIndex(placed)
    for limit in (1, 5, 20):
        for kinds in (KINDS, ("patrol",)):
            plain = await find_nearest(
                source=FakeIndex(placed),
                eta=ETA,
                origin=ORIGIN,
                kinds=kinds,
                skills=(),
                exclude=(),
                limit=limit,
                steps_m=STEPS,
            )
            assert await grouped(grouped_index, limit=limit, kinds=kinds) == [
                r.responder_id for r in plain.ranked
            ]
    # Dense enough that one round of a few per group settles it.
    assert len(grouped_index.asked[0]) == 12
    assert max(q.count for q in grouped_index.asked[0]) == 1


async def test_nobody_within_the_maximum_radius_means_an_empty_answer() -> None:
    index = FakeGroupedIndex([Placed("far", "patrol", "car", offset(ORIGIN, north_m=12_000))])
    result = await find_nearest_grouped(
        source=index,
        eta=ETA,
        origin=ORIGIN,
        groups=groups_of(("patrol",)),
        skills=(),
        exclude=(),
        limit=1,
        steps_m=STEPS,
    )
    assert result.ranked == []
    assert result.radius_m == 10_000
    assert [q.radius_m for q in index.asked[-1]] == [10_000] * 4
