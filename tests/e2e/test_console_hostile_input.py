"""A hostile citizen cannot run script in the dispatcher console.

Reports carrying markup and script in every free-text field (address, description,
reporter name and device id, and the User-Agent header; a category is one of a list) go through the
real intake; a dispatcher then walks the console in headless Chromium: the queue, the
alerts, the map marker's tooltip, the detail pane with its timeline and the merge list.
Every hostile string shows literally as text, no dialog opens, no payload's flag is set,
and the browser reports no Content-Security-Policy violation (an injected element would
raise one even though the policy blocks it). The map tiles and their attribution come
from configuration, so the policy is shown to allow the configured tile origin.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import pytest
from playwright.async_api import (
    ConsoleMessage,
    Dialog,
    Locator,
    Page,
    async_playwright,
    expect,
)

from shared.auth import Role
from tests.e2e.test_console import CHROMIUM, CHROMIUM_ARGS, HERE, LAPTOP, SHOTS, sign_in
from tests.harness import AUTH_SECRET, E2E_ENV, eventually
from tools.devstack import Stack

T1_TARGET_S = 4
# Nothing listens on the discard port: tiles fail to load, which is no policy violation.
TILE_URL = "http://127.0.0.1:9/tiles/{z}/{x}/{y}.png"


def payload(where: str) -> str:
    """Markup that, if it were ever parsed as HTML, would set a flag and open a dialog."""
    return (
        f"\"'><img src=x onerror=\"window.__xss='{where}';alert('{where}')\">"
        f"<script>window.__xss='{where}'</script><svg onload=alert(1)> {where} end"
    )


# Intake takes only its listed categories, so markup there is refused outright.
HOSTILE_CATEGORY = "<img src=x onerror=alert('category')>"
CATEGORY = "theft"
ADDRESS = payload("address")
OTHER_ADDRESS = payload("other-address")
DESCRIPTION = payload("description")
REPORTER_NAME = payload("name")
DEVICE_ID = payload("device")
USER_AGENT = "<script>alert('ua')</script> Mozilla/5.0"
ATTRIBUTION = payload("attribution")

# Run in the page before any of its own scripts: record every policy violation.
WATCH = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__csp.push(`${e.violatedDirective} ${e.blockedURI} ${e.sample}`);
});
"""
# Markup that would be in the document had any hostile string been parsed as HTML.
INJECTED = "img[src='x'], svg[onload], [onerror], script:not([src])"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The whole system, with a short T1 target and configured (unreachable) map tiles."""
    running = Stack.on_free_ports(
        tmp_path_factory.mktemp("hostile-stack"),
        extra_env=E2E_ENV,
        service_env={
            "dispatch": {
                "TARGET_OVERRIDES_S": json.dumps({"T1": T1_TARGET_S}),
                "CONSOLE_TILE_URL": TILE_URL,
                "CONSOLE_TILE_ATTRIBUTION": ATTRIBUTION,
            }
        },
    )
    running.secret = AUTH_SECRET
    try:
        running.start(timeout=90)
        yield running
    finally:
        running.stop()


@dataclass
class Watched:
    """What the browser saw happen that a hostile string could have caused."""

    page: Page
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    policy_messages: list[str] = field(default_factory=list)

    async def violations(self) -> list[str]:
        """The page's recorded Content-Security-Policy violations."""
        found: list[str] = await self.page.evaluate("window.__csp")
        return found


@asynccontextmanager
async def watched_console(stack: Stack) -> AsyncIterator[Watched]:
    """Chromium on ``/console`` with dialogs, script errors and policy reports collected."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport=LAPTOP)
            seen = Watched(page)

            async def on_dialog(dialog: Dialog) -> None:
                seen.dialogs.append(dialog.message)
                await dialog.dismiss()

            def on_console(message: ConsoleMessage) -> None:
                if "Content Security Policy" in message.text:
                    seen.policy_messages.append(message.text)

            page.on("dialog", on_dialog)
            page.on("console", on_console)
            page.on("pageerror", lambda exc: seen.errors.append(str(exc)))
            await page.add_init_script(WATCH)
            await page.goto(f"{stack.url('dispatch')}/console")
            yield seen
        finally:
            await browser.close()


async def post_report(
    client: httpx.AsyncClient, stack: Stack, *, category: str, at: tuple[float, float], address: str
) -> str:
    """A citizen's report with hostile text everywhere, as a phone would post it."""
    answer = await client.post(
        f"{stack.url('intake')}/v1/reports",
        headers={"user-agent": USER_AGENT},
        json={
            "category": category,
            "location": {"lat": at[0], "lon": at[1]},
            "address": address,
            "description": DESCRIPTION,
            "reporter": {"name": REPORTER_NAME, "device_id": DEVICE_ID},
        },
    )
    assert answer.status_code == 202, answer.text
    report_id: str = answer.json()["report_id"]
    return report_id


async def focus_tooltip(page: Page, marker: Locator) -> str | None:
    """Tab onto the marker as a keyboard user would (Leaflet opens a marker's tooltip on
    focus as on hover); the tooltip's text, if it opened.

    Focus, unlike the mouse, does not depend on where the marker sits on screen: a
    marker at the map's edge can be under the panel's title. Every refresh redraws the
    markers, which can close a tooltip, so the caller retries: focus leaves first.
    """
    await page.locator("#map-title").click()
    await marker.focus()
    tooltip = page.locator(".leaflet-tooltip")
    if await tooltip.count() != 1 or not await tooltip.is_visible():
        return None
    return await tooltip.text_content()


async def test_hostile_report_text_shows_literally_and_runs_nothing(stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        refused = await client.post(
            f"{stack.url('intake')}/v1/reports",
            json={"category": HOSTILE_CATEGORY, "location": {"lat": HERE[0], "lon": HERE[1]}},
        )
        assert refused.status_code == 422, refused.text
        await post_report(client, stack, category=CATEGORY, at=HERE, address=ADDRESS)
        # A second incident 1.5 km away, so the merge list shows a hostile address too.
        await post_report(
            client, stack, category="fire", at=(HERE[0] + 0.0135, HERE[1]), address=OTHER_ADDRESS
        )

    async with watched_console(stack) as seen:
        page = seen.page
        await sign_in(page, stack.token(Role.DISPATCHER))
        await expect(page.locator("#connection")).to_have_text("Live", timeout=10_000)

        # The queue: the row shows the category and address as typed.
        row = page.locator("#queue tbody tr", has_text=ADDRESS)
        await expect(row).to_have_count(1, timeout=15_000)
        await expect(row.locator(".category")).to_contain_text(CATEGORY)
        await expect(page.locator("#queue tbody tr", has_text=OTHER_ADDRESS)).to_have_count(1)

        # The alerts: nobody is on duty, then the T1 target passes.
        alerts = page.locator("#alerts")
        await expect(alerts).to_contain_text(f"No responder available: {CATEGORY} at {ADDRESS}")
        await expect(alerts).to_contain_text(
            f"T1 breached: {CATEGORY} at {ADDRESS}", timeout=(T1_TARGET_S + 10) * 1000
        )

        # The map: focusing the incident opens its tooltip, as text.
        marker = page.locator(".map-marker.incident").and_(page.get_by_title(ADDRESS))
        await expect(marker).to_have_count(1)
        tooltip = await eventually(lambda: focus_tooltip(page, marker), timeout=20, interval=0.2)
        assert f"{CATEGORY} · {ADDRESS}" in tooltip
        # The configured attribution is shown as text too.
        attribution = page.locator(".leaflet-control-attribution")
        await expect(attribution).to_contain_text(ATTRIBUTION)

        # Clicking the marker opens the detail pane: title, place, timeline and merge list.
        await marker.click()
        await expect(page.locator("#detail-title")).to_contain_text(CATEGORY)
        await expect(page.locator("#detail-summary")).to_contain_text(ADDRESS)
        await expect(page.locator("#detail-timeline li").first).to_be_visible()
        merge_into = page.locator("#merge-into option", has_text=OTHER_ADDRESS)
        await expect(merge_into).to_have_count(1)
        await page.screenshot(path=str(SHOTS / "10-hostile-text.png"))

        # Nothing ran, nothing was injected, and the policy was never even tested.
        assert seen.dialogs == []
        assert await page.evaluate("window.__xss") is None
        assert await page.locator(INJECTED).count() == 0
        assert await seen.violations() == []
        assert seen.policy_messages == []
        assert seen.errors == []

        # The watch works: markup forced in by hand is blocked and reported.
        await page.evaluate(
            "document.body.insertAdjacentHTML('beforeend',"
            " `<img src=x onerror=\"window.__xss='forced'\">`)"
        )
        forced = await eventually(seen.violations, timeout=5)
        assert any("script-src" in v for v in forced), forced
        assert await page.evaluate("window.__xss") is None


async def test_every_service_sends_the_security_headers(stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        console = await client.get(f"{stack.url('dispatch')}/console")
        assert console.status_code == 200
        policy = console.headers["content-security-policy"]
        for rule in (
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "object-src 'none'",
            "base-uri 'none'",
            "img-src 'self' data: http://127.0.0.1:9",
        ):
            assert rule in policy, rule
        assert "unsafe-inline" not in policy
        assert "unsafe-eval" not in policy
        for name in ("intake", "dispatch", "volunteer-locator", "notification"):
            for path in ("/healthz", "/v1/does-not-exist"):
                answer = await client.get(f"{stack.url(name)}{path}")
                assert answer.headers["x-content-type-options"] == "nosniff", (name, path)
                assert answer.headers["referrer-policy"] == "no-referrer", (name, path)
                assert "default-src 'none'" in answer.headers["content-security-policy"]
            docs = await client.get(f"{stack.url(name)}/docs")
            assert docs.status_code == 200, name
            assert "frame-ancestors 'none'" in docs.headers["content-security-policy"], name
