"""The dispatcher console in a real browser (Debian's headless Chromium, driven by
Playwright) against the whole system running as subprocesses.

The dispatcher signs in, watches a report arrive live, sees its T1 clock go red and
assigns a responder from the page; the responders' own notification streams show
the result. A token that is not a dispatcher's gets nothing. Screenshots land in
``test-output/console/`` and the last one is kept as ``docs/console.png``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, ViewportSize, async_playwright, expect

from shared.auth import Role
from tests.harness import AUTH_SECRET, E2E_ENV, UPDATE_SCREENSHOTS, eventually
from tools.devstack import ROOT, Stack

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SHOTS = ROOT / "test-output" / "console"
KEPT_SHOT = (ROOT / "docs" if UPDATE_SCREENSHOTS else SHOTS) / "console.png"
LAPTOP: ViewportSize = {"width": 1366, "height": 768}
WALL: ViewportSize = {"width": 2560, "height": 1440}
T1_TARGET_S = 8
# A spot outside the demo grids, so no zone tier tightens the targets.
HERE = (23.050, 113.750)
# Far beyond the locator's widest search from HERE, so the two never compete for anyone.
FAR = (22.60, 113.30)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The whole system with a short T1 target, so a breach shows within the test."""
    running = Stack.on_free_ports(
        tmp_path_factory.mktemp("console-stack"),
        extra_env=E2E_ENV,
        service_env={
            "dispatch": {
                "TARGET_OVERRIDES_S": json.dumps({"T1": T1_TARGET_S}),
                # The coverage map is recomputed often enough for the page to show it.
                "COVERAGE_INTERVAL_S": "2",
            }
        },
    )
    running.secret = AUTH_SECRET
    try:
        running.start(timeout=90)
        yield running
    finally:
        running.stop()


@asynccontextmanager
async def console_page(stack: Stack, viewport: ViewportSize = LAPTOP) -> AsyncIterator[Page]:
    """A fresh headless Chromium on ``/console``; fails the test on any script error."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    async with async_playwright() as p:
        browser: Browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport=viewport)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"{stack.url('dispatch')}/console")
            yield page
        finally:
            await browser.close()
    assert not errors, f"the console page threw: {errors}"


async def sign_in(page: Page, token: str) -> None:
    """Type a token into the sign-in form as a dispatcher would."""
    await page.get_by_label("Dispatcher token").fill(token)
    await page.get_by_role("button", name="Sign in").click()


@dataclass
class ResponderStream:
    """A responder's live notification stream, read as the responder app would."""

    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    open: asyncio.Event = field(default_factory=asyncio.Event)

    async def follow(self, url: str, token: str) -> None:
        """Collect ``(event, data)`` pairs until cancelled."""
        headers = {"authorization": f"Bearer {token}", "accept": "text/event-stream"}
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(5, read=None)) as client,
            client.stream("GET", url, headers=headers) as answer,
        ):
            assert answer.status_code == 200, await answer.aread()
            self.open.set()
            event = "message"
            async for line in answer.aiter_lines():
                if line.startswith("event:"):
                    event = line.removeprefix("event:").strip()
                elif line.startswith("data:"):
                    self.messages.append((event, json.loads(line.removeprefix("data:").strip())))
                elif not line:
                    event = "message"

    def of(self, event: str) -> list[dict[str, Any]]:
        """The messages of one event type so far."""
        return [data for name, data in self.messages if name == event]


@dataclass(frozen=True)
class Responder:
    """A registered responder and their app's token."""

    responder_id: str
    token: str


async def add_volunteer(
    stack: Stack, at: tuple[float, float], name: str = "Volunteer"
) -> Responder:
    """Register a volunteer, put them on duty and post their position, as their app would."""
    locator = stack.url("volunteer-locator")
    desk = {"authorization": f"Bearer {stack.token(Role.DISPATCHER)}"}
    async with httpx.AsyncClient(base_url=locator, timeout=5) as client:
        created = await client.post(
            "/v1/responders",
            headers=desk,
            json={"name": name, "kind": "volunteer", "skills": [], "travel_mode": "foot"},
        )
        assert created.status_code == 201, created.text
        who = Responder(**created.json())
        own = {"authorization": f"Bearer {who.token}"}
        path = f"/v1/responders/{who.responder_id}"
        duty = await client.put(f"{path}/duty", headers=own, json={"on_duty": True})
        assert duty.status_code == 200, duty.text
        ping = await client.post(f"{path}/location", headers=own, json={"lat": at[0], "lon": at[1]})
        assert ping.status_code == 202, ping.text

        async def findable() -> bool:
            near = await client.get(
                "/v1/responders/nearest",
                headers=desk,
                params={"lat": HERE[0], "lon": HERE[1], "limit": 50},
            )
            return any(r["responder_id"] == who.responder_id for r in near.json())

        await eventually(findable, timeout=15, interval=0.2)
    return who


def north(metres: float) -> tuple[float, float]:
    """A point ``metres`` north of ``HERE``."""
    return (HERE[0] + metres / 111_195.0, HERE[1])


async def test_a_token_that_is_not_a_dispatchers_gets_no_data(stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        answer = await client.post(
            f"{stack.url('intake')}/v1/reports",
            json={"category": "fraud", "location": {"lat": FAR[0], "lon": FAR[1]}},
        )
        assert answer.status_code == 202, answer.text
        report_id, reporter = answer.json()["report_id"], answer.json()["tracking_token"]
    async with console_page(stack) as page:
        for token in ("not-a-token", reporter, stack.token(Role.RESPONDER, str(uuid.uuid4()))):
            await sign_in(page, token)
            await expect(page.locator("#sign-in-error")).to_contain_text("Sign-in refused")
            await expect(page.locator("#workspace")).to_be_hidden()
            assert await page.locator("#queue tbody tr").count() == 0
        await page.screenshot(path=str(SHOTS / "01-sign-in-refused.png"))
    # The console's own helpers refuse the same callers.
    async with httpx.AsyncClient(base_url=stack.url("dispatch"), timeout=5) as client:
        helpers = ("/console/api/responders", f"/console/api/incidents/{uuid.uuid4()}/candidates")
        for path in helpers:
            assert (await client.get(path)).status_code == 401
            # A reporter's token is not meant for dispatch at all (its audience).
            refused = await client.get(path, headers={"authorization": f"Bearer {reporter}"})
            assert refused.status_code == 401, refused.text
            responder = stack.token(Role.RESPONDER, str(uuid.uuid4()))
            forbidden = await client.get(path, headers={"authorization": f"Bearer {responder}"})
            assert forbidden.status_code == 403, forbidden.text
    # The citizen withdraws the report, so it does not linger in the next test's queue.
    async with httpx.AsyncClient(base_url=stack.url("intake"), timeout=5) as client:
        cancelled = await client.post(
            f"/v1/reports/{report_id}/cancel", headers={"authorization": f"Bearer {reporter}"}
        )
        assert cancelled.status_code in (200, 202), cancelled.text


async def test_a_dispatcher_watches_a_report_breach_and_assigns_from_the_page(
    stack: Stack,
) -> None:
    # Two volunteers near the spot: the nearer gets dispatch's automatic offer, the other
    # stays free for the dispatcher to choose. Nobody can fill the plan's patrol unit.
    nearer = await add_volunteer(stack, north(60), name="Chen Jing")
    other = await add_volunteer(stack, north(400), name="Wang Fang")
    names = {nearer.responder_id: "Chen Jing", other.responder_id: "Wang Fang"}
    streams = {who.responder_id: ResponderStream() for who in (nearer, other)}
    notification = stack.url("notification")
    followers = [
        asyncio.create_task(
            streams[who.responder_id].follow(
                f"{notification}/v1/responders/{who.responder_id}/stream", who.token
            )
        )
        for who in (nearer, other)
    ]
    try:
        for stream in streams.values():
            await asyncio.wait_for(stream.open.wait(), 10)
        async with console_page(stack) as page:
            await sign_in(page, stack.token(Role.DISPATCHER))
            await expect(page.locator("#connection")).to_have_text("Live", timeout=10_000)
            # Both volunteers are on the map by name, marked by kind (the shape, not only
            # the colour).
            for who in (nearer, other):
                on_map = page.locator(
                    f'.map-marker.responder[title^="{names[who.responder_id]} · volunteer"]'
                )
                await expect(on_map).to_have_count(1)
                await expect(on_map).to_have_text("◆")
            await expect(page.locator("#map-responders")).to_have_text("2 on duty.")
            await page.evaluate("window.__sameDocument = true")

            # A citizen reports a theft; it shows in the queue without a reload.
            async with httpx.AsyncClient(timeout=5) as client:
                answer = await client.post(
                    f"{stack.url('intake')}/v1/reports",
                    json={
                        "category": "theft",
                        "location": {"lat": HERE[0], "lon": HERE[1]},
                        "address": "18 Market Street",
                        "description": "bicycle taken from the rack",
                    },
                )
            assert answer.status_code == 202, answer.text
            row = page.locator("#queue tbody tr", has_text="18 Market Street")
            await expect(row).to_have_count(1, timeout=10_000)
            await expect(row).to_contain_text("theft")
            assert await page.evaluate("window.__sameDocument === true"), "the page reloaded"

            # Dispatch offered the nearer volunteer on its own. Nobody can be the patrol, but
            # a volunteer is coming: an amber notice with its own symbol, not the red alarm.
            offers = await eventually(lambda: streams[nearer.responder_id].of("offer"), timeout=10)
            incident_id = offers[0]["incident_id"]
            await expect(row).to_contain_text("◐ SLOT UNFILLED · unit coming", timeout=10_000)
            await expect(row).not_to_contain_text("NO RESPONDER")
            await expect(page.locator("#alerts")).not_to_contain_text("No responder available")

            # Nobody accepts: the T1 clock turns red, with text, once its target passes.
            t1 = row.locator('.clock[data-stage="T1"]')
            await expect(t1).to_have_class(re.compile(r"clock (pending|warning)"))
            await expect(t1).to_contain_text("left")
            await expect(t1).to_have_class("clock breached", timeout=(T1_TARGET_S + 5) * 1000)
            await expect(t1).to_contain_text("BREACHED")
            await expect(page.locator("#alerts")).to_contain_text("T1 breached")
            await page.screenshot(path=str(SHOTS / "02-queue-breached.png"))

            # The dispatcher opens it by keyboard and sees the offer and the other volunteer.
            await row.focus()
            await page.keyboard.press("Enter")
            detail = page.locator("#detail")
            await expect(detail.locator("#detail-offers")).to_contain_text("waiting")
            # Offers and candidates name the responders; no id is shown.
            await expect(detail.locator("#detail-offers")).to_contain_text("Chen Jing")
            candidates = detail.locator("#detail-candidates")
            await expect(candidates).to_contain_text("Wang Fang")
            await expect(candidates).not_to_contain_text(other.responder_id[:8])
            await expect(detail.locator("#detail-milestones")).to_contain_text("T1 respond")
            # Why this responder: the offer's trace, with the slot it fills and who else was
            # considered; the amber notice; and the export downloads.
            trace = detail.locator("#trace-panel")
            await expect(trace).to_contain_text("Why this responder")
            await expect(trace).to_contain_text(f"Offer to {nearer.responder_id[:8]}")
            await expect(trace).to_contain_text("slot 1: volunteer/auxiliary")
            await expect(trace.locator(".trace-candidates")).to_contain_text("✔ offered")
            await expect(trace.locator(".trace-candidates")).to_contain_text(other.responder_id[:8])
            await expect(detail.locator("#detail-amber")).to_contain_text("a unit is coming")
            async with page.expect_download() as download_info:
                await trace.get_by_role("button", name="Export CSV").click()
            download = await download_info.value
            assert download.suggested_filename == f"incident-{incident_id}.csv"
            exported = (await download.path()).read_text()
            assert exported.startswith("record,offer_id,at,type")
            assert "trace_candidate" in exported
            await expect(
                page.get_by_role("button", name="Shift report (last 12 h, CSV)")
            ).to_be_visible()

            # The coverage layer: cells shaded by whether a report there could be met now,
            # with a legend that names each class in text and symbol, not colour alone.
            await page.locator("#coverage-on").check()
            legend = page.locator("#coverage-legend")
            await expect(legend).to_be_visible()
            await expect(legend.locator(".coverage-key")).to_have_count(3)
            await expect(legend.locator(".coverage-summary")).not_to_have_text("", timeout=15000)
            await expect(page.locator("path.coverage-cell").first).to_be_attached(timeout=15000)
            await page.locator("#coverage-on").uncheck()
            await expect(legend).to_have_count(0)

            # Assigning the chosen volunteer takes the unit from the pending offer.
            await page.locator("#assign-who").select_option(other.responder_id)
            await page.get_by_role("button", name="Assign chosen").click()
            result = page.locator("#action-result")
            await expect(result).to_contain_text("Assign chosen: volunteer")
            await expect(result).to_have_class("action-result ok")
            units = detail.locator("#detail-units")
            await expect(units).to_contain_text("Wang Fang")
            await expect(units).to_contain_text("assigned")
            await expect(detail.locator("#detail-offers")).to_contain_text("withdrawn")

            # The page's assignment reached the responder whose offer it replaced.
            withdrawn = await eventually(
                lambda: [
                    m
                    for m in streams[nearer.responder_id].of("offer_withdrawn")
                    if m.get("reason") == "reassigned"
                ],
                timeout=10,
            )
            assert withdrawn
            # And the responder chosen on the page hears the job, with where to go.
            assigned = await eventually(
                lambda: streams[other.responder_id].of("assignment"), timeout=10
            )
            assert assigned[0]["incident_id"] == incident_id
            assert assigned[0]["category"] == "theft"
            assert assigned[0]["status_url"].endswith(f"/units/{other.responder_id}/status")

            # Nobody can fill the patrol unit, and the page says so instead of failing quietly.
            await page.get_by_role("button", name="Assign next nearest").click()
            await expect(result).to_have_class("action-result failed")
            await expect(result).to_contain_text("nobody eligible is free nearby")

            await assert_fits(page)
            await page.screenshot(path=str(SHOTS / "03-assigned-laptop.png"))
            shutil.copyfile(SHOTS / "03-assigned-laptop.png", KEPT_SHOT)
            await page.set_viewport_size(WALL)
            await assert_fits(page)
            await page.screenshot(path=str(SHOTS / "04-wall-display.png"))
    finally:
        for task in followers:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await task


async def assert_fits(page: Page) -> None:
    """The queue, the map and the detail all sit on screen with no sideways scrolling."""
    width = await page.evaluate("document.documentElement.scrollWidth")
    viewport = await page.evaluate("window.innerWidth")
    assert width <= viewport, f"the page scrolls sideways: {width} > {viewport}"
    for panel in ("#queue", "#map", "#detail"):
        box = await page.locator(panel).bounding_box()
        assert box is not None, panel
        assert box["width"] > 0, panel
        assert box["height"] > 0, panel
        assert box["x"] + box["width"] <= viewport + 1, f"{panel} runs off the screen"
