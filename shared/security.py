"""Security headers on every response of every service.

Every answer carries ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer``.
Every HTML page the project serves itself gets a strict Content-Security-Policy: scripts,
styles, fonts and fetches from the page's own origin only, no inline script or style
attribute, no ``eval``, no plugins, no ``<base>``, and no framing. A route that needs a
wider ``img-src`` (the console's map tiles) sets its own policy with
:func:`content_security_policy`, and the middleware leaves it alone.

FastAPI's ``/docs`` and ``/redoc`` pages load Swagger UI / ReDoc from a CDN with an inline
bootstrap script, so they get a policy of their own that allows exactly that and still
forbids framing. They hold no user data and the gateway does not route them: they are
reachable on the internal network only. Non-HTML answers (JSON, event streams, metrics)
get ``default-src 'none'``, so a browser that opens one directly runs nothing from it.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = "Content-Security-Policy"
DOCS_CDN = "https://cdn.jsdelivr.net"
# FastAPI's Swagger UI page shows FastAPI's favicon from its own site.
DOCS_FAVICON = "https://fastapi.tiangolo.com"
NOT_HTML_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
ALWAYS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)


def content_security_policy(*, img_sources: Iterable[str] = ()) -> str:
    """The strict policy for a page the project serves, with extra image origins if any."""
    images = " ".join(["'self'", "data:", *img_sources])
    return (
        "default-src 'none'; "
        "script-src 'self'; "
        "style-src 'self'; "
        f"img-src {images}; "
        "connect-src 'self'; "
        "font-src 'self'; "
        "manifest-src 'self'; "
        "form-action 'self'; "
        "frame-ancestors 'none'; "
        "base-uri 'none'; "
        "object-src 'none'"
    )


DOCS_POLICY = (
    "default-src 'none'; "
    f"script-src 'self' {DOCS_CDN} 'unsafe-inline'; "
    f"style-src 'self' {DOCS_CDN} 'unsafe-inline'; "
    f"img-src 'self' data: {DOCS_FAVICON} {DOCS_CDN}; "
    "connect-src 'self'; "
    f"font-src 'self' {DOCS_CDN}; "
    "worker-src blob:; "
    "frame-ancestors 'none'; "
    "base-uri 'none'; "
    "object-src 'none'"
)


def tile_sources(url_template: str) -> tuple[str, ...]:
    """The ``img-src`` origins a Leaflet tile URL template needs.

    ``https://{s}.tile.example.org/{z}/{x}/{y}.png`` needs ``https://*.tile.example.org``;
    an empty template (no tiles) or a path on the page's own origin needs nothing more.
    """
    if not url_template:
        return ()
    parts = urlsplit(url_template)
    if not parts.scheme or not parts.netloc:
        return ()
    host = parts.netloc
    if "{" in host:
        labels = host.split(".")
        labels = ["*" if "{" in label and i == 0 else label for i, label in enumerate(labels)]
        host = ".".join(labels)
    if "{" in host or "}" in host:
        # A placeholder deeper in the host cannot be a CSP wildcard: allow the scheme only.
        return (f"{parts.scheme}:",)
    return (f"{parts.scheme}://{host}",)


class SecurityHeaders:
    """ASGI middleware adding the headers above; it never buffers, so streams stay live."""

    def __init__(self, app: ASGIApp, *, docs_paths: Iterable[str] = ()) -> None:
        self.app = app
        self.docs_paths = frozenset(p for p in docs_paths if p)
        self.html_policy = content_security_policy()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in ALWAYS:
                    headers[name] = value
                if CSP not in headers:
                    headers[CSP] = self._policy(path, headers.get("content-type", ""))
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _policy(self, path: str, content_type: str) -> str:
        kind = content_type.lower()
        if "javascript" in kind:
            # A service worker runs under its own script's policy: it must reach 'self'.
            return self.html_policy
        if not kind.startswith("text/html"):
            return NOT_HTML_POLICY
        if path in self.docs_paths:
            return DOCS_POLICY
        return self.html_policy
