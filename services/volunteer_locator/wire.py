"""LocationReported envelopes as bytes, built without pydantic: the ping fast lane.

Pings are the one high-rate stream (docs/contract.md, Performance targets). Building and
serialising a pydantic ``Envelope`` and ``LocationReported`` per ping cost more CPU than
everything else on the way in, and the pings are already validated by the request model.
The bytes are the same document ``Envelope.wrap(event).to_bytes()`` gives (the unit tests
parse them back with ``Envelope.from_bytes``), so consumers see no difference.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from datetime import datetime

from services.volunteer_locator.models import PingIn
from shared.clock import utc
from shared.events import LocationReported

_TYPE = LocationReported.__name__
_VERSION = LocationReported.version
_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def location_envelopes(
    pings: Sequence[tuple[uuid.UUID, PingIn]], *, now: datetime
) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` Kafka messages, one LocationReported envelope per ping."""
    now = utc(now)
    occurred_at = now.isoformat()
    random_ids = os.urandom(16 * len(pings))
    out: list[tuple[bytes, bytes]] = []
    for i, (responder_id, ping) in enumerate(pings):
        rid = str(responder_id)
        # A device clock running ahead would keep a responder fresh forever; never trust the future.
        recorded_at = min(utc(ping.recorded_at), now) if ping.recorded_at else now
        document = {
            "event_id": str(uuid.UUID(bytes=random_ids[16 * i : 16 * i + 16], version=4)),
            "type": _TYPE,
            "version": _VERSION,
            "occurred_at": occurred_at,
            "correlation_id": rid,
            "payload": {
                "responder_id": rid,
                "lat": ping.lat,
                "lon": ping.lon,
                "accuracy_m": ping.accuracy_m,
                "recorded_at": recorded_at.isoformat(),
            },
        }
        out.append((rid.encode(), _encode(document).encode()))
    return out
