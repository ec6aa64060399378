"""The console's team page, its offline map and its two languages, in headless Chromium
against the whole system.

A dispatcher registers a responder from the page, edits them, issues a sign-in code (the
phone exchanges it once for a token, as the responder app would), takes them off duty and
revokes them. The console names responders instead of showing ids, opens its map on the
configured grids with their labels and no tiles, and renders in zh-CN and en with a
remembered switch. axe-core (tests/e2e/axe, from npm) finds no serious or critical WCAG 2.1
AA violation on either page, and every control is at least 44 px each way. Screenshots of
both pages in both languages are kept in ``docs/screenshots/``.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from playwright.async_api import Dialog, Page, async_playwright, expect

from shared.auth import Role
from tests.e2e.test_console import CHROMIUM, CHROMIUM_ARGS, LAPTOP, sign_in
from tests.harness import DOCS_SHOTS, eventually
from tools.devstack import ROOT, Stack

AXE_JS = ROOT / "tests" / "e2e" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = DOCS_SHOTS
GRIDS = json.loads((ROOT / "services" / "dispatch" / "data" / "grids.geojson").read_text())
# Inside grid DC-01 of the shipped demo district.
IN_DC01 = (23.020, 113.750)
# The page's own controls; Leaflet's markers are exempt (the queue and lists offer the same).
CONTROLS = (
    "button:not([hidden]), select, input:not([type=hidden]):not([type=checkbox]),"
    " nav a, label:has(> input[type=checkbox]), .leaflet-bar a"
)


@asynccontextmanager
async def browser_page(stack: Stack, path: str, *, locale: str = "en-US") -> AsyncIterator[Page]:
    """A fresh Chromium with the given browser language on a console page; fails on any
    script error."""
    errors: list[str] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport=LAPTOP, locale=locale)
            page = await context.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"{stack.url('dispatch')}{path}")
            yield page
        finally:
            await browser.close()
    assert not errors, f"the page threw: {errors}"


async def serious_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical WCAG 2.1 A/AA violations on the page as it stands."""
    if not AXE_JS.is_file():
        raise AssertionError(f"axe-core is not installed at {AXE_JS}: run make venv")
    # Evaluated over the DevTools protocol: the page's policy forbids inline script.
    await page.evaluate(AXE_JS.read_text(encoding="utf-8"))
    result: dict[str, Any] = await page.evaluate(
        """async () => axe.run(document, {
              runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']},
           })"""
    )
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


async def small_targets(page: Page) -> list[str]:
    """Visible controls smaller than 44 x 44 CSS pixels."""
    found: list[str] = await page.evaluate(
        """(selector) => [...document.querySelectorAll(selector)]
            .filter((e) => e.offsetParent !== null)
            .map((e) => [e, e.getBoundingClientRect()])
            .filter(([, r]) => r.width < 44 || r.height < 44)
            .map(([e, r]) => `${e.tagName}#${e.id}.${e.className} ${r.width}x${r.height}`)""",
        CONTROLS,
    )
    return found


async def assert_accessible(page: Page) -> None:
    """No serious axe finding and no control under 44 px."""
    assert await serious_violations(page) == []
    assert await small_targets(page) == []


def row(page: Page, name: str) -> Any:
    """The team table's row of the responder with this name."""
    return page.locator("#team tbody tr", has=page.locator("th.name", has_text=name))


async def test_a_dispatcher_manages_a_responder_from_the_team_page(stack: Stack) -> None:
    locator = stack.url("volunteer-locator")
    async with browser_page(stack, "/console/team") as page:
        dialogs: list[str] = []

        async def accept(dialog: Dialog) -> None:
            dialogs.append(dialog.message)
            await dialog.accept()

        page.on("dialog", accept)
        await sign_in(page, stack.token(Role.DISPATCHER))
        await expect(page.locator("#workspace")).to_be_visible()

        # Register.
        await page.get_by_label("Name or call sign").fill("Li Wei")
        await page.get_by_label("Kind").select_option("volunteer")
        await page.get_by_label("Skills (comma separated)").fill("first_aid")
        await page.get_by_label("Travel mode").select_option("bicycle")
        await page.get_by_label("Grid").fill("DC-01")
        await page.get_by_role("button", name="Register", exact=True).click()
        await expect(page.locator("#team-result")).to_have_text("Registered Li Wei")
        li = row(page, "Li Wei")
        await expect(li).to_have_count(1)
        await expect(li).to_contain_text("volunteer")
        await expect(li).to_contain_text("first_aid")
        await expect(li).to_contain_text("off duty")
        await expect(li).to_contain_text("no position yet")
        responder_id = await li.get_attribute("data-id")
        assert responder_id
        # The list shows names, never ids.
        await expect(page.locator("#team")).not_to_contain_text(responder_id[:8])

        # Edit: a call sign, a second skill and a phone.
        await page.get_by_role("button", name="Edit: Li Wei").click()
        await expect(page.locator("#form-title")).to_have_text("Edit Li Wei")
        await page.get_by_label("Name or call sign").fill("Li Wei (V-07)")
        await page.get_by_label("Skills (comma separated)").fill("first_aid, driving")
        await page.get_by_label("Phone (+86…)").fill("+8613800138000")
        await page.get_by_role("button", name="Save").click()
        await expect(page.locator("#team-result")).to_have_text("Saved Li Wei (V-07)")
        li = row(page, "Li Wei (V-07)")
        await expect(li).to_contain_text("driving, first_aid")

        # A sign-in code with its QR: the phone exchanges it once for the responder's token.
        await page.get_by_role("button", name="Sign-in code: Li Wei (V-07)").click()
        code = page.locator("#pairing-code")
        await expect(code).to_have_text(re.compile(r"^[2-9A-HJKMNP-Z]{8}$"))
        qr = page.locator("#pairing-qr")
        await expect(qr).to_be_visible()
        assert await qr.evaluate("(img) => img.complete && img.naturalWidth > 0")
        await expect(qr).to_have_attribute("alt", "Sign-in QR code for Li Wei (V-07)")
        await page.screenshot(path=str(SCREENSHOTS / "team-en.png"))
        await assert_accessible(page)
        async with httpx.AsyncClient(base_url=locator, timeout=5) as client:
            paired = await client.post(f"/v1/pairing/{(await code.text_content() or '').lower()}")
            assert paired.status_code == 200, paired.text
            assert paired.json()["responder_id"] == responder_id
            token = paired.json()["token"]
            again = await client.post(f"/v1/pairing/{await code.text_content()}")
            assert again.status_code == 404, again.text
            # The phone goes on duty and shares its position.
            own = {"authorization": f"Bearer {token}"}
            path = f"/v1/responders/{responder_id}"
            on = await client.put(f"{path}/duty", headers=own, json={"on_duty": True})
            assert on.status_code == 200, on.text
            ping = await client.post(
                f"{path}/location", headers=own, json={"lat": IN_DC01[0], "lon": IN_DC01[1]}
            )
            assert ping.status_code == 202, ping.text
            # The edit reached the registry and the search index.
            desk = {"authorization": f"Bearer {stack.token(Role.DISPATCHER)}"}
            saved = (await client.get(path, headers=desk)).json()
            assert saved["skills"] == ["driving", "first_aid"]
            assert saved["phone"] == "+8613800138000"

            async def with_skill() -> bool:
                near = await client.get(
                    "/v1/responders/nearest",
                    headers=desk,
                    params={"lat": IN_DC01[0], "lon": IN_DC01[1], "skills": "driving"},
                )
                return any(r["responder_id"] == responder_id for r in near.json())

            await eventually(with_skill, timeout=15, interval=0.2)

        await page.reload()
        li = row(page, "Li Wei (V-07)")
        await expect(li).to_contain_text("on duty · free")
        await expect(li).to_contain_text(" s ago")

        # Take off duty.
        await page.get_by_role("button", name="Take off duty: Li Wei (V-07)").click()
        await expect(page.locator("#team-result")).to_have_text("Li Wei (V-07) is off duty")
        await expect(li).to_contain_text("off duty")
        await expect(page.get_by_role("button", name="Take off duty: Li Wei (V-07)")).to_have_count(
            0
        )

        # Revoke: the phone's token is refused from then on.
        await page.get_by_role("button", name="Revoke: Li Wei (V-07)").click()
        await expect(page.locator("#team-result")).to_contain_text("Li Wei (V-07) revoked at")
        assert dialogs
        assert "Revoke Li Wei (V-07)?" in dialogs[0]
        await expect(li).to_contain_text("revoked")
        async with httpx.AsyncClient(base_url=locator, timeout=5) as client:
            refused = await client.get(
                f"/v1/responders/{responder_id}", headers={"authorization": f"Bearer {token}"}
            )
            assert refused.status_code == 401, refused.text

    # The same page in Chinese, from the browser's language.
    async with browser_page(stack, "/console/team", locale="zh-CN") as page:
        await expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
        await expect(page.locator("#sign-in-title")).to_have_text("登录")
        await page.get_by_label("调度员令牌").fill(stack.token(Role.DISPATCHER))
        await page.get_by_role("button", name="登录").click()
        li = row(page, "Li Wei (V-07)")
        await expect(li).to_contain_text("义警")
        await expect(li).to_contain_text("已注销")
        await expect(page.locator("#form-title")).to_have_text("登记处置人员")
        await page.screenshot(path=str(SCREENSHOTS / "team-zh-CN.png"))
        await assert_accessible(page)


async def test_the_console_names_responders_maps_the_grids_and_speaks_both_languages(
    stack: Stack,
) -> None:
    locator = stack.url("volunteer-locator")
    desk = {"authorization": f"Bearer {stack.token(Role.DISPATCHER)}"}
    async with httpx.AsyncClient(base_url=locator, timeout=5) as client:
        created = await client.post(
            "/v1/responders",
            headers=desk,
            json={"name": "Zhang Min", "kind": "volunteer", "skills": [], "travel_mode": "foot"},
        )
        assert created.status_code == 201, created.text
        who = created.json()
        own = {"authorization": f"Bearer {who['token']}"}
        path = f"/v1/responders/{who['responder_id']}"
        assert (await client.put(f"{path}/duty", headers=own, json={"on_duty": True})).is_success
        near = {"lat": IN_DC01[0] + 0.0004, "lon": IN_DC01[1]}
        assert (await client.post(f"{path}/location", headers=own, json=near)).is_success

    async with browser_page(stack, "/console") as page:
        await sign_in(page, stack.token(Role.DISPATCHER))
        await expect(page.locator("#connection")).to_have_text("Live", timeout=10_000)

        # The grids are the base layer, labelled with name and zone tier, with no tiles.
        labels = page.locator(".grid-label")
        await expect(labels).to_have_count(len(GRIDS["features"]))
        await expect(labels.filter(has_text="DC-01")).to_contain_text("key zone")
        assert await page.locator(".leaflet-tile").count() == 0
        await expect(page.locator(".map-note")).to_contain_text("No map tiles configured")
        # The map opens on the service area: every grid in view, and not much more.
        view = await page.evaluate(
            "(() => { const b = state.map.getBounds();"
            " return [b.getSouth(), b.getWest(), b.getNorth(), b.getEast()]; })()"
        )
        lons = [p[0] for f in GRIDS["features"] for p in f["geometry"]["coordinates"][0]]
        lats = [p[1] for f in GRIDS["features"] for p in f["geometry"]["coordinates"][0]]
        south, west, north, east = view
        assert south <= min(lats), view
        assert north >= max(lats), view
        assert west <= min(lons), view
        assert east >= max(lons), view
        assert view[2] - view[0] < 4 * (max(lats) - min(lats)), f"zoomed far out: {view}"

        # A report in DC-01: the offer names the volunteer, not their id.
        async with httpx.AsyncClient(timeout=5) as client:
            answer = await client.post(
                f"{stack.url('intake')}/v1/reports",
                json={
                    "category": "theft",
                    "location": {"lat": IN_DC01[0], "lon": IN_DC01[1]},
                    "address": "3 Bridge Road",
                },
            )
        assert answer.status_code == 202, answer.text
        queued = page.locator("#queue tbody tr", has_text="3 Bridge Road")
        await expect(queued).to_have_count(1, timeout=10_000)
        await queued.click()
        offers = page.locator("#detail-offers")
        await expect(offers).to_contain_text("Zhang Min", timeout=10_000)
        await expect(offers).not_to_contain_text(who["responder_id"][:8])
        await expect(page.locator("#detail-timeline")).to_contain_text("Zhang Min")
        marker = page.locator('.map-marker.responder[title^="Zhang Min · volunteer"]')
        await expect(marker).to_have_count(1)
        await page.screenshot(path=str(SCREENSHOTS / "console-en.png"))
        await assert_accessible(page)

        # Switch to Chinese: remembered, and everything follows, category names included.
        await page.locator("#lang").select_option("zh-CN")
        await expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
        await expect(page.locator("h1")).to_have_text("快速反应调度")
        await expect(page.locator("#connection")).to_have_text("实时", timeout=10_000)
        queued = page.locator("#queue tbody tr", has_text="3 Bridge Road")
        await expect(queued.locator(".category")).to_contain_text("盗窃")
        await queued.click()
        await expect(page.locator("#detail-offers")).to_contain_text("Zhang Min")
        await expect(page.locator(".grid-label", has_text="DC-01")).to_contain_text("重点区域")
        await page.screenshot(path=str(SCREENSHOTS / "console-zh-CN.png"))
        await assert_accessible(page)
        await page.reload()
        await expect(page.locator("h1")).to_have_text("快速反应调度")
        # And back to English.
        await page.locator("#lang").select_option("en")
        await expect(page.locator("h1")).to_have_text("Quick-response dispatch")
