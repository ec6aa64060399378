"""The ping fast lane's envelopes read back exactly as pydantic-built ones would."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import cast

from prometheus_client import CollectorRegistry

from services.volunteer_locator.context import Locator
from services.volunteer_locator.handlers import index_location_bytes
from services.volunteer_locator.index import PingRow
from services.volunteer_locator.metrics import LocatorMetrics
from services.volunteer_locator.models import PingIn
from services.volunteer_locator.wire import location_envelopes
from shared.clock import FakeClock
from shared.events import DutyChanged, Envelope, LocationReported

NOW = datetime(2026, 11, 23, 10, 0, 0, 123456, tzinfo=UTC)


def test_fast_envelopes_parse_back_into_the_same_event() -> None:
    rid = uuid.uuid4()
    pings = [
        (rid, PingIn(lat=22.574322140695706, lon=113.97482745335, accuracy_m=4.5)),
        (rid, PingIn(lat=-1.5, lon=0.25, recorded_at=NOW - timedelta(seconds=3))),
        # Naive times are UTC; a device clock running ahead is cut to now.
        (rid, PingIn(lat=0, lon=0, recorded_at=datetime(2030, 1, 1))),
    ]

    messages = location_envelopes(pings, now=NOW)

    envelopes = [Envelope.from_bytes(value) for _, value in messages]
    events = [e.event() for e in envelopes]
    assert [key for key, _ in messages] == [str(rid).encode()] * 3
    assert events == [
        LocationReported(
            responder_id=rid,
            lat=22.574322140695706,
            lon=113.97482745335,
            accuracy_m=4.5,
            recorded_at=NOW,
        ),
        LocationReported(
            responder_id=rid, lat=-1.5, lon=0.25, recorded_at=NOW - timedelta(3 / 86400)
        ),
        LocationReported(responder_id=rid, lat=0, lon=0, recorded_at=NOW),
    ]
    assert all(e.type == "LocationReported" and e.version == 1 for e in envelopes)
    assert all(e.occurred_at == NOW and e.correlation_id == str(rid) for e in envelopes)
    assert len({e.event_id for e in envelopes}) == 3
    assert all(e.event_id.version == 4 for e in envelopes)


class _RecordingIndex:
    """The geo index's ingest, remembering what it was given."""

    def __init__(self, unknown: set[str] | None = None) -> None:
        self.rows: list[PingRow] = []
        self.unknown = unknown or set()

    async def ingest(self, rows: Sequence[PingRow], *, now: datetime) -> list[int]:
        self.rows.extend(rows)
        return [-1 if r.responder_id in self.unknown else 1 for r in rows]


async def test_the_raw_lane_indexes_the_fast_envelopes_and_names_the_bad_records() -> None:
    rid, stranger = uuid.uuid4(), uuid.uuid4()
    messages = location_envelopes(
        [
            (rid, PingIn(lat=22.5, lon=114.0, recorded_at=NOW - timedelta(seconds=2))),
            (stranger, PingIn(lat=22.6, lon=114.1, recorded_at=NOW - timedelta(seconds=1))),
        ],
        now=NOW,
    )
    index = _RecordingIndex(unknown={str(stranger)})
    kept: list[PingRow] = []
    lost: list[bool] = []

    async def keep_positions(rows: Sequence[PingRow]) -> int:
        kept.extend(rows)
        return len(rows)

    locator = cast(
        Locator,
        SimpleNamespace(
            index=index,
            clock=FakeClock(NOW),
            metrics=LocatorMetrics(CollectorRegistry()),
            keep_positions=keep_positions,
            redis_lost=lambda: lost.append(True),
        ),
    )
    other = Envelope.wrap(DutyChanged(responder_id=rid, on_duty=True, kind="volunteer")).to_bytes()

    bad = await index_location_bytes(
        [b"not json", messages[0][1], other, b'{"type": "LocationReported"}', messages[1][1]],
        locator=locator,
    )

    assert bad == [0, 2, 3]
    mine = PingRow(
        responder_id=str(rid),
        lat=22.5,
        lon=114.0,
        recorded_at=(NOW - timedelta(seconds=2)).timestamp(),
    )
    assert index.rows[0] == mine
    assert [r.responder_id for r in index.rows] == [str(rid), str(stranger)]
    # Indexed pings are kept for rebuilding; an unknown responder means Redis may be lost.
    assert kept == [mine]
    assert lost == [True]
