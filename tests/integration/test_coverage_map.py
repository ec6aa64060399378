"""``GET /v1/coverage`` on the real locator and Redis: dispatch fetches the available
responders over HTTP, maps the demo district's cells and serves them as GeoJSON."""

from __future__ import annotations

from typing import Any

import h3

from shared.auth import Role, mint_token
from tests.harness import AUTH_SECRET, Infra, eventually
from tests.integration.dispatch_stack import DISPATCHER, running_stack

OPERATOR = mint_token(secret=AUTH_SECRET, role=Role.OPERATOR, subject="ops-1")
SERVICE = mint_token(secret=AUTH_SECRET, role=Role.SERVICE, subject="intake")
# The centre of the one H3 cell (resolution 8) of the demo district's key-area grid
# (DC-01, dongcheng-central), so a walker there covers it at once.
KEY_SPOT: tuple[float, float] = h3.cell_to_latlng(h3.latlng_to_cell(23.020, 113.750, 8))


async def test_the_coverage_map_shows_where_help_could_arrive_in_time(infra: Infra) -> None:
    async with running_stack(infra, coverage_interval_s=0.3) as stack:
        walker = await stack.add_responder("volunteer", KEY_SPOT, travel_mode="foot")
        await stack.add_responder("patrol", KEY_SPOT, travel_mode="car")

        async def fetch(token: str | None, **params: str) -> Any:
            async with stack.dispatch.client(token) as client:
                return await client.get("/v1/coverage", params=params)

        async def both_counted() -> Any:
            answer = await fetch(DISPATCHER, stage="T3")
            return (
                answer.json()
                if answer.status_code == 200 and answer.json()["responders"] == 2
                else None
            )

        t3 = await eventually(both_counted, timeout=15, interval=0.2)
        t5 = (await fetch(OPERATOR, stage="T5")).json()
        default = await fetch(OPERATOR)
        anonymous = await fetch(None, stage="T3")
        as_service = await fetch(SERVICE, stage="T3")
        async with stack.dispatch.client(walker.token) as app:
            as_responder = await app.get("/v1/coverage")
        unknown_stage = await fetch(DISPATCHER, stage="T9")
        async with stack.dispatch.client() as anyone:
            metrics = (await anyone.get("/metrics")).text
        async with stack.locator.client(walker.token) as app:
            locator_as_responder = await app.get("/v1/responders/available")
        async with stack.locator.client(DISPATCHER) as desk:
            available = await desk.get("/v1/responders/available")

    assert t3["type"] == "FeatureCollection"
    assert t3["stage"] == "T3"
    assert t3["slots"] == ["volunteer", "patrol"]
    cells = {f["properties"]["cell"]: f for f in t3["features"]}
    assert len(cells) == len(t3["features"]) > 10
    for feature in t3["features"]:
        assert feature["type"] == "Feature"
        ring = feature["geometry"]["coordinates"][0]
        assert feature["geometry"]["type"] == "Polygon"
        assert ring[0] == ring[-1]
        assert len(ring) >= 7
        assert set(feature["properties"]["slots"]) == {"volunteer", "patrol"}
    key_cells = [f["properties"] for f in t3["features"] if f["properties"]["zone_tier"] == "key"]
    assert key_cells
    # Key areas halve the 180 s T3 target; the walker at the centre covers the centre cell.
    assert {p["target_s"] for p in key_cells} == {90}
    nearest = min(key_cells, key=lambda p: p["slots"]["volunteer"]["eta_s"])
    assert nearest["met"] is True
    assert nearest["slots"]["volunteer"]["eta_s"] < 90
    assert nearest["eta_s"] == min(s["eta_s"] for s in nearest["slots"].values())
    # Outskirts kilometres from the walker: the car makes it, the walker alone would not.
    other = [f["properties"] for f in t3["features"] if f["properties"]["zone_tier"] == "other"]
    assert any(
        p["met"] and not p["slots"]["volunteer"]["met"] and p["slots"]["patrol"]["met"]
        for p in other
    )
    assert 0 < t3["covered_ratio"] <= 1
    assert t5["stage"] == "T5"
    assert {
        f["properties"]["target_s"] for f in t5["features"] if f["properties"]["zone_tier"] == "key"
    } == {150}

    assert default.status_code == 200
    assert default.json()["stage"] == "T3"
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"]
    assert as_service.status_code == 403
    assert as_responder.status_code == 403
    assert unknown_stage.status_code == 422
    assert unknown_stage.json()["error"]["details"]["known"] == ["T1", "T3", "T5"]
    assert (
        'dispatch_coverage_ratio{office="dongcheng-central",stage="T3",zone_tier="key"} 1.0'
        in metrics
    )
    assert 'dispatch_coverage_ratio{office="all",stage="T1",zone_tier="all"} 1.0' in metrics

    assert locator_as_responder.status_code == 403
    assert available.status_code == 200
    groups = available.json()["groups"]
    assert {(g["kind"], g["travel_mode"]) for g in groups} == {
        ("volunteer", "foot"),
        ("patrol", "car"),
    }
    walking = next(g for g in groups if g["travel_mode"] == "foot")
    assert abs(walking["speed_mps"] - 5 / 3.6) < 1e-6
    assert "responder_id" not in str(groups)
