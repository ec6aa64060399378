"""Keeps the coverage map live: every ``COVERAGE_INTERVAL_S`` it asks the locator for the
available responders (``GET /v1/responders/available``, service token), recomputes every
cell (:mod:`services.dispatch.coverage`) off the event loop and sets the gauges.

Dispatch never reads the locator's Redis keys. When the locator cannot answer, the last
map is kept (with its time, so the console and the refresh gauge show its age) and the
next round tries again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import h3  # h3 4.x ships no type hints
import httpx

from services.dispatch.coverage import (
    Cell,
    CellCoverage,
    ResponderGroup,
    SlotType,
    compute_coverage,
    coverage_ratios,
    service_cells,
    slot_types,
)
from services.dispatch.domain import ResponsePlan, StageSpec, tightened
from services.dispatch.grids import GridIndex
from services.dispatch.locator_client import LocatorUnavailable
from services.dispatch.metrics import DispatchMetrics
from services.dispatch.plans import plan_for
from services.dispatch.settings import DispatchSettings
from shared.auth import Role, mint_token
from shared.clock import Clock
from shared.tasks import cancel

log = logging.getLogger(__name__)


class AvailableSource(Protocol):
    """Where the available responders come from (the locator, or a fake in tests)."""

    async def available(self) -> list[ResponderGroup]:
        """Every responder a search could return now, grouped with their speed."""
        ...


class HttpAvailableSource:
    """``GET {LOCATOR_URL}/v1/responders/available`` with a service token."""

    def __init__(self, *, base_url: str, secret: str, timeout_s: float) -> None:
        self._client = httpx.AsyncClient(base_url=base_url, timeout=timeout_s)
        self._secret = secret

    async def available(self) -> list[ResponderGroup]:
        """The locator's grouped answer as responder groups."""
        token = mint_token(
            secret=self._secret, role=Role.SERVICE, subject="dispatch", ttl=timedelta(minutes=5)
        )
        try:
            answer = await self._client.get(
                "/v1/responders/available", headers={"authorization": f"Bearer {token}"}
            )
        except httpx.HTTPError as exc:
            raise LocatorUnavailable(f"locator unreachable: {exc!r}") from exc
        if answer.status_code != 200:
            raise LocatorUnavailable(f"available answered {answer.status_code}")
        return [
            ResponderGroup(
                kind=g["kind"],
                travel_mode=g["travel_mode"],
                skills=frozenset(g["skills"]),
                speed_mps=float(g["speed_mps"]),
                positions=[(float(p[0]), float(p[1])) for p in g["positions"]],
            )
            for g in answer.json()["groups"]
        ]

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()


@dataclass(frozen=True)
class CoverageSnapshot:
    """One computed map: when, over how many responders, and every cell's answer."""

    computed_at: datetime
    responders: int
    results: list[CellCoverage]


def stages_by_tier(
    plan: ResponsePlan, settings: DispatchSettings
) -> dict[str | None, tuple[StageSpec, ...]]:
    """The plan's stages per zone tier, tightened exactly as an incident's are when it opens."""
    out: dict[str | None, tuple[StageSpec, ...]] = {
        None: tightened(plan.stages, factor=1.0, overrides=settings.target_overrides_s)
    }
    for tier, factor in settings.zone_tier_factors.items():
        out[tier] = tightened(plan.stages, factor=factor, overrides=settings.target_overrides_s)
    return out


class CoverageSink(Protocol):
    """Keeps a refresh's coverage ratios, by (office, zone tier, stage), for later review."""

    async def __call__(self, at: datetime, ratios: Mapping[tuple[str, str, str], float]) -> None:
        """Store the ratios measured at ``at``."""
        ...


class LiveCoverage:
    """The coverage map of this instance, recomputed in the background."""

    def __init__(
        self,
        *,
        settings: DispatchSettings,
        grids: GridIndex,
        plans: Mapping[str, ResponsePlan],
        source: AvailableSource,
        metrics: DispatchMetrics,
        clock: Clock,
        sample: CoverageSink | None = None,
    ) -> None:
        self.settings = settings
        self.sample = sample
        self._sampled_at: datetime | None = None
        self.source = source
        self.metrics = metrics
        self.clock = clock
        plan = plan_for(plans, settings.coverage_category)
        self.cells: list[Cell] = service_cells(grids, resolution=settings.coverage_resolution)
        self.slots: tuple[SlotType, ...] = slot_types(plan.slots)
        self.stages = stages_by_tier(plan, settings)
        self.stage_names: tuple[str, ...] = tuple(s.stage for s in plan.stages)
        self.snapshot: CoverageSnapshot | None = None
        self._boundaries: dict[str, list[list[float]]] = {}
        self._task: asyncio.Task[None] | None = None

    def boundary(self, cell: str) -> list[list[float]]:
        """The cell's closed GeoJSON ring, (lon, lat) pairs (cached: cells never move)."""
        ring = self._boundaries.get(cell)
        if ring is None:
            points = [[round(lon, 7), round(lat, 7)] for lat, lon in h3.cell_to_boundary(cell)]
            ring = self._boundaries[cell] = [*points, points[0]]
        return ring

    def compute(self, groups: list[ResponderGroup]) -> list[CellCoverage]:
        """Every cell's answer for these responders (pure, CPU-bound)."""
        return compute_coverage(
            cells=self.cells,
            groups=groups,
            slots=self.slots,
            stages_by_tier=self.stages,
            reach_m=self.settings.no_responder_radius_m,
        )

    async def refresh(self) -> CoverageSnapshot:
        """Ask the locator, recompute, set the gauges; raises LocatorUnavailable."""
        groups = await self.source.available()
        # In a thread so the event loop keeps serving offers while the map is computed.
        results = await asyncio.to_thread(self.compute, groups)
        now = self.clock.now()
        snapshot = CoverageSnapshot(now, sum(len(g.positions) for g in groups), results)
        self.snapshot = snapshot
        ratios = coverage_ratios(results, tier_weights=self.settings.coverage_tier_weights)
        for (office, tier, stage), ratio in ratios.items():
            self.metrics.coverage_ratio.labels(office, tier, stage).set(ratio)
        self.metrics.coverage_refreshed.set(now.timestamp())
        every = timedelta(seconds=self.settings.coverage_sample_interval_s)
        if self.sample is not None and (
            self._sampled_at is None or now - self._sampled_at >= every
        ):
            self._sampled_at = now
            await self.sample(now, ratios)
        return snapshot

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.refresh()
            except LocatorUnavailable as exc:
                log.warning("coverage not refreshed: %s", exc)
            except Exception:
                log.exception("coverage refresh failed")
            spent = time.monotonic() - started
            await asyncio.sleep(max(0.0, self.settings.coverage_interval_s - spent))

    async def start(self) -> None:
        """Start refreshing in the background."""
        self._task = asyncio.create_task(self._run(), name="coverage")

    async def stop(self) -> None:
        """Stop refreshing."""
        await cancel(self._task)
        self._task = None
