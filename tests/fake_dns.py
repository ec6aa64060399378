"""A DNS resolver that answers from a table, for tests of the webhook address rules."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping, Sequence

from services.notification.egress import IPAddress


class FakeResolver:
    """Answers each name with its listed addresses; an unknown name does not resolve.

    ``answers`` may be changed between calls (a DNS rebinding)."""

    def __init__(self, answers: Mapping[str, Sequence[str]]) -> None:
        self.answers = dict(answers)
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """The listed addresses of ``host``."""
        self.asked.append(host)
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [ipaddress.ip_address(a) for a in self.answers[host]]
