"""Positions, distances and the candidates a radius search returns."""

from __future__ import annotations

import math
from dataclasses import dataclass

# The sphere Redis GEO uses, so our distances agree with the index's to the millimetre.
EARTH_RADIUS_M = 6372797.560856


@dataclass(frozen=True, slots=True)
class Point:
    """A WGS-84 position."""

    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class Candidate:
    """An eligible responder found within a search radius."""

    responder_id: str
    kind: str
    travel_mode: str
    distance_m: float


@dataclass(frozen=True, slots=True)
class Ranked:
    """A candidate with its estimated time of arrival."""

    responder_id: str
    kind: str
    travel_mode: str
    distance_m: float
    eta_s: float


def haversine_m(a: Point, b: Point) -> float:
    """Great-circle distance in metres."""
    lat1, lat2 = math.radians(a.lat), math.radians(b.lat)
    dlat = lat2 - lat1
    dlon = math.radians(b.lon - a.lon)
    h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def offset(origin: Point, *, north_m: float = 0.0, east_m: float = 0.0) -> Point:
    """The point ``north_m`` and ``east_m`` away from ``origin`` (good for a few km)."""
    dlat = math.degrees(north_m / EARTH_RADIUS_M)
    dlon = math.degrees(east_m / (EARTH_RADIUS_M * math.cos(math.radians(origin.lat))))
    return Point(lat=origin.lat + dlat, lon=origin.lon + dlon)
