"""Police grids from a GeoJSON file: which grid, office and zone tier a point falls in."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

Ring = Sequence[tuple[float, float]]  # (lon, lat) pairs, as GeoJSON orders them

DEMO_GRIDS = Path(__file__).parent / "data" / "grids.geojson"


@dataclass(frozen=True)
class GridInfo:
    """A grid's name, its community police office and its zone tier (key, urban or other)."""

    grid: str
    office: str | None
    zone_tier: str | None


@dataclass(frozen=True)
class _Area:
    info: GridInfo
    polygons: tuple[tuple[Ring, ...], ...]  # each polygon: outer ring, then holes


def _in_ring(lon: float, lat: float, ring: Ring) -> bool:
    """Ray casting: count how many edges a ray going east from the point crosses."""
    inside = False
    n = len(ring)
    for i in range(n):
        x1, y1 = ring[i]
        x2, y2 = ring[(i + 1) % n]
        if (y1 > lat) != (y2 > lat):
            x_cross = x1 + (lat - y1) * (x2 - x1) / (y2 - y1)
            if lon < x_cross:
                inside = not inside
    return inside


def _in_polygon(lon: float, lat: float, rings: Sequence[Ring]) -> bool:
    if not rings or not _in_ring(lon, lat, rings[0]):
        return False
    return not any(_in_ring(lon, lat, hole) for hole in rings[1:])


class GridIndex:
    """Looks up the grid of a point; the first matching feature wins."""

    def __init__(self, areas: Sequence[_Area]) -> None:
        self._areas = tuple(areas)

    @classmethod
    def from_geojson(cls, document: dict[str, object]) -> GridIndex:
        """Build the index from a GeoJSON FeatureCollection of (Multi)Polygons."""
        areas: list[_Area] = []
        features = document.get("features", [])
        if not isinstance(features, list):
            raise ValueError("the grids' GeoJSON has no list of features")
        for feature in features:
            props = feature.get("properties") or {}
            geometry = feature["geometry"]
            if geometry["type"] == "Polygon":
                raw_polygons = [geometry["coordinates"]]
            elif geometry["type"] == "MultiPolygon":
                raw_polygons = geometry["coordinates"]
            else:
                continue
            polygons = tuple(
                tuple(tuple((float(p[0]), float(p[1])) for p in ring) for ring in polygon)
                for polygon in raw_polygons
            )
            info = GridInfo(
                grid=str(props.get("grid")),
                office=props.get("office"),
                zone_tier=props.get("zone_tier"),
            )
            areas.append(_Area(info, polygons))
        return cls(areas)

    @classmethod
    def load(cls, path: str | Path | None) -> GridIndex:
        """Read a GeoJSON file, or the shipped demo district when ``path`` is None."""
        source = Path(path) if path is not None else DEMO_GRIDS
        return cls.from_geojson(json.loads(source.read_text(encoding="utf-8")))

    def grids(self) -> tuple[GridInfo, ...]:
        """Every grid, in file order."""
        return tuple(area.info for area in self._areas)

    def areas(self) -> tuple[tuple[GridInfo, tuple[tuple[Ring, ...], ...]], ...]:
        """Every grid with its polygons (outer ring, then holes; (lon, lat) pairs)."""
        return tuple((area.info, area.polygons) for area in self._areas)

    def locate(self, lat: float, lon: float) -> GridInfo | None:
        """The grid the point is in, or None outside every grid."""
        for area in self._areas:
            if any(_in_polygon(lon, lat, rings) for rings in area.polygons):
                return area.info
        return None
