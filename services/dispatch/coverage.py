"""Live coverage: if trouble were reported in this cell now, could anyone be there in time?

Pure logic, no I/O. The service area (the grids) is cut into H3 cells; for each cell
and each slot type of the coverage plan (the volunteer-first slot and the patrol slot
of the shipped plans) :func:`compute_coverage` finds the ETA of the nearest available
eligible responder by the locator's model (straight-line distance over the travel
mode's speed, no farther than the widest search radius) and judges each stage against
the cell's targets, tightened by its zone tier as an incident there would be:

- respond (T1): someone eligible for some slot is within the search radius, so an
  offer would go out at once (moving within the target needs an acceptance, not travel);
- arrive (T3): the fastest slot's ETA is within the target;
- reinforce (T5): every slot has someone, and the slowest slot's ETA is within the
  target. Slots are taken to be filled by different people: exact when their kinds do
  not overlap, as in the shipped volunteer-first plans.

Speed: responders are split per slot by travel mode (within one mode, nearest is
fastest) and bucketed in squares on a local plane; each cell centre searches rings of
buckets outward and stops once nobody unseen can beat what it has. The plane's
distances are off from great-circle ones by a bounded factor, so the search widens by
that factor and the answer is then measured exactly (haversine), matching a brute-force
scan of every responder.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import h3  # h3 4.x ships no type hints

from services.dispatch.domain import PlanSlot, StageKind, StageSpec
from services.dispatch.grids import GridIndex

# The sphere Redis GEO measures on, so distances agree with the locator's to the millimetre.
EARTH_RADIUS_M = 6372797.560856
# Groups this small are scanned whole; bucketing them costs more than it saves.
_SCAN_WHOLE = 32
ALL = "all"
NONE = "none"


@dataclass(frozen=True, slots=True)
class Cell:
    """One H3 cell of the service area, with the grid its centre falls in."""

    h3: str
    lat: float
    lon: float
    grid: str | None
    office: str | None
    zone_tier: str | None


@dataclass(frozen=True, slots=True)
class ResponderGroup:
    """Available responders sharing a kind, travel mode and skills, with the mode's speed."""

    kind: str
    travel_mode: str
    skills: frozenset[str]
    speed_mps: float
    positions: Sequence[tuple[float, float]]  # (lat, lon)


@dataclass(frozen=True, slots=True)
class SlotType:
    """A plan slot coverage measures: who may fill it, by kind and skills."""

    name: str
    kinds: tuple[str, ...]
    skills: tuple[str, ...] = ()

    def admits(self, group: ResponderGroup) -> bool:
        """Whether the group's responders may fill this slot."""
        return group.kind in self.kinds and set(self.skills) <= group.skills


@dataclass(frozen=True, slots=True)
class CellCoverage:
    """One cell's answer: the ETA per slot (None: nobody within reach) and each stage's verdict."""

    cell: Cell
    eta_s: dict[str, float | None]
    stages: tuple[StageSpec, ...]
    met: dict[str, bool]

    def stage(self, name: str) -> StageSpec | None:
        """The cell's (tightened) spec of a stage, if the plan has it."""
        return next((s for s in self.stages if s.stage == name), None)

    def stage_eta_s(self, spec: StageSpec) -> float | None:
        """The ETA that decides the stage: the fastest slot's, or the slowest's for reinforce."""
        etas = list(self.eta_s.values())
        known = [e for e in etas if e is not None]
        if spec.kind == StageKind.REINFORCE:
            return max(known) if known and len(known) == len(etas) else None
        return min(known) if known else None


def slot_name(slot: PlanSlot) -> str:
    """A readable name: ``volunteer`` for a slot volunteers may fill, else its kinds."""
    if "volunteer" in slot.kinds:
        return "volunteer"
    return "+".join(slot.kinds)


def slot_types(slots: Sequence[PlanSlot]) -> tuple[SlotType, ...]:
    """The plan's slots as coverage slot types, each under a distinct name."""
    out: list[SlotType] = []
    for slot in slots:
        name = slot_name(slot)
        taken = {s.name for s in out}
        if name in taken:
            name = next(
                f"{name}_{i}" for i in range(2, len(slots) + 2) if f"{name}_{i}" not in taken
            )
        out.append(SlotType(name, tuple(slot.kinds), tuple(slot.skills)))
    return tuple(out)


def _open_ring(ring: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """A GeoJSON ring as (lat, lon) pairs without the repeated closing point."""
    points = [(lat, lon) for lon, lat in ring]
    if len(points) > 1 and points[0] == points[-1]:
        points.pop()
    return points


def service_cells(grids: GridIndex, *, resolution: int) -> list[Cell]:
    """The H3 cells whose centres lie in a grid; each takes the grid its centre is in."""
    cells: dict[str, Cell] = {}
    for info, polygons in grids.areas():
        for rings in polygons:
            outer, *holes = (_open_ring(r) for r in rings)
            shape = h3.LatLngPoly(outer, *holes)
            for index in h3.polygon_to_cells(shape, resolution):
                if index in cells:
                    continue
                lat, lon = h3.cell_to_latlng(index)
                where = grids.locate(lat, lon) or info
                cells[index] = Cell(index, lat, lon, where.grid, where.office, where.zone_tier)
    return [cells[k] for k in sorted(cells)]


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres on the locator's sphere."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


@dataclass(frozen=True, slots=True)
class _Plane:
    """An equirectangular plane around the area, and how far its distances may be off."""

    lat0: float
    lon0: float
    kx: float
    ky: float
    error: float  # plane distance / great-circle distance lies within 1 ± error

    @classmethod
    def around(cls, cells: Sequence[Cell], *, reach_m: float) -> _Plane:
        lats = [c.lat for c in cells]
        lons = [c.lon for c in cells]
        lat0 = (min(lats) + max(lats)) / 2
        lon0 = (min(lons) + max(lons)) / 2
        margin = math.degrees(reach_m / EARTH_RADIUS_M)
        lo, hi = max(-89.0, min(lats) - margin), min(89.0, max(lats) + margin)
        cos0 = math.cos(math.radians(lat0))
        # East-west scale is exact only at lat0; elsewhere it is off by cos(lat)/cos(lat0),
        # which is extreme at the window's edges (or at the equator, if it is inside).
        extremes = [lo, hi, 0.0] if lo <= 0 <= hi else [lo, hi]
        spread = max(abs(math.cos(math.radians(lat)) / cos0 - 1) for lat in extremes)
        k = math.pi / 180 * EARTH_RADIUS_M
        return cls(lat0, lon0, k * cos0, k, min(0.5, spread + 1e-3))

    def xy(self, lat: float, lon: float) -> tuple[float, float]:
        return (lon - self.lon0) * self.kx, (lat - self.lat0) * self.ky


def _ring(ci: int, cj: int, k: int) -> Iterator[tuple[int, int]]:
    """The buckets exactly ``k`` steps (Chebyshev) from (ci, cj)."""
    if k == 0:
        yield ci, cj
        return
    for i in range(ci - k, ci + k + 1):
        yield i, cj - k
        yield i, cj + k
    for j in range(cj - k + 1, cj + k):
        yield ci - k, j
        yield ci + k, j


class _ModeIndex:
    """One slot's responders of one travel mode, where nearest means fastest."""

    def __init__(self, points: list[tuple[float, float, float, float]], speed_mps: float) -> None:
        self.speed_mps = speed_mps
        self.points = points  # (x, y, lat, lon)
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        area = max((max(xs) - min(xs)) * (max(ys) - min(ys)), 1.0)
        # About two responders per bucket where they are spread evenly.
        self.size_m = max(50.0, math.sqrt(area / len(points)) * 1.5)
        self.buckets: dict[tuple[int, int], list[tuple[float, float, float, float]]] = defaultdict(
            list
        )
        for p in points:
            self.buckets[(math.floor(p[0] / self.size_m), math.floor(p[1] / self.size_m))].append(p)
        self.i_range = (min(i for i, _ in self.buckets), max(i for i, _ in self.buckets))
        self.j_range = (min(j for _, j in self.buckets), max(j for _, j in self.buckets))

    def nearest_m(
        self, x: float, y: float, lat: float, lon: float, *, limit_m: float, error: float
    ) -> float | None:
        """Great-circle distance to the nearest point within ``limit_m``, or None."""
        far = limit_m / (1 - error)  # plane distance beyond which nobody is within the limit
        grow = (1 + error) / (1 - error)  # the true nearest is within this factor of the plane's
        if len(self.points) <= _SCAN_WHOLE:
            seen = [
                ((px - x) ** 2 + (py - y) ** 2, plat, plon) for px, py, plat, plon in self.points
            ]
        else:
            seen = self._scan(x, y, far=far, grow=grow)
        seen = [s for s in seen if s[0] <= far * far]
        if not seen:
            return None
        cutoff2 = min(s[0] for s in seen) * grow * grow
        best = min(haversine_m(lat, lon, plat, plon) for p2, plat, plon in seen if p2 <= cutoff2)
        return best if best <= limit_m else None

    def _scan(
        self, x: float, y: float, *, far: float, grow: float
    ) -> list[tuple[float, float, float]]:
        size = self.size_m
        ci, cj = math.floor(x / size), math.floor(y / size)
        last = max(
            ci - self.i_range[0], self.i_range[1] - ci, cj - self.j_range[0], self.j_range[1] - cj
        )
        best2 = math.inf
        seen: list[tuple[float, float, float]] = []
        buckets = self.buckets
        k = 0
        while k <= last:
            for key in _ring(ci, cj, k):
                for px, py, plat, plon in buckets.get(key, ()):
                    p2 = (px - x) * (px - x) + (py - y) * (py - y)
                    seen.append((p2, plat, plon))
                    best2 = min(best2, p2)
            # Everyone not yet seen is at least k * size away on the plane.
            stop = far if best2 == math.inf else min(far, math.sqrt(best2) * grow)
            if k * size >= stop:
                break
            k += 1
        return seen


def _judge(stages: Sequence[StageSpec], etas: Sequence[float | None]) -> dict[str, bool]:
    known = [e for e in etas if e is not None]
    met: dict[str, bool] = {}
    for spec in stages:
        if spec.kind == StageKind.RESPOND:
            met[spec.stage] = bool(known)
        elif spec.kind == StageKind.ARRIVE:
            met[spec.stage] = bool(known) and min(known) <= spec.target_s
        else:
            met[spec.stage] = len(known) == len(etas) and max(known) <= spec.target_s
    return met


def compute_coverage(
    *,
    cells: Sequence[Cell],
    groups: Sequence[ResponderGroup],
    slots: Sequence[SlotType],
    stages_by_tier: Mapping[str | None, Sequence[StageSpec]],
    reach_m: float,
) -> list[CellCoverage]:
    """Per cell: each slot's nearest ETA within ``reach_m`` and each stage's verdict.

    ``stages_by_tier`` gives the stages of a cell's zone tier (None: outside any tier);
    a tier missing from it gets the stages of None.
    """
    if not cells:
        return []
    plane = _Plane.around(cells, reach_m=reach_m)
    projected = [
        (g, [(*plane.xy(lat, lon), lat, lon) for lat, lon in g.positions])
        for g in groups
        if g.positions
    ]
    per_slot: list[list[_ModeIndex]] = []
    for slot in slots:
        by_speed: dict[float, list[tuple[float, float, float, float]]] = defaultdict(list)
        for group, points in projected:
            if slot.admits(group):
                by_speed[group.speed_mps].extend(points)
        # Fastest first: its ETA bounds how far the slower modes need to look.
        per_slot.append(
            [_ModeIndex(pts, speed) for speed, pts in sorted(by_speed.items(), reverse=True)]
        )
    out: list[CellCoverage] = []
    for cell in cells:
        x, y = plane.xy(cell.lat, cell.lon)
        etas: dict[str, float | None] = {}
        for slot, modes in zip(slots, per_slot, strict=True):
            best: float | None = None
            for mode in modes:
                limit = reach_m if best is None else min(reach_m, best * mode.speed_mps)
                d = mode.nearest_m(x, y, cell.lat, cell.lon, limit_m=limit, error=plane.error)
                if d is not None and (best is None or d / mode.speed_mps < best):
                    best = d / mode.speed_mps
            etas[slot.name] = best
        stages = tuple(stages_by_tier.get(cell.zone_tier, stages_by_tier[None]))
        out.append(CellCoverage(cell, etas, stages, _judge(stages, list(etas.values()))))
    return out


def coverage_ratios(
    results: Sequence[CellCoverage], *, tier_weights: Mapping[str, float]
) -> dict[tuple[str, str, str], float]:
    """Share of cells covered per (office, zone tier, stage), with ``all`` roll-ups.

    Within one office and tier every cell weighs the same (H3 cells of one resolution
    have nearly equal areas). Across tiers (``zone_tier="all"``) a cell weighs its
    tier's weight (unknown tiers 1), so a gap in a key area costs more than one in the
    outskirts. ``office="all"`` is the whole service area.
    """
    totals: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for r in results:
        office = r.cell.office or NONE
        tier = r.cell.zone_tier or NONE
        weight = tier_weights.get(tier, 1.0)
        for stage, met in r.met.items():
            for key, w in (
                ((office, tier, stage), 1.0),
                ((ALL, tier, stage), 1.0),
                ((office, ALL, stage), weight),
                ((ALL, ALL, stage), weight),
            ):
                totals[key][0] += w if met else 0.0
                totals[key][1] += w
    return {key: (met / whole if whole else 0.0) for key, (met, whole) in totals.items()}
