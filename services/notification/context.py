"""Notification's context: everything its routes and handlers need, wired once in
``create_app`` (or a test)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol

from redis.asyncio import Redis

from services.notification.egress import Resolver
from services.notification.live import LiveHub
from services.notification.models import Delivery
from services.notification.service import Routing
from services.notification.settings import NotificationSettings
from shared.clock import Clock
from shared.db import SessionFactory
from shared.ratelimit import RateLimiter

if TYPE_CHECKING:
    # The push routes depend on this context, so its setup is named for type checks only.
    from services.notification.push import PushSetup


class Submitter(Protocol):
    """Takes pending deliveries for sending (the workers, or a fake in tests)."""

    def submit(self, deliveries: Sequence[Delivery], *, leased: bool = False) -> None:
        """Queue deliveries without waiting for them to be sent; ``leased`` ones were
        written already leased to this instance, so they need no claim."""
        ...

    def lease_for(self, channel: str) -> timedelta:
        """How long an instance owns a delivery on ``channel`` once it holds it."""
        ...


@dataclass(frozen=True)
class Notifier:
    """Notification's settings, database, Redis, delivery workers, routing, live hub, rate
    limiter, DNS resolver, clock and Web Push setup (None when push is off)."""

    settings: NotificationSettings
    sessions: SessionFactory
    redis: Redis
    workers: Submitter
    routing: Routing
    hub: LiveHub
    limiter: RateLimiter
    resolver: Resolver
    clock: Clock
    push: PushSetup | None = None

    @property
    def dispatch_url(self) -> str:
        """Dispatch's public address, for the links in offers."""
        return self.settings.dispatch_public_url
