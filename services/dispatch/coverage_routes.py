"""``GET /v1/coverage``: the live coverage map as GeoJSON, and the console layer's assets."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from services.dispatch.console import CONSOLE_DIR
from services.dispatch.coverage import CellCoverage
from services.dispatch.coverage_live import LiveCoverage
from services.dispatch.domain import StageKind, StageSpec
from shared.auth import Principal, Role, require_roles
from shared.errors import Invalid, NotFound, Unavailable

router = APIRouter(prefix="/v1", tags=["coverage"])
assets = APIRouter(tags=["console"], include_in_schema=False)
ASSETS = {"coverage.js": "text/javascript", "coverage.css": "text/css"}

DispatchOrOperator = Annotated[Principal, Depends(require_roles(Role.DISPATCHER, Role.OPERATOR))]


async def get_coverage(request: Request) -> LiveCoverage:
    """The live coverage map of this instance."""
    coverage: LiveCoverage = request.app.state.coverage
    return coverage


CoverageDep = Annotated[LiveCoverage, Depends(get_coverage)]


class ErrorDetail(BaseModel):
    """What went wrong."""

    code: str
    message: str
    details: Any = None


class ErrorBody(BaseModel):
    """Every error answer: ``{"error": {code, message, details}}``."""

    error: ErrorDetail


class SlotEta(BaseModel):
    """The nearest available eligible responder for one plan slot."""

    eta_s: float | None = Field(description="Seconds; null when nobody is within reach.")
    met: bool = Field(description="Whether this slot alone would meet the stage's target.")


class CellProperties(BaseModel):
    """One cell's answer for the asked stage."""

    cell: str = Field(description="H3 index.")
    grid: str | None
    office: str | None
    zone_tier: str | None
    stage: str
    target_s: int = Field(description="The stage's target here, after the zone tier tightens it.")
    eta_s: float | None = Field(
        description="The ETA that decides the stage: the fastest slot's (respond, arrive) "
        "or the slowest slot's (reinforce); null when a needed slot has nobody within reach."
    )
    met: bool
    slots: dict[str, SlotEta]


class CellGeometry(BaseModel):
    """The cell's hexagon, one closed ring of (lon, lat)."""

    type: Literal["Polygon"] = "Polygon"
    coordinates: list[list[list[float]]]


class CellFeature(BaseModel):
    """A GeoJSON Feature: one cell."""

    type: Literal["Feature"] = "Feature"
    id: str
    geometry: CellGeometry
    properties: CellProperties


class CoverageMap(BaseModel):
    """A GeoJSON FeatureCollection of the service area's cells, with the map's time."""

    type: Literal["FeatureCollection"] = "FeatureCollection"
    stage: str
    computed_at: datetime
    responders: int = Field(description="Available responders the map was computed from.")
    slots: list[str] = Field(description="The plan slots measured, in plan order.")
    covered_ratio: float = Field(description="Share of cells where the stage could be met.")
    features: list[CellFeature]


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No token, or a bad one"},
    403: {"model": ErrorBody, "description": "Not a dispatcher or operator token"},
    422: {"model": ErrorBody, "description": "Unknown stage"},
    503: {"model": ErrorBody, "description": "No map yet: the locator has not answered"},
}


def _slot_met(spec: StageSpec, eta_s: float | None) -> bool:
    if eta_s is None:
        return False
    return spec.kind == StageKind.RESPOND or eta_s <= spec.target_s


def _feature(coverage: LiveCoverage, result: CellCoverage, stage: str) -> CellFeature | None:
    spec = result.stage(stage)
    if spec is None:
        return None
    eta = result.stage_eta_s(spec)
    met = result.met[stage]
    return CellFeature(
        id=result.cell.h3,
        geometry=CellGeometry(coordinates=[coverage.boundary(result.cell.h3)]),
        properties=CellProperties(
            cell=result.cell.h3,
            grid=result.cell.grid,
            office=result.cell.office,
            zone_tier=result.cell.zone_tier,
            stage=stage,
            target_s=spec.target_s,
            eta_s=round(eta, 1) if eta is not None else None,
            met=met,
            slots={
                name: SlotEta(eta_s=round(e, 1) if e is not None else None, met=_slot_met(spec, e))
                for name, e in result.eta_s.items()
            },
        ),
    )


@router.get("/coverage", response_model=CoverageMap, responses=ERRORS)
async def get_coverage_map(
    coverage: CoverageDep,
    _: DispatchOrOperator,
    stage: Annotated[str, Query(max_length=16, description="T1, T3 or T5")] = "T3",
) -> CoverageMap:
    """Could anyone reach each cell of the service area in time for ``stage``, now?

    Each cell carries the ETA of the nearest available eligible responder per plan
    slot (volunteer first, patrol) and whether the stage's target, tightened by the
    cell's zone tier, could be met. Recomputed every ``COVERAGE_INTERVAL_S``.
    """
    if stage not in coverage.stage_names:
        raise Invalid("unknown stage", details={"stage": stage, "known": coverage.stage_names})
    snapshot = coverage.snapshot
    if snapshot is None:
        raise Unavailable("the coverage map is not computed yet", code="coverage_unavailable")
    features = [f for r in snapshot.results if (f := _feature(coverage, r, stage)) is not None]
    covered = sum(1 for f in features if f.properties.met)
    return CoverageMap(
        stage=stage,
        computed_at=snapshot.computed_at,
        responders=snapshot.responders,
        slots=[s.name for s in coverage.slots],
        covered_ratio=covered / len(features) if features else 0.0,
        features=features,
    )


@assets.get("/console/coverage/{name}")
async def coverage_asset(name: str) -> FileResponse:
    """The console's coverage layer: its script and style sheet."""
    if name not in ASSETS:
        raise NotFound("no such asset")
    return FileResponse(CONSOLE_DIR / name, media_type=ASSETS[name])
