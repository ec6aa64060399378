"""The citizen and responder apps in a real browser (Debian's headless Chromium, driven
by Playwright, on a phone viewport with emulated GPS) against the whole system.

A responder pairs their phone with a code a dispatcher issued, goes on duty and shares
their position; a citizen files a report from the page; the responder gets the offer
card with its countdown, accepts, finds the navigation links and reports en route and
on scene; the citizen's tracking page shows a volunteer on the way and then on scene,
never their name or phone. Both apps render in English and Chinese, axe-core finds no
serious or critical WCAG 2.1 AA violation, every control is at least 44 px, and the
screenshots land in ``docs/screenshots/``.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    Page,
    Route,
    ViewportSize,
    async_playwright,
    expect,
)

from shared.auth import Role
from tests.harness import AUTH_SECRET, DOCS_SHOTS, eventually
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
    "--autoplay-policy=no-user-gesture-required",
]
# Two phones through a whole incident, plus the stack's start, on a shared 2-core machine.
pytestmark = pytest.mark.timeout(300)

PHONE: ViewportSize = {"width": 390, "height": 844}
SHOTS = DOCS_SHOTS
AXE = ROOT / "web" / "node_modules" / "axe-core" / "axe.min.js"
# Outside the demo grids, so no zone tier tightens the targets, as in the console test.
HERE = (23.050, 113.750)
RESPONDER_AT = (HERE[0] + 250 / 111_195.0, HERE[1])
NAME = "Wang Wei"
PHONE_NUMBER = "+8613800138000"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The whole system; dispatch and notification allow the responder app's origin."""
    running = Stack.on_free_ports(
        tmp_path_factory.mktemp("apps-stack"), extra_env={"AUTH_SECRET": AUTH_SECRET}
    )
    app_origin = json.dumps([running.url("volunteer-locator")])
    running.service_env = {
        "dispatch": {"CORS_ORIGINS": app_origin},
        "notification": {"CORS_ORIGINS": app_origin},
        "volunteer-locator": {
            "APP_DISPATCH_URL": running.url("dispatch"),
            "APP_NOTIFICATION_URL": running.url("notification"),
        },
    }
    running.secret = AUTH_SECRET
    try:
        running.start(timeout=90)
        yield running
    finally:
        running.stop()


@asynccontextmanager
async def browser() -> AsyncIterator[Browser]:
    """Headless Chromium."""
    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@asynccontextmanager
async def phone(
    chromium: Browser, *, at: tuple[float, float], locale: str = "en-US", bypass_csp: bool = True
) -> AsyncIterator[tuple[BrowserContext, list[str]]]:
    """A phone: small screen, touch, GPS at ``at``; collects the page's script errors."""
    context = await chromium.new_context(
        viewport=PHONE,
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        locale=locale,
        permissions=["geolocation"],
        geolocation={"latitude": at[0], "longitude": at[1], "accuracy": 12},
        # axe-core is injected as a script tag; the pages' own CSP must not stop it.
        bypass_csp=bypass_csp,
    )
    errors: list[str] = []
    context.on("weberror", lambda e: errors.append(str(e.error)))
    try:
        yield context, errors
    finally:
        await context.close()
    assert not errors, f"a page threw: {errors}"


async def open_page(context: BrowserContext, url: str) -> Page:
    """Open ``url`` and wait until the app has started."""
    page = await context.new_page()
    await page.goto(url)
    await expect(page.locator("body[data-ready]")).to_have_count(1, timeout=15_000)
    return page


async def axe_violations(page: Page) -> list[dict[str, Any]]:
    """Serious and critical WCAG 2.1 A/AA violations that axe-core finds on the page."""
    await page.add_script_tag(path=str(AXE))
    result: dict[str, Any] = await page.evaluate(
        """() => axe.run(document, {runOnly: {type: "tag",
              values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}})"""
    )
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]]}
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


async def small_targets(page: Page) -> list[str]:
    """Visible controls smaller than 44 x 44 CSS pixels."""
    found: list[str] = await page.evaluate(
        """() => [...document.querySelectorAll(
              'button, a[href], input, textarea, select, [role=button], [tabindex="0"]')]
            .filter((e) => e.offsetParent !== null || e.getClientRects().length)
            .map((e) => [e, e.getBoundingClientRect()])
            .filter(([e, r]) => r.width > 0 && (r.width < 44 || r.height < 44))
            .map(([e, r]) => `${e.tagName}#${e.id}.${e.className} ${r.width}x${r.height}`)"""
    )
    return found


async def check_accessible(page: Page) -> None:
    """No serious axe violation, no control under 44 px."""
    assert await axe_violations(page) == []
    assert await small_targets(page) == []


async def shoot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)


async def register_responder(stack: Stack) -> tuple[str, str]:
    """Register a volunteer as a dispatcher would; answers the id and a fresh pairing code."""
    desk = {"authorization": f"Bearer {stack.token(Role.DISPATCHER)}"}
    async with httpx.AsyncClient(base_url=stack.url("volunteer-locator"), timeout=5) as client:
        created = await client.post(
            "/v1/responders",
            headers=desk,
            json={
                "name": NAME,
                "kind": "volunteer",
                "skills": ["first_aid"],
                "travel_mode": "foot",
                "phone": PHONE_NUMBER,
            },
        )
        assert created.status_code == 201, created.text
        responder_id = created.json()["responder_id"]
        issued = await client.post(f"/v1/responders/{responder_id}/pairing", headers=desk)
        assert issued.status_code == 201, issued.text
    return responder_id, issued.json()["code"]


async def findable(stack: Stack, responder_id: str) -> bool:
    """Whether dispatch could find the responder now (on duty, position known)."""
    desk = {"authorization": f"Bearer {stack.token(Role.DISPATCHER)}"}
    async with httpx.AsyncClient(base_url=stack.url("volunteer-locator"), timeout=5) as client:
        near = await client.get(
            "/v1/responders/nearest",
            headers=desk,
            params={"lat": HERE[0], "lon": HERE[1], "limit": 50},
        )
    return any(r["responder_id"] == responder_id for r in near.json())


async def test_a_report_from_the_citizen_app_reaches_the_responder_app_and_back(
    stack: Stack,
) -> None:
    responder_id, code = await register_responder(stack)
    async with (
        browser() as chromium,
        phone(chromium, at=RESPONDER_AT) as (responder_ctx, _),
        phone(chromium, at=HERE) as (citizen_ctx, _),
    ):
        # The responder pairs their phone with the code the dispatcher gave them.
        responder = await open_page(responder_ctx, f"{stack.url('volunteer-locator')}/responder/")
        await expect(responder.get_by_role("heading", name="Sign in")).to_be_visible()
        await check_accessible(responder)
        await shoot(responder, "responder-sign-in-en")
        await responder.get_by_label("Pairing code").fill(code)
        await responder.get_by_role("button", name="Sign in").click()
        await expect(responder.locator("#who")).to_have_text(f"{NAME} · volunteer")
        duty = responder.get_by_role("switch")
        await expect(duty).to_have_attribute("aria-checked", "false")
        await duty.click()
        await expect(duty).to_have_attribute("aria-checked", "true")
        await expect(duty).to_contain_text("On duty")
        await expect(responder.locator("#fix")).to_contain_text(re.compile(r"Last fix .*±12 m"))
        await expect(responder.locator("#stream-state")).to_have_attribute("data-live", "true")
        await eventually(lambda: findable(stack, responder_id), timeout=20, interval=0.3)
        await check_accessible(responder)
        await shoot(responder, "responder-on-duty-en")

        # The citizen reports a dispute from the page: GPS pin, a description, a contact.
        citizen = await open_page(citizen_ctx, f"{stack.url('intake')}/app/")
        await expect(citizen.get_by_role("link", name=re.compile("Call 110"))).to_have_attribute(
            "href", "tel:110"
        )
        await expect(citizen.locator("#fix")).to_contain_text("Location from GPS")
        await check_accessible(citizen)
        await shoot(citizen, "citizen-report-en")
        await citizen.get_by_role("button", name="Dispute").click()
        await expect(citizen.get_by_role("button", name="Dispute")).to_have_attribute(
            "aria-pressed", "true"
        )
        await citizen.get_by_label("What do you see?").fill("Two neighbours shouting <b>loud</b>")
        await citizen.get_by_label("Name").fill("Li Na")
        await citizen.get_by_label("Phone").fill("139 0013 9000")
        await citizen.get_by_role("button", name="Send report").click()
        await expect(citizen.get_by_role("heading", name="Your report")).to_be_visible()
        await expect(citizen.locator("#track-category")).to_have_text(
            re.compile("Report: Dispute", re.IGNORECASE)
        )
        await expect(citizen.locator("#track-connection")).to_have_text("Live updates on")

        # The offer fills the responder's screen with its countdown.
        card = responder.get_by_role("alertdialog")
        await expect(card).to_be_visible(timeout=20_000)
        await expect(card).to_contain_text(re.compile("New incident: Dispute", re.IGNORECASE))
        await expect(responder.locator("#offer-countdown")).to_have_text(
            re.compile(r"^\d+ s left to answer$")
        )
        await expect(responder.locator("#offer-distance")).to_have_text(re.compile(r"^2\d\d m$"))
        await expect(responder.locator("#offer-eta")).to_have_text(re.compile(r"^\d+ min$"))
        await check_accessible(responder)
        await shoot(responder, "responder-offer-en")
        await responder.get_by_role("button", name="Accept").click()
        await expect(card).to_be_hidden()

        # Navigation hand-off to the report's place, and progress reports.
        active = responder.locator("#active")
        await expect(active).to_be_visible()
        lat, lon = HERE
        await expect(active.get_by_role("link", name="Map app")).to_have_attribute(
            "href", f"geo:{lat},{lon}"
        )
        amap = await active.get_by_role("link", name="Amap").get_attribute("href")
        assert amap
        assert f"position={lon},{lat}" in amap
        assert "coordinate=wgs84" in amap
        baidu = await active.get_by_role("link", name="Baidu Maps").get_attribute("href")
        assert baidu
        assert f"location={lat},{lon}" in baidu
        apple = await active.get_by_role("link", name="Apple Maps").get_attribute("href")
        assert apple == f"https://maps.apple.com/?daddr={lat},{lon}&dirflg=d"
        google = await active.get_by_role("link", name="Google Maps").get_attribute("href")
        assert google == f"https://www.google.com/maps/dir/?api=1&destination={lat},{lon}"
        await active.get_by_role("button", name="En route").click()
        await expect(responder.locator("#unit-status")).to_have_text("Your status: en route")

        # The citizen sees a volunteer on the way with an ETA, never who they are.
        headline = citizen.locator("#track-headline")
        await expect(headline).to_have_text(
            re.compile(r"^A volunteer is on the way, about \d+ min\.$"), timeout=15_000
        )
        await active.get_by_role("button", name="On scene").click()
        await expect(responder.locator("#unit-status")).to_have_text("Your status: on scene")
        await expect(headline).to_have_text("A volunteer is on scene.", timeout=15_000)
        await expect(responder.locator("#recent li").first).to_contain_text(
            re.compile("Dispute · on scene", re.IGNORECASE)
        )
        page_text = await citizen.locator("body").inner_text()
        assert NAME not in page_text
        assert PHONE_NUMBER not in page_text
        await check_accessible(citizen)
        await shoot(citizen, "citizen-tracking-en")
        await shoot(responder, "responder-incident-en")

        # The same pages in Chinese, by the switch.
        await citizen.get_by_role("button", name=re.compile("Switch to Chinese")).click()
        await expect(headline).to_have_text("志愿者已到场。")
        await expect(citizen.locator("#track-category")).to_have_text("报警类型：纠纷")  # noqa: RUF001
        await expect(citizen.locator("#track-connection")).to_have_text("实时更新中")
        await check_accessible(citizen)
        await shoot(citizen, "citizen-tracking-zh-CN")
        await responder.get_by_role("button", name=re.compile("Switch to Chinese")).click()
        await expect(responder.locator("#unit-status")).to_have_text("您的状态：已到场")  # noqa: RUF001
        await expect(responder.get_by_role("link", name="高德地图")).to_be_visible()
        await check_accessible(responder)
        await shoot(responder, "responder-incident-zh-CN")

        # After a reload the citizen's phone still follows the report.
        await citizen.reload()
        await expect(citizen.locator("body[data-ready]")).to_have_count(1)
        await expect(headline).to_have_text("志愿者已到场。")


async def test_a_double_tap_or_a_retry_files_one_report(stack: Stack) -> None:
    posts: list[dict[str, str]] = []
    first_answer: dict[str, Any] = {}

    async def lose_first_answer(route: Route) -> None:
        posts.append(route.request.headers)
        answer = await route.fetch()
        if len(posts) == 1:
            first_answer.update(await answer.json())
            await route.abort("connectionreset")  # filed, but the phone never hears back
        else:
            await route.fulfill(response=answer)

    async with browser() as chromium, phone(chromium, at=HERE) as (context, _):
        citizen = await open_page(context, f"{stack.url('intake')}/app/")
        await citizen.route("**/v1/reports", lose_first_answer)
        await citizen.get_by_role("button", name="Other").click()
        await expect(citizen.locator("#fix")).to_contain_text("Location from GPS")
        send = citizen.get_by_role("button", name="Send report")
        await send.dblclick()
        await expect(citizen.get_by_role("alert")).to_contain_text("No connection")
        assert len(posts) == 1  # the second tap of the double tap sent nothing
        await send.click()
        await expect(citizen.get_by_role("heading", name="Your report")).to_be_visible()
        assert len(posts) == 2
        assert posts[0]["idempotency-key"] == posts[1]["idempotency-key"]
        kept = await citizen.evaluate("() => JSON.parse(localStorage['qrd.citizen.tracking'])")
        assert kept["report_id"] == first_answer["report_id"]
        # The citizen withdraws it, so it does not linger for other tests.
        await citizen.get_by_role("button", name="Cancel my report").click()
        await citizen.get_by_role("button", name=re.compile("Tap again to confirm")).click()
        await expect(citizen.locator("#track-headline")).to_have_text("Your report was cancelled.")


@pytest.mark.parametrize("locale", ["zh-CN", "en-US"])
async def test_both_apps_open_in_the_browsers_language(stack: Stack, locale: str) -> None:
    chinese = locale == "zh-CN"
    async with browser() as chromium, phone(chromium, at=HERE, locale=locale) as (context, _):
        citizen = await open_page(context, f"{stack.url('intake')}/app/")
        await expect(citizen.locator("html")).to_have_attribute(
            "lang", "zh-CN" if chinese else "en"
        )
        await expect(citizen.get_by_role("heading", level=1)).to_have_text(
            "一键报警" if chinese else "Report trouble"
        )
        await expect(
            citizen.get_by_role("button", name="诈骗" if chinese else "Fraud")
        ).to_be_visible()
        await expect(citizen.locator("#fix")).to_contain_text("GPS")
        await check_accessible(citizen)
        if chinese:
            await shoot(citizen, "citizen-report-zh-CN")
        responder = await open_page(context, f"{stack.url('volunteer-locator')}/responder/")
        await expect(responder.get_by_role("heading", level=1)).to_have_text(
            "处置人员" if chinese else "Responder"
        )
        await expect(
            responder.get_by_label("配对码" if chinese else "Pairing code")
        ).to_be_visible()
        await check_accessible(responder)
        if chinese:
            await shoot(responder, "responder-sign-in-zh-CN")
        # A wrong code is refused in the page's language.
        await responder.get_by_label("配对码" if chinese else "Pairing code").fill("ZZZZ2222")
        await responder.get_by_role("button", name="登录" if chinese else "Sign in").click()
        await expect(responder.get_by_role("alert")).to_have_text(
            "配对码错误、已使用或已过期，请重新获取。"  # noqa: RUF001
            if chinese
            else "That code is wrong, used or expired. Ask for a new one."
        )


async def test_the_apps_are_installable(stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        for base in (f"{stack.url('intake')}/app", f"{stack.url('volunteer-locator')}/responder"):
            manifest = await client.get(f"{base}/manifest.webmanifest")
            assert manifest.status_code == 200
            assert manifest.json()["display"] == "standalone"
            worker = await client.get(f"{base}/sw.js")
            assert worker.status_code == 200
            assert "javascript" in worker.headers["content-type"]
            page = await client.get(f"{base}/")
            assert '<script type="module" src="app.js"></script>' in page.text
            assert "style=" not in page.text  # no inline styles: the CSP forbids them
            if base.endswith("/responder"):
                # The page may call dispatch and notification on their own ports, no more.
                policy = page.headers["content-security-policy"]
                assert "script-src 'self';" in policy
                connect = policy.split("connect-src ")[1].split(";")[0].split()
                assert sorted(connect) == sorted(
                    ["'self'", stack.url("dispatch"), stack.url("notification")]
                )
    async with browser() as chromium, phone(chromium, at=HERE) as (context, _):
        citizen = await open_page(context, f"{stack.url('intake')}/app/")
        controlled = await citizen.evaluate(
            "() => navigator.serviceWorker.ready.then((r) => Boolean(r.active))"
        )
        assert controlled


STRICT_CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:"


async def test_the_apps_run_under_a_strict_content_security_policy(stack: Stack) -> None:
    served: list[str] = []

    async def with_csp(route: Route) -> None:
        served.append(route.request.url)
        answer = await route.fetch()
        headers = {**answer.headers, "content-security-policy": STRICT_CSP}
        await route.fulfill(response=answer, headers=headers)

    refused: list[str] = []
    async with (
        browser() as chromium,
        phone(chromium, at=HERE, bypass_csp=False) as (context, _),
    ):
        context.on(
            "console",
            lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
        )
        await context.route(re.compile(r".*/(app|responder)/$"), with_csp)
        citizen = await open_page(context, f"{stack.url('intake')}/app/")
        await expect(citizen.locator("#fix")).to_contain_text("GPS")
        await citizen.get_by_role("button", name="Theft").click()
        responder = await open_page(context, f"{stack.url('volunteer-locator')}/responder/")
        await expect(responder.get_by_label("Pairing code")).to_be_visible()
    assert len(set(served)) == 2  # both pages came with the policy (the shell cache too)
    assert refused == []
