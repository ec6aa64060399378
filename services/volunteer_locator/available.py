"""Every responder a search could return now, grouped compactly for dispatch's coverage map.

``GET /v1/responders/available`` answers groups of (kind, travel mode, skills), each with
the speed the locator's ETA model gives its travel mode and the group's positions. No
responder ids: coverage needs where help is, not who. Dispatch fetches this once per
coverage refresh instead of reading the locator's Redis keys.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel, Field

from services.volunteer_locator.eta import EtaProvider
from services.volunteer_locator.geo import Candidate, Point
from services.volunteer_locator.index import GeoIndex, SearchableRow

# The ETA model is asked for a responder this far away to learn each travel mode's speed.
_PROBE_M = 1000.0


class AvailableGroup(BaseModel):
    """Searchable responders sharing a kind, travel mode and skills."""

    kind: str
    travel_mode: str
    skills: list[str]
    speed_mps: float = Field(description="Straight-line speed of the travel mode, m/s.")
    positions: list[tuple[float, float]] = Field(description="(lat, lon) of each responder.")


class AvailableResponders(BaseModel):
    """The answer of ``GET /v1/responders/available``."""

    as_of: datetime
    count: int
    groups: list[AvailableGroup]


async def speeds_mps(eta: EtaProvider, modes: Sequence[str]) -> dict[str, float]:
    """Each travel mode's straight-line speed under the ETA model (distance over its ETA)."""
    origin = Point(lat=0.0, lon=0.0)
    probes = [Candidate("", "", mode, _PROBE_M) for mode in modes]
    etas = await eta.estimate(origin=origin, candidates=probes)
    return {mode: _PROBE_M / max(eta_s, 1e-9) for mode, eta_s in zip(modes, etas, strict=True)}


def group_rows(rows: Sequence[SearchableRow], speeds: dict[str, float]) -> list[AvailableGroup]:
    """Rows grouped by (kind, travel mode, skills), in a stable order."""
    grouped: dict[tuple[str, str, tuple[str, ...]], list[tuple[float, float]]] = defaultdict(list)
    for row in rows:
        grouped[(row.kind, row.travel_mode, tuple(sorted(row.skills)))].append((row.lat, row.lon))
    return [
        AvailableGroup(
            kind=kind,
            travel_mode=mode,
            skills=list(skills),
            speed_mps=round(speeds[mode], 6),
            positions=positions,
        )
        for (kind, mode, skills), positions in sorted(grouped.items())
    ]


async def available(*, index: GeoIndex, eta: EtaProvider, now: datetime) -> AvailableResponders:
    """Every searchable responder now (on duty, free, fresh), grouped."""
    rows = await index.searchable(now=now)
    speeds = await speeds_mps(eta, sorted({r.travel_mode for r in rows}))
    return AvailableResponders(as_of=now, count=len(rows), groups=group_rows(rows, speeds))
