"""ETA estimates and the nearest-by-ETA search over widening radius steps."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from services.volunteer_locator.geo import Candidate, Point, Ranked


class EtaProvider(Protocol):
    """Estimates how long each candidate takes to reach a point.

    A routing engine can replace the straight-line estimate, as long as it never
    promises better than ``max_speed_mps`` as the crow flies (the search relies on it).
    """

    @property
    def max_speed_mps(self) -> float:
        """The fastest any responder covers straight-line distance, in metres per second."""
        ...

    async def estimate(self, *, origin: Point, candidates: Sequence[Candidate]) -> list[float]:
        """ETA in seconds for each candidate, in the same order."""
        ...


class StraightLineEta:
    """ETA = straight-line distance / the travel mode's speed."""

    def __init__(self, speeds_kmh: Mapping[str, float]) -> None:
        if not speeds_kmh or min(speeds_kmh.values()) <= 0:
            raise ValueError("every travel mode needs a positive speed")
        self._mps = {mode: kmh / 3.6 for mode, kmh in speeds_kmh.items()}
        self._slowest = min(self._mps.values())
        self._fastest = max(self._mps.values())

    @property
    def max_speed_mps(self) -> float:
        """The fastest travel mode's speed."""
        return self._fastest

    def speed_mps(self, travel_mode: str) -> float:
        """A mode's speed; an unknown mode counts as the slowest, so it never jumps the queue."""
        return self._mps.get(travel_mode, self._slowest)

    async def estimate(self, *, origin: Point, candidates: Sequence[Candidate]) -> list[float]:
        """Distance over speed for each candidate."""
        return [c.distance_m / self.speed_mps(c.travel_mode) for c in candidates]


class CandidateSource(Protocol):
    """Finds the eligible (on duty, free, fresh, right kind and skills) responders in a radius."""

    async def within(
        self,
        *,
        origin: Point,
        radius_m: float,
        kinds: Collection[str],
        skills: Collection[str],
        exclude: Collection[str],
    ) -> list[Candidate]:
        """Every eligible responder at most ``radius_m`` from ``origin``."""
        ...


@dataclass(frozen=True)
class SearchResult:
    """The best candidates by ETA and the radius that was searched to be sure of them."""

    ranked: list[Ranked]
    radius_m: float


async def rank(*, eta: EtaProvider, origin: Point, candidates: Sequence[Candidate]) -> list[Ranked]:
    """Candidates ordered by ETA, then distance, then id (so ties are stable)."""
    etas = await eta.estimate(origin=origin, candidates=candidates)
    ranked = [
        Ranked(c.responder_id, c.kind, c.travel_mode, c.distance_m, eta_s)
        for c, eta_s in zip(candidates, etas, strict=True)
    ]
    ranked.sort(key=lambda r: (r.eta_s, r.distance_m, r.responder_id))
    return ranked


async def find_nearest(
    *,
    source: CandidateSource,
    eta: EtaProvider,
    origin: Point,
    kinds: Collection[str],
    skills: Collection[str],
    exclude: Collection[str],
    limit: int,
    steps_m: Sequence[float],
) -> SearchResult:
    """The ``limit`` eligible responders with the smallest ETA, searching outward step by step.

    The plain form of the rule, over any ``CandidateSource``; the service runs the
    grouped search below, which must give the same answer (the unit tests hold them to it).
    """
    max_radius = steps_m[-1]
    ranked: list[Ranked] = []
    for radius in steps_m:
        found = await source.within(
            origin=origin, radius_m=radius, kinds=kinds, skills=skills, exclude=exclude
        )
        ranked = await rank(eta=eta, origin=origin, candidates=found)
        if len(ranked) < limit:
            continue
        # Ranking is by ETA, not distance: a car 2 km out (206 s) beats a walker at 800 m
        # (576 s). Anyone outside `radius` is farther than `radius`, so their ETA is at least
        # distance / max_speed; they can only beat our limit-th ETA t if they are within
        # max_speed * t. Search out to that bound (capped at the maximum) before concluding.
        bound = min(ranked[limit - 1].eta_s * eta.max_speed_mps, max_radius)
        if bound > radius:
            radius = bound
            found = await source.within(
                origin=origin, radius_m=radius, kinds=kinds, skills=skills, exclude=exclude
            )
            ranked = await rank(eta=eta, origin=origin, candidates=found)
        return SearchResult(ranked=ranked[:limit], radius_m=radius)
    return SearchResult(ranked=ranked[:limit], radius_m=max_radius)


# --- the grouped search the service uses ------------------------------------------


@dataclass(frozen=True, slots=True)
class GroupQuery:
    """Ask one group (a kind and travel mode) for its ``count`` nearest within ``radius_m``."""

    kind: str
    travel_mode: str
    radius_m: float
    count: int


@dataclass(frozen=True, slots=True)
class GroupHits:
    """One group's answer: its nearest eligible responders, nearest first.

    ``more`` says the count was reached, so the group may hold more eligible responders
    farther out than the last one returned; otherwise it has no more within the radius.
    """

    kind: str
    travel_mode: str
    candidates: list[Candidate]
    more: bool


class GroupedSource(Protocol):
    """Finds the nearest eligible responders group by group (one GEO key per group)."""

    async def nearest_in_groups(
        self,
        *,
        origin: Point,
        queries: Sequence[GroupQuery],
        skills: Collection[str],
        exclude: Collection[str],
    ) -> list[GroupHits]:
        """Each query's group's ``count`` nearest eligible responders within its radius."""
        ...


def _covered_m(query: GroupQuery, hits: GroupHits) -> float:
    """How far out the group is known completely: nobody unreturned is nearer than this."""
    if hits.more and hits.candidates:
        return hits.candidates[-1].distance_m
    return query.radius_m


async def find_nearest_grouped(
    *,
    source: GroupedSource,
    eta: EtaProvider,
    origin: Point,
    groups: Sequence[tuple[str, str]],
    skills: Collection[str],
    exclude: Collection[str],
    limit: int,
    steps_m: Sequence[float],
) -> SearchResult:
    """The ``limit`` eligible responders with the smallest ETA, asking each group
    (kind, travel mode) only for its nearest few; the same answer as :func:`find_nearest`.

    Each group starts at the first radius step with a count of ``limit``. After each
    round the candidates are ranked by the ETA provider; let ``t`` be the ``limit``-th
    ETA. A responder not yet returned is at least ``covered`` metres away (the group's
    last returned distance, or its whole radius if it ran out), so their ETA is at least
    ``covered / max_speed``: the provider never beats ``max_speed_mps`` as the crow
    flies. A group is settled once ``covered >= max_speed * t`` (capped at the maximum
    radius): nobody farther in it can be faster. Until then it is asked again, out to
    that bound, for more. So a faster, farther responder (a car 2 km away against a
    walker at 800 m) is never missed, whatever order the provider ranks them in.
    """
    max_radius = steps_m[-1]
    queries = {g: GroupQuery(g[0], g[1], steps_m[0], limit) for g in groups}
    answers: dict[tuple[str, str], tuple[GroupQuery, GroupHits]] = {}
    ranked: list[Ranked] = []
    bound = max_radius
    while queries:
        asked = list(queries.values())
        hits = await source.nearest_in_groups(
            origin=origin, queries=asked, skills=skills, exclude=exclude
        )
        for query, found in zip(asked, hits, strict=True):
            answers[(query.kind, query.travel_mode)] = (query, found)
        ranked = await rank(
            eta=eta,
            origin=origin,
            candidates=[c for _, found in answers.values() for c in found.candidates],
        )
        if len(ranked) >= limit:
            bound = min(ranked[limit - 1].eta_s * eta.max_speed_mps, max_radius)
        else:
            bound = max_radius
        queries = {}
        for group, (query, found) in answers.items():
            covered = _covered_m(query, found)
            if covered >= bound:
                continue
            if found.more:
                # Count-limited short of the bound: ask for more, no farther than needed.
                queries[group] = GroupQuery(
                    query.kind, query.travel_mode, min(query.radius_m, bound), query.count * 4
                )
            elif len(ranked) < limit:
                # Too few anywhere: widen to the next step, as the plain search does.
                wider = next((s for s in steps_m if s > query.radius_m), max_radius)
                queries[group] = GroupQuery(query.kind, query.travel_mode, wider, query.count)
            else:
                queries[group] = GroupQuery(query.kind, query.travel_mode, bound, query.count)
    # The answer is proven complete out to `bound`.
    return SearchResult(ranked=ranked[:limit], radius_m=bound)
