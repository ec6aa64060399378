"""The containers' healthcheck command reports a service healthy only when it answers 200."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tools import healthcheck
from tools.embedded import free_port


class _Service(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 503)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def service_port() -> Iterator[int]:
    """A stand-in service that is alive (/healthz) but not ready (/readyz)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Service)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        with contextlib.suppress(OSError):
            server.server_close()


def test_healthy_when_the_path_answers_200(
    service_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PORT", str(service_port))
    assert healthcheck.main(["/healthz"]) == 0
    assert healthcheck.main([]) == 0


def test_unhealthy_when_not_ready_or_not_listening(
    service_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PORT", str(service_port))
    assert healthcheck.main(["/readyz"]) == 1
    monkeypatch.setenv("PORT", str(free_port()))
    assert healthcheck.main(["/healthz"]) == 1
