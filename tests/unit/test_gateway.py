"""The gateway's Caddyfile is valid, sends each public port to every instance of the
service that owns it, and keeps the operations paths (/metrics, /readyz, /docs,
/redoc, /openapi.json) off the public side.

caddy comes from Debian's `caddy` package (`make system-deps`); without it these
tests fail rather than pass unchecked.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tools.devstack import DEFAULT_SERVICES
from tools.embedded import free_port

GATEWAY = Path(__file__).resolve().parents[2] / "deploy" / "gateway"


APPS_PORT = ":8080"


def caddy(*args: str) -> subprocess.CompletedProcess[str]:
    """Run caddy on the Caddyfile, failing the test loudly when it is not installed."""
    binary = shutil.which("caddy")
    if binary is None:
        pytest.fail("caddy is not installed: run `make system-deps` (Debian package caddy)")
    return subprocess.run(
        [binary, *args, "--config", "Caddyfile", "--adapter", "caddyfile"],
        cwd=GATEWAY,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_caddy_accepts_the_gateway_config() -> None:
    result = caddy("validate")
    assert result.returncode == 0, result.stderr
    assert "Valid configuration" in result.stdout + result.stderr


def test_each_port_reaches_every_instance_of_its_service() -> None:
    result = caddy("adapt")
    assert result.returncode == 0, result.stderr
    servers: dict[str, Any] = json.loads(result.stdout)["apps"]["http"]["servers"]
    routes = {}
    for server in servers.values():
        (listen,) = server["listen"]
        if listen == APPS_PORT:
            continue  # the field apps' one-origin site, checked below
        (proxy,) = proxies(server)
        # Re-resolved every few seconds, so instances added by --scale get traffic.
        assert proxy["dynamic_upstreams"]["source"] == "a"
        # Server-sent event streams must not be buffered.
        assert proxy["flush_interval"] == -1
        upstreams = proxy["dynamic_upstreams"]
        routes[listen] = (upstreams["name"], int(upstreams["port"]))
    assert routes == {f":{s.port}": (s.name, s.port) for s in DEFAULT_SERVICES}


INTERNAL_PATHS = (
    "/metrics",
    "/readyz",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/openapi.json",
    "/METRICS",
    "//metrics",
    "/Docs/",
    "/openapi.json?x=1",
)
PUBLIC_PATHS = ("/healthz", "/v1/reports", "/v1/incidents?status=open", "/console")


def proxies(node: Any) -> list[dict[str, Any]]:
    """Every reverse_proxy handler in an adapted config, however deep in subroutes."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if node.get("handler") == "reverse_proxy":
            found.append(node)
        for value in node.values():
            found.extend(proxies(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(proxies(item))
    return found


class Upstream(ThreadingHTTPServer):
    """Stands in for a service: answers 200 and remembers every path it was asked for."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        super().__init__(("127.0.0.1", 0), _Recorder)


class _Recorder(BaseHTTPRequestHandler):
    server: Upstream

    def do_GET(self) -> None:
        self.server.seen.append(self.path)
        body = b'{"status":"ok"}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[dict[str, int], Upstream]]:
    """The real Caddyfile run by caddy on free ports, every service replaced by one upstream."""
    adapted = caddy("adapt")
    assert adapted.returncode == 0, adapted.stderr
    config: dict[str, Any] = json.loads(adapted.stdout)
    upstream = Upstream()
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    ports: dict[str, int] = {}
    for server in config["apps"]["http"]["servers"].values():
        (listen,) = server["listen"]
        ports[listen] = free_port()
        server["listen"] = [f"127.0.0.1:{ports[listen]}"]
        for proxy in proxies(server):
            del proxy["dynamic_upstreams"]
            proxy["upstreams"] = [{"dial": f"127.0.0.1:{upstream.server_address[1]}"}]
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps(config))
    binary = shutil.which("caddy")
    assert binary is not None
    process = subprocess.Popen(
        [binary, "run", "--config", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        for port in ports.values():
            while True:
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", port)) == 0:
                        break
                assert process.poll() is None, "caddy exited"
                assert time.monotonic() < deadline, "caddy did not start listening"
                time.sleep(0.05)
        yield ports, upstream
    finally:
        process.terminate()
        process.wait(timeout=10)
        upstream.shutdown()
        upstream.server_close()


def test_the_gateway_serves_health_and_the_api_but_not_the_operations_paths(
    gateway: tuple[dict[str, int], Upstream],
) -> None:
    ports, upstream = gateway
    assert set(ports) == {f":{s.port}" for s in DEFAULT_SERVICES} | {APPS_PORT}
    with httpx.Client(timeout=5) as client:
        for listen, port in ports.items():
            base = f"http://127.0.0.1:{port}"
            for path in PUBLIC_PATHS if listen != APPS_PORT else ():
                answer = client.get(base + path)
                assert answer.status_code == 200, (port, path)
            for path in INTERNAL_PATHS:
                answer = client.get(base + path)
                assert answer.status_code == 404, (port, path)
                assert answer.json()["error"]["code"] == "not_found", (port, path)
    forwarded = {p.split("?")[0].lower().lstrip("/").split("/")[0] for p in upstream.seen}
    assert forwarded == {"healthz", "v1", "console"}


def test_the_field_apps_site_reaches_every_service_on_one_origin() -> None:
    result = caddy("adapt")
    assert result.returncode == 0, result.stderr
    servers: dict[str, Any] = json.loads(result.stdout)["apps"]["http"]["servers"]
    (apps,) = [s for s in servers.values() if s["listen"] == [APPS_PORT]]
    text = json.dumps(apps)
    for service in DEFAULT_SERVICES:
        assert f'"name": "{service.name}"' in text
    for path in ("/app/*", "/responder/*", "/v1/responders/*/stream", "/v1/offers/*"):
        assert f'"{path}"' in text
