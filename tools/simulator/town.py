"""The synthetic town: the police grids of the demo district, read as data, and geometry.

The grids come from the GeoJSON file the stack is configured with (by default the
shipped demo district); the simulator reads the file itself and never asks the
system where a point lies.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEMO_GRIDS = ROOT / "services" / "dispatch" / "data" / "grids.geojson"
EARTH_RADIUS_M = 6_371_008.8


def distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance between two (lat, lon) points."""
    p1, p2 = math.radians(a[0]), math.radians(b[0])
    dp, dl = p2 - p1, math.radians(b[1] - a[1])
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(h))


def step_toward(
    here: tuple[float, float], there: tuple[float, float], metres: float
) -> tuple[float, float]:
    """The point ``metres`` from ``here`` toward ``there`` (or ``there`` if closer)."""
    gap = distance_m(here, there)
    if gap <= metres or gap == 0:
        return there
    share = metres / gap
    return (here[0] + (there[0] - here[0]) * share, here[1] + (there[1] - here[1]) * share)


@dataclass(frozen=True)
class Grid:
    """One police grid of the town: a polygon with its office and zone tier."""

    name: str
    office: str | None
    ring: tuple[tuple[float, float], ...]  # (lon, lat), as GeoJSON has it

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """(min lat, max lat, min lon, max lon)."""
        lons, lats = [p[0] for p in self.ring], [p[1] for p in self.ring]
        return min(lats), max(lats), min(lons), max(lons)

    def contains(self, lat: float, lon: float) -> bool:
        """Ray casting on the outer ring."""
        inside = False
        n = len(self.ring)
        for i in range(n):
            x1, y1 = self.ring[i]
            x2, y2 = self.ring[(i + 1) % n]
            if (y1 > lat) != (y2 > lat) and lon < x1 + (lat - y1) * (x2 - x1) / (y2 - y1):
                inside = not inside
        return inside


@dataclass(frozen=True)
class Town:
    """The synthetic town: the grids of the shipped demo district."""

    grids: tuple[Grid, ...]

    @classmethod
    def load(cls, path: Path = DEMO_GRIDS) -> Town:
        """Read a GeoJSON FeatureCollection of polygons."""
        document = json.loads(path.read_text(encoding="utf-8"))
        grids = []
        for feature in document["features"]:
            geometry = feature["geometry"]
            polygons = (
                [geometry["coordinates"]]
                if geometry["type"] == "Polygon"
                else geometry["coordinates"]
            )
            for polygon in polygons:
                grids.append(
                    Grid(
                        name=feature["properties"]["grid"],
                        office=feature["properties"].get("office"),
                        ring=tuple((float(p[0]), float(p[1])) for p in polygon[0]),
                    )
                )
        return cls(tuple(grids))

    def random_spot(self, rng: random.Random) -> tuple[Grid, tuple[float, float]]:
        """A uniformly random point of the town and its grid."""
        weights = [(b[1] - b[0]) * (b[3] - b[2]) for b in (g.bbox for g in self.grids)]
        while True:
            grid = rng.choices(self.grids, weights=weights)[0]
            lat0, lat1, lon0, lon1 = grid.bbox
            lat, lon = rng.uniform(lat0, lat1), rng.uniform(lon0, lon1)
            if grid.contains(lat, lon):
                return grid, (lat, lon)
