"""Security headers from the shared HTTP shell: every answer says nosniff and no-referrer,
HTML pages get the strict Content-Security-Policy, /docs its own, and a page may widen
``img-src`` for its map tiles without loosening anything else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from prometheus_client import CollectorRegistry

from shared.http import build_app
from shared.security import CSP, content_security_policy, tile_sources
from shared.settings import ServiceSettings


def _app() -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield

    settings = ServiceSettings(service_name="unit", auth_secret="x" * 32, max_body_bytes=1024)
    app = build_app(
        settings=settings,
        title="t",
        description="t",
        lifespan=lifespan,
        registry=CollectorRegistry(),
    )

    @app.get("/page", response_class=HTMLResponse)
    async def page() -> str:
        return "<!doctype html><title>page</title>"

    @app.get("/map", response_class=HTMLResponse)
    async def map_page() -> HTMLResponse:
        policy = content_security_policy(img_sources=tile_sources("https://{s}.t.example/{z}.png"))
        return HTMLResponse("<!doctype html>", headers={CSP: policy})

    @app.post("/echo")
    async def echo(body: dict[str, str]) -> dict[str, str]:
        return body

    return app


def _client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=_app()), base_url="http://t")


def _directives(policy: str) -> dict[str, str]:
    return {d.split(" ", 1)[0]: d.split(" ", 1)[1] for d in policy.split("; ")}


async def test_an_html_page_gets_the_strict_policy() -> None:
    async with _client() as client:
        answer = await client.get("/page")
    policy = _directives(answer.headers["content-security-policy"])
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"
    assert policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert policy["object-src"] == "'none'"
    assert policy["base-uri"] == "'none'"
    assert "unsafe" not in answer.headers["content-security-policy"]
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "no-referrer"


async def test_a_page_may_widen_images_for_its_tiles_only() -> None:
    async with _client() as client:
        answer = await client.get("/map")
    policy = _directives(answer.headers["content-security-policy"])
    assert policy["img-src"] == "'self' data: https://*.t.example"
    assert policy["script-src"] == "'self'"
    assert answer.headers["x-content-type-options"] == "nosniff"


async def test_json_errors_and_refusals_carry_the_headers_too() -> None:
    async with _client() as client:
        ok = await client.post("/echo", json={"a": "b"})
        too_large = await client.post("/echo", json={"a": "b" * 2000})
        missing = await client.get("/nowhere")
    for answer in (ok, too_large, missing):
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["content-security-policy"].startswith("default-src 'none'")
    assert too_large.status_code == 413


async def test_the_api_docs_still_load_their_cdn_but_cannot_be_framed() -> None:
    async with _client() as client:
        docs = await client.get("/docs")
        redoc = await client.get("/redoc")
    for answer in (docs, redoc):
        assert answer.status_code == 200
        policy = _directives(answer.headers["content-security-policy"])
        assert "https://cdn.jsdelivr.net" in policy["script-src"]
        assert policy["frame-ancestors"] == "'none'"
        assert policy["object-src"] == "'none'"


@pytest.mark.parametrize(
    ("template", "sources"),
    [
        ("", ()),
        ("/tiles/{z}/{x}/{y}.png", ()),
        ("https://tile.openstreetmap.org/{z}/{x}/{y}.png", ("https://tile.openstreetmap.org",)),
        ("https://{s}.tile.example.org/{z}/{x}/{y}.png", ("https://*.tile.example.org",)),
        ("http://127.0.0.1:9/tiles/{z}/{x}/{y}.png", ("http://127.0.0.1:9",)),
        ("https://tiles.{s}.example.org/{z}/{x}/{y}.png", ("https:",)),
    ],
)
def test_tile_sources_follow_the_configured_template(
    template: str, sources: tuple[str, ...]
) -> None:
    assert tile_sources(template) == sources
