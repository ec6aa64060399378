"""Live coverage: the per-cell computation against a brute-force scan, and the gauges."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry

from services.dispatch.coverage import (
    Cell,
    CellCoverage,
    ResponderGroup,
    SlotType,
    compute_coverage,
    coverage_ratios,
    haversine_m,
    service_cells,
    slot_types,
)
from services.dispatch.coverage_live import LiveCoverage, stages_by_tier
from services.dispatch.domain import DEFAULT_STAGES, StageSpec
from services.dispatch.grids import GridIndex
from services.dispatch.metrics import DispatchMetrics
from services.dispatch.plans import default_plans
from services.dispatch.settings import DispatchSettings
from shared.clock import FakeClock

SPEEDS_MPS = {"foot": 5 / 3.6, "bicycle": 15 / 3.6, "motorbike": 30 / 3.6, "car": 35 / 3.6}
CENTRE = (23.02, 113.75)
REACH_M = 3_000.0


def box(lat: float, lon: float, half_m: float) -> list[list[float]]:
    """A closed square ring (lon, lat) of half-width ``half_m`` around a point."""
    dlat = half_m / 111_195.0
    dlon = half_m / (111_195.0 * math.cos(math.radians(lat)))
    return [
        [lon - dlon, lat - dlat],
        [lon + dlon, lat - dlat],
        [lon + dlon, lat + dlat],
        [lon - dlon, lat + dlat],
        [lon - dlon, lat - dlat],
    ]


def town() -> GridIndex:
    """A small town: a key-area square inside an urban one, and outskirts beside them."""
    lat, lon = CENTRE

    def feature(grid: str, office: str, tier: str, ring: list[list[float]]) -> dict[str, object]:
        return {
            "type": "Feature",
            "properties": {"grid": grid, "office": office, "zone_tier": tier},
            "geometry": {"type": "Polygon", "coordinates": [ring]},
        }

    return GridIndex.from_geojson(
        {
            "type": "FeatureCollection",
            "features": [
                feature("K1", "central", "key", box(lat, lon, 800)),
                feature("U1", "central", "urban", box(lat, lon, 2500)),
                feature("O1", "east", "other", box(lat, lon + 0.05, 2000)),
            ],
        }
    )


def responders(rng: random.Random, n: int) -> list[ResponderGroup]:
    """``n`` responders of every kind, mode and a first-aid skill, spread over the town."""
    lat, lon = CENTRE
    positions: dict[tuple[str, str, frozenset[str]], list[tuple[float, float]]] = {}
    for _ in range(n):
        kind = rng.choice(["volunteer", "volunteer", "auxiliary", "patrol"])
        mode = rng.choice(list(SPEEDS_MPS))
        skills = frozenset({"first_aid"}) if rng.random() < 0.3 else frozenset()
        where = (lat + rng.uniform(-0.04, 0.04), lon + rng.uniform(-0.04, 0.09))
        positions.setdefault((kind, mode, skills), []).append(where)
    return [
        ResponderGroup(kind, mode, skills, SPEEDS_MPS[mode], pts)
        for (kind, mode, skills), pts in positions.items()
    ]


def brute_force(
    cells: list[Cell], groups: list[ResponderGroup], slots: tuple[SlotType, ...]
) -> dict[str, dict[str, float | None]]:
    """Every responder against every cell centre: the nearest ETA per slot within reach."""
    out: dict[str, dict[str, float | None]] = {}
    for cell in cells:
        etas: dict[str, float | None] = {}
        for slot in slots:
            best: float | None = None
            for group in groups:
                if group.kind not in slot.kinds or not set(slot.skills) <= group.skills:
                    continue
                for lat, lon in group.positions:
                    d = haversine_m(cell.lat, cell.lon, lat, lon)
                    if d <= REACH_M and (best is None or d / group.speed_mps < best):
                        best = d / group.speed_mps
            etas[slot.name] = best
        out[cell.h3] = etas
    return out


def settings(**values: object) -> DispatchSettings:
    """Dispatch's settings for a test (no environment needed)."""
    return DispatchSettings.model_validate(
        {"auth_secret": "unit-test-secret-" + "x" * 32, **values}
    )


def tiers() -> dict[str | None, tuple[StageSpec, ...]]:
    settings_ = settings()
    return stages_by_tier(default_plans()["dispute"], settings_)


def test_cells_cover_the_town_and_take_the_tier_of_the_grid_their_centre_is_in() -> None:
    grids = town()
    cells = service_cells(grids, resolution=9)
    assert len({c.h3 for c in cells}) == len(cells)
    assert {c.zone_tier for c in cells} == {"key", "urban", "other"}
    for cell in cells:
        info = grids.locate(cell.lat, cell.lon)
        assert info is not None
        assert (cell.grid, cell.office, cell.zone_tier) == (info.grid, info.office, info.zone_tier)


def test_every_cell_matches_a_brute_force_scan_of_every_responder() -> None:
    rng = random.Random(17)
    cells = service_cells(town(), resolution=9)
    slots = (
        *slot_types(default_plans()["dispute"].slots),
        SlotType("medic", ("volunteer",), ("first_aid",)),
    )
    for n in (0, 5, 40, 1500):  # empty, scanned whole, and bucketed
        groups = responders(rng, n)
        got = compute_coverage(
            cells=cells, groups=groups, slots=slots, stages_by_tier=tiers(), reach_m=REACH_M
        )
        expected = brute_force(cells, groups, slots)
        assert [r.cell for r in got] == cells
        for result in got:
            for slot in slots:
                want, have = expected[result.cell.h3][slot.name], result.eta_s[slot.name]
                assert (want is None) == (have is None), (n, result.cell.h3, slot.name)
                if want is not None and have is not None:
                    assert abs(want - have) < 1e-6, (n, result.cell.h3, slot.name)


def test_stages_are_judged_against_targets_tightened_by_the_zone_tier() -> None:
    key_cell = Cell("k", *CENTRE, "K1", "central", "key")
    plain = Cell("p", CENTRE[0] + 0.2, CENTRE[1], None, None, None)
    slots = slot_types(default_plans()["dispute"].slots)

    def at(m_north: float, kind: str, mode: str) -> ResponderGroup:
        lat, lon = key_cell.lat + m_north / 111_195.0, key_cell.lon
        return ResponderGroup(kind, mode, frozenset(), SPEEDS_MPS[mode], [(lat, lon)])

    # A walker 100 m away (72 s) and a patrol car 2 km away (about 206 s).
    groups = [at(100, "volunteer", "foot"), at(2000, "patrol", "car")]
    key, far = compute_coverage(
        cells=[key_cell, plain], groups=groups, slots=slots, stages_by_tier=tiers(), reach_m=REACH_M
    )
    assert key.eta_s["volunteer"] is not None
    assert abs(key.eta_s["volunteer"] - 72.0) < 0.1
    assert key.eta_s["patrol"] is not None
    assert 200 < key.eta_s["patrol"] < 210
    # Key area halves the targets: T3 90 s (the walker makes it), T5 150 s (the car does not).
    assert [s.target_s for s in key.stages] == [30, 90, 150]
    assert key.met == {"T1": True, "T3": True, "T5": False}
    spec = key.stage("T5")
    assert spec is not None
    assert key.stage_eta_s(spec) == key.eta_s["patrol"]
    # 22 km north: nobody within the search radius, so not even T1 could be met.
    assert far.eta_s == {"volunteer": None, "patrol": None}
    assert far.met == {"T1": False, "T3": False, "T5": False}


def test_a_faster_responder_farther_away_wins() -> None:
    cell = Cell("c", *CENTRE, None, None, None)
    walker = ResponderGroup(
        "volunteer",
        "foot",
        frozenset(),
        SPEEDS_MPS["foot"],
        [(CENTRE[0] + 800 / 111_195, CENTRE[1])],
    )
    rider = ResponderGroup(
        "volunteer",
        "motorbike",
        frozenset(),
        SPEEDS_MPS["motorbike"],
        [(CENTRE[0] - 2000 / 111_195, CENTRE[1])],
    )
    (result,) = compute_coverage(
        cells=[cell],
        groups=[walker, rider],
        slots=(SlotType("volunteer", ("volunteer",)),),
        stages_by_tier={None: DEFAULT_STAGES},
        reach_m=REACH_M,
    )
    eta = result.eta_s["volunteer"]
    assert eta is not None
    assert abs(eta - 2000 / SPEEDS_MPS["motorbike"]) < 0.5


def _result(office: str, tier: str, met: bool) -> CellCoverage:
    cell = Cell(f"{office}-{tier}-{met}", *CENTRE, None, office, tier)
    return CellCoverage(cell, {}, DEFAULT_STAGES, {"T3": met})


def test_ratios_are_plain_within_a_tier_and_weighted_by_tier_across_tiers() -> None:
    results = [
        _result("north", "key", True),
        _result("north", "key", False),
        _result("north", "other", True),
        _result("north", "other", True),
        _result("south", "urban", False),
    ]
    ratios = coverage_ratios(results, tier_weights={"key": 3.0, "urban": 2.0, "other": 1.0})
    assert ratios[("north", "key", "T3")] == 0.5
    assert ratios[("north", "other", "T3")] == 1.0
    # north: (3·1 + 3·0 + 1 + 1) / (3 + 3 + 1 + 1)
    assert ratios[("north", "all", "T3")] == 5 / 8
    assert ratios[("south", "all", "T3")] == 0.0
    assert ratios[("all", "key", "T3")] == 0.5
    assert ratios[("all", "all", "T3")] == 5 / 10


class FakeSource:
    """Hands out fixed responder groups, as the locator would."""

    def __init__(self, groups: list[ResponderGroup]) -> None:
        self.groups = groups

    async def available(self) -> list[ResponderGroup]:
        return self.groups


async def test_a_refresh_sets_the_coverage_gauges() -> None:
    registry = CollectorRegistry()
    metrics = DispatchMetrics(registry)
    now = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
    lat, lon = CENTRE
    # One walking volunteer and one patrol car at the town centre: the key area is
    # covered for T3; the outskirts 5 km east are not.
    groups = [
        ResponderGroup("volunteer", "foot", frozenset(), SPEEDS_MPS["foot"], [(lat, lon)]),
        ResponderGroup("patrol", "car", frozenset(), SPEEDS_MPS["car"], [(lat, lon)]),
    ]
    live = LiveCoverage(
        settings=settings(coverage_resolution=9, no_responder_radius_m=REACH_M),
        grids=town(),
        plans=default_plans(),
        source=FakeSource(groups),
        metrics=metrics,
        clock=FakeClock(now),
    )
    snapshot = await live.refresh()
    assert snapshot.responders == 2
    assert snapshot.computed_at == now

    def gauge(office: str, tier: str, stage: str) -> float | None:
        return registry.get_sample_value(
            "dispatch_coverage_ratio", {"office": office, "zone_tier": tier, "stage": stage}
        )

    expected = coverage_ratios(snapshot.results, tier_weights=live.settings.coverage_tier_weights)
    for (office, tier, stage), ratio in expected.items():
        assert gauge(office, tier, stage) == ratio
    assert gauge("central", "key", "T1") == 1.0
    assert gauge("east", "other", "T3") == 0.0
    key_t3 = gauge("central", "key", "T3")
    assert key_t3 is not None
    assert key_t3 > 0.5
    assert registry.get_sample_value("dispatch_coverage_refreshed_timestamp_seconds") == (
        now.timestamp()
    )
