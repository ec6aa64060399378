"""Intake's event handlers: routing is data."""

from __future__ import annotations

from shared.events import Event
from shared.kafka import Handler

HANDLERS: dict[type[Event], Handler] = {}
