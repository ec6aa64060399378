"""Helpers for the volunteer-locator's integration tests: the app on the real broker
and Redis, and a client that speaks its API as the apps and dispatch would."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from services.volunteer_locator.app import create_app
from services.volunteer_locator.geo import Point
from services.volunteer_locator.settings import LocatorSettings
from shared.auth import Role, mint_token
from shared.clock import Clock
from tests.harness import AUTH_SECRET, Infra, RunningApp, eventually, serve

ORIGIN = Point(lat=22.54, lon=114.05)
DISPATCHER = mint_token(secret=AUTH_SECRET, role=Role.DISPATCHER, subject="desk-1")
DISPATCH_SERVICE = mint_token(secret=AUTH_SECRET, role=Role.SERVICE, subject="dispatch")


@dataclass
class Registered:
    """A responder as registration answered."""

    responder_id: str
    token: str


@dataclass
class Locator:
    """The running locator and clients for its callers."""

    running: RunningApp
    dispatcher: httpx.AsyncClient
    service: httpx.AsyncClient

    def as_responder(self, who: Registered) -> httpx.AsyncClient:
        """A client carrying ``who``'s responder token."""
        return self.running.client(who.token)

    async def register(
        self,
        *,
        kind: str = "volunteer",
        travel_mode: str = "foot",
        skills: Sequence[str] = (),
        on_duty: bool = True,
    ) -> Registered:
        """Register a responder and (by default) put them on duty."""
        answer = await self.dispatcher.post(
            "/v1/responders",
            json={"name": "R", "kind": kind, "skills": list(skills), "travel_mode": travel_mode},
        )
        assert answer.status_code == 201, answer.text
        who = Registered(**answer.json())
        if on_duty:
            duty = await self.dispatcher.put(
                f"/v1/responders/{who.responder_id}/duty", json={"on_duty": True}
            )
            assert duty.status_code == 200, duty.text
        return who

    async def ping(
        self, who: Registered, at: Point, *, recorded_at: datetime | None = None
    ) -> httpx.Response:
        """Post ``who``'s own position."""
        body: dict[str, Any] = {"lat": at.lat, "lon": at.lon}
        if recorded_at is not None:
            body["recorded_at"] = recorded_at.isoformat()
        async with self.as_responder(who) as client:
            return await client.post(f"/v1/responders/{who.responder_id}/location", json=body)

    async def place(
        self, who: Registered, at: Point, *, recorded_at: datetime | None = None
    ) -> None:
        """Post a ping and wait until the index holds that position."""
        answer = await self.ping(who, at, recorded_at=recorded_at)
        assert answer.status_code == 202, answer.text
        await eventually(lambda: self.is_at(who.responder_id, at), timeout=10)

    async def position(self, responder_id: str) -> dict[str, Any] | None:
        """The position the locator holds for a responder."""
        answer = await self.dispatcher.get(f"/v1/responders/{responder_id}")
        assert answer.status_code == 200, answer.text
        position: dict[str, Any] | None = answer.json()["position"]
        return position

    async def is_at(self, responder_id: str, at: Point) -> bool:
        """Whether the held position is ``at``."""
        held = await self.position(responder_id)
        return (
            held is not None
            and abs(held["lat"] - at.lat) < 1e-9
            and abs(held["lon"] - at.lon) < 1e-9
        )

    async def nearest(self, at: Point = ORIGIN, **params: Any) -> list[dict[str, Any]]:
        """Ask for the nearest responders as dispatch would."""
        answer = await self.service.get(
            "/v1/responders/nearest", params={"lat": at.lat, "lon": at.lon, **params}
        )
        assert answer.status_code == 200, answer.text
        found: list[dict[str, Any]] = answer.json()
        return found

    async def claim(self, at: Point = ORIGIN, **body: Any) -> httpx.Response:
        """Claim for an incident at ``at`` (a fresh incident id unless given)."""
        body.setdefault("incident_id", str(uuid.uuid4()))
        return await self.service.post("/v1/claims", json={"lat": at.lat, "lon": at.lon, **body})


@asynccontextmanager
async def running_locator(
    infra: Infra, *, clock: Clock | None = None, **overrides: Any
) -> AsyncIterator[Locator]:
    """Serve a locator on the test's broker and Redis."""
    settings = infra.settings(LocatorSettings, "locator", **overrides)
    async with (
        serve(create_app(settings, clock=clock)) as running,
        running.client(DISPATCHER) as dispatcher,
        running.client(DISPATCH_SERVICE) as service,
    ):
        yield Locator(running=running, dispatcher=dispatcher, service=service)
