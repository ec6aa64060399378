"""The gateway's Caddyfile is valid, and sends each public port to every instance
of the service that owns it.

caddy comes from Debian's `caddy` package (`make system-deps`); without it these
tests fail rather than pass unchecked.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tools.devstack import DEFAULT_SERVICES

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
        (proxy,) = server["routes"][0]["handle"]
        assert proxy["handler"] == "reverse_proxy"
        # Re-resolved every few seconds, so instances added by --scale get traffic.
        assert proxy["dynamic_upstreams"]["source"] == "a"
        # Server-sent event streams must not be buffered.
        assert proxy["flush_interval"] == -1
        upstreams = proxy["dynamic_upstreams"]
        routes[listen] = (upstreams["name"], int(upstreams["port"]))
    assert routes == {f":{s.port}": (s.name, s.port) for s in DEFAULT_SERVICES}


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
