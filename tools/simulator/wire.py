"""The wire as the apps see it: server-sent events, ISO times, citizens' source addresses."""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import AsyncIterator
from datetime import datetime
from urllib.parse import urlsplit

import httpx


async def sse_messages(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event, data) pairs of a server-sent event stream."""
    event, data = "message", list[str]()
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", list[str]()
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)


def parse_time(value: str) -> float:
    """An ISO 8601 time as a Unix timestamp."""
    return datetime.fromisoformat(value).timestamp()


def citizen_addresses(intake_url: str, count: int) -> list[str | None]:
    """Source addresses for citizens' posts: many loopback ones on this machine, so the
    per-address rate limit sees many phones, as it would in town; else the default."""
    host = urlsplit(intake_url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback or sys.platform != "linux":
        return [None]
    return [f"127.0.{1 + i // 250}.{1 + i % 250}" for i in range(count)]
