"""Intake, the volunteer-locator and dispatch served in-process on the real broker and
Redis, with helpers that act as the citizen, responder and dispatcher apps would."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from services.dispatch.app import create_app as create_dispatch
from services.dispatch.settings import DispatchSettings
from services.intake.app import create_app as create_intake
from services.intake.settings import IntakeSettings
from services.volunteer_locator.app import create_app as create_locator
from services.volunteer_locator.settings import LocatorSettings
from shared.auth import Role, mint_token
from shared.events import INCIDENTS, Envelope
from tests.harness import AUTH_SECRET, Infra, RunningApp, TopicReader, eventually, serve

# A spot outside the demo grids, so the default targets apply.
HERE = (23.050, 113.750)
DISPATCHER = mint_token(secret=AUTH_SECRET, role=Role.DISPATCHER, subject="desk-1")
# The locator's claim API takes the service role only.
SERVICE = mint_token(secret=AUTH_SECRET, role=Role.SERVICE, subject="test-harness")


def north(point: tuple[float, float], metres: float) -> tuple[float, float]:
    """A point ``metres`` north of ``point``."""
    return (point[0] + metres / 111_195.0, point[1])


@dataclass(frozen=True)
class Responder:
    """A registered responder and their app's token."""

    responder_id: uuid.UUID
    token: str


@dataclass
class Stack:
    """The three running services and the incidents topic."""

    infra: Infra
    intake: RunningApp
    locator: RunningApp
    dispatch: RunningApp
    incidents: TopicReader = field(init=False)

    def __post_init__(self) -> None:
        self.incidents = TopicReader(self.infra.kafka, INCIDENTS)

    async def add_responder(
        self,
        kind: str,
        at: tuple[float, float],
        *,
        skills: tuple[str, ...] = (),
        travel_mode: str = "foot",
    ) -> Responder:
        """Register a responder, put them on duty at ``at`` and wait until they can be found
        (free, or already claimed for an incident that was waiting for someone)."""
        async with self.locator.client(DISPATCHER) as desk:
            created = await desk.post(
                "/v1/responders",
                json={
                    "name": f"{kind} {uuid.uuid4().hex[:4]}",
                    "kind": kind,
                    "skills": list(skills),
                    "travel_mode": travel_mode,
                },
            )
            assert created.status_code == 201, created.text
            body = created.json()
        responder = Responder(uuid.UUID(body["responder_id"]), body["token"])
        path = f"/v1/responders/{responder.responder_id}"
        async with self.locator.client(responder.token) as app:
            duty = await app.put(f"{path}/duty", json={"on_duty": True})
            assert duty.status_code == 200, duty.text
            ping = await app.post(f"{path}/location", json={"lat": at[0], "lon": at[1]})
            assert ping.status_code == 202, ping.text
        await self.wait_locator_status(responder, "free", "offered", "busy")
        return responder

    async def locator_status(self, responder: Responder) -> str | None:
        """The responder's availability as the locator sees it."""
        async with self.locator.client(DISPATCHER) as desk:
            answer = await desk.get(
                f"/v1/responders/{responder.responder_id}",
            )
            assert answer.status_code == 200, answer.text
            status: str | None = answer.json()["status"]
            position = answer.json()["position"]
        return status if position is not None else None

    async def wait_locator_status(
        self, responder: Responder, *statuses: str, timeout: float = 10
    ) -> None:
        """Wait until the locator holds the responder as one of ``statuses``."""

        async def reached() -> bool:
            return await self.locator_status(responder) in statuses

        await eventually(reached, timeout=timeout, interval=0.1)

    async def report(self, category: str, at: tuple[float, float]) -> uuid.UUID:
        """A citizen posts a report; returns its id."""
        async with self.intake.client() as citizen:
            answer = await citizen.post(
                "/v1/reports",
                json={"category": category, "location": {"lat": at[0], "lon": at[1]}},
            )
        assert answer.status_code == 202, answer.text
        return uuid.UUID(answer.json()["report_id"])

    async def incident_of(self, report_id: uuid.UUID, timeout: float = 10) -> uuid.UUID:
        """The incident a report opened or joined, once dispatch has handled it."""
        found = await self.incidents.wait_for(
            lambda e: (
                e.type in ("IncidentOpened", "ReportMerged")
                and e.payload["report_id"] == str(report_id)
            ),
            timeout=timeout,
        )
        return uuid.UUID(found[0].payload["incident_id"])

    async def offers(self, *, count: int = 1, timeout: float = 10, **match: Any) -> list[Envelope]:
        """Wait for ``count`` ResponderOffered events whose payload matches ``match``."""

        def wanted(e: Envelope) -> bool:
            return e.type == "ResponderOffered" and all(
                e.payload.get(k) == str(v) for k, v in match.items()
            )

        return await self.incidents.wait_for(wanted, count=count, timeout=timeout)

    async def events(self, type_: str, **match: Any) -> list[Envelope]:
        """Every event of ``type_`` on the incidents topic so far whose payload matches."""
        return [
            e
            for e in await self.incidents.read_all(settle_s=0)
            if e.type == type_ and all(e.payload.get(k) == str(v) for k, v in match.items())
        ]

    async def detail(self, incident_id: uuid.UUID) -> dict[str, Any]:
        """The incident as the console sees it."""
        async with self.dispatch.client(DISPATCHER) as desk:
            answer = await desk.get(f"/v1/incidents/{incident_id}")
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    async def answer(self, responder: Responder, offer_id: str, verb: str) -> int:
        """The responder accepts or declines an offer; returns the status code."""
        async with self.dispatch.client(responder.token) as app:
            answer = await app.post(f"/v1/offers/{offer_id}/{verb}")
        return answer.status_code


def dispatch_settings(infra: Infra, locator: RunningApp, **overrides: Any) -> DispatchSettings:
    """Dispatch wired to the locator under test."""
    values: dict[str, Any] = {"locator_url": locator.base_url, "retry_interval_s": 2.0}
    values.update(overrides)
    return infra.settings(DispatchSettings, "dispatch", **values)


@asynccontextmanager
async def serve_dispatch(stack: Stack, settings: DispatchSettings) -> AsyncIterator[RunningApp]:
    """Serve (another) dispatch instance for the stack until the block ends."""
    async with serve(create_dispatch(settings)) as dispatch:
        stack.dispatch = dispatch
        yield dispatch


@asynccontextmanager
async def running_stack(infra: Infra, **dispatch_overrides: Any) -> AsyncIterator[Stack]:
    """Serve intake, the locator and dispatch until the block ends."""
    async with AsyncExitStack() as stack:
        intake = await stack.enter_async_context(
            serve(create_intake(infra.settings(IntakeSettings, "intake")))
        )
        locator = await stack.enter_async_context(
            serve(create_locator(infra.settings(LocatorSettings, "locator")))
        )
        dispatch = await stack.enter_async_context(
            serve(create_dispatch(dispatch_settings(infra, locator, **dispatch_overrides)))
        )
        yield Stack(infra, intake, locator, dispatch)


@asynccontextmanager
async def stack_without_dispatch(infra: Infra) -> AsyncIterator[Stack]:
    """Serve intake and the locator; the test starts and stops dispatch itself."""
    async with (
        serve(create_intake(infra.settings(IntakeSettings, "intake"))) as intake,
        serve(create_locator(infra.settings(LocatorSettings, "locator"))) as locator,
    ):
        # Dispatch is served later with serve_dispatch; until then, calls to it fail.
        yield Stack(infra, intake, locator, locator)


async def gather(*calls: Any) -> list[Any]:
    """Run calls at once (for simultaneous reports)."""
    return list(await asyncio.gather(*calls))
