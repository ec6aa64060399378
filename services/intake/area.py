"""The service area: where intake takes reports. Anywhere else, the citizen must call 110."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shared.claims import MAX_GEO_LAT

if TYPE_CHECKING:
    from services.intake.settings import IntakeSettings

Ring = Sequence[tuple[float, float]]  # (lon, lat) pairs, as GeoJSON orders them

EARTH_RADIUS_M = 6_371_000.0


@dataclass(frozen=True)
class Box:
    """A rectangle in degrees."""

    min_lon: float
    min_lat: float
    max_lon: float
    max_lat: float

    def contains(self, lat: float, lon: float) -> bool:
        """Whether the point lies inside or on the edge."""
        return self.min_lat <= lat <= self.max_lat and self.min_lon <= lon <= self.max_lon


def _in_ring(lon: float, lat: float, ring: Ring) -> bool:
    """Ray casting: count how many edges a ray going east from the point crosses."""
    inside = False
    n = len(ring)
    for i in range(n):
        x1, y1 = ring[i]
        x2, y2 = ring[(i + 1) % n]
        if (y1 > lat) != (y2 > lat) and lon < x1 + (lat - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


@dataclass(frozen=True)
class ServiceArea:
    """Either a box (the grids' extent grown by a margin) or an explicit polygon."""

    box: Box | None = None
    polygon: tuple[tuple[float, float], ...] | None = None

    def contains(self, lat: float, lon: float) -> bool:
        """Whether a report at (lat, lon) is ours to dispatch."""
        if not (math.isfinite(lat) and math.isfinite(lon)) or abs(lat) > MAX_GEO_LAT:
            return False
        if self.polygon is not None:
            return _in_ring(lon, lat, self.polygon)
        if self.box is not None:
            return self.box.contains(lat, lon)
        return True

    @classmethod
    def from_polygon(cls, points: Sequence[Sequence[float]]) -> ServiceArea:
        """An explicit polygon of ``[lon, lat]`` points (GeoJSON order)."""
        if len(points) < 3:
            raise ValueError("a service area polygon needs at least 3 points")
        return cls(polygon=tuple((float(p[0]), float(p[1])) for p in points))

    @classmethod
    def from_geojson(cls, path: Path, *, margin_m: float) -> ServiceArea:
        """The extent of every polygon in a GeoJSON file, grown by ``margin_m`` on each side."""
        document = json.loads(path.read_text(encoding="utf-8"))
        features = document.get("features", [document])
        points: list[tuple[float, float]] = []
        for feature in features:
            geometry = feature.get("geometry") or {}
            polygons = geometry.get("coordinates", [])
            if geometry.get("type") == "Polygon":
                polygons = [polygons]
            for polygon in polygons:
                for ring in polygon:
                    points.extend((float(x), float(y)) for x, y, *_ in ring)
        if not points:
            raise ValueError(f"{path} holds no polygon to take a service area from")
        lons = [p[0] for p in points]
        lats = [p[1] for p in points]
        dlat = math.degrees(margin_m / EARTH_RADIUS_M)
        widest = max(abs(min(lats)), abs(max(lats))) + dlat
        dlon = math.degrees(margin_m / (EARTH_RADIUS_M * max(math.cos(math.radians(widest)), 1e-6)))
        return cls(
            box=Box(
                min_lon=max(-180.0, min(lons) - dlon),
                min_lat=max(-MAX_GEO_LAT, min(lats) - dlat),
                max_lon=min(180.0, max(lons) + dlon),
                max_lat=min(MAX_GEO_LAT, max(lats) + dlat),
            )
        )


def load_service_area(settings: IntakeSettings) -> ServiceArea:
    """The area the settings describe: the explicit polygon, else the GeoJSON's extent."""
    if settings.service_area_polygon is not None:
        return ServiceArea.from_polygon(settings.service_area_polygon)
    if not settings.service_area_geojson:
        return ServiceArea()
    return ServiceArea.from_geojson(
        Path(settings.service_area_geojson), margin_m=settings.service_area_margin_m
    )
