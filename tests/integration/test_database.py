"""The database layer (shared/db.py) and the transactional outbox (shared/outbox.py)
on SQLite, the embedded default, and on a real PostgreSQL, the production database.

The tables here are test-only: a ``notes`` table and the outbox, in a schema per
pretend service, exactly as a real service lays out its own.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import SessionFactory, UtcDateTime, create_engine, create_schema, session_factory
from shared.db import transaction as db_transaction
from shared.events import REPORTS, Envelope, GeoPoint, ReportReceived
from shared.kafka import KafkaPublisher
from shared.outbox import OutboxRelay, define_outbox_table, stage
from tests.databases import create_database, drop_database, fetch
from tests.harness import Infra, TopicReader, eventually
from tools.embedded import Component


@dataclass
class ServiceDatabase:
    """One pretend service's engine, sessions and tables."""

    schema: str
    engine: AsyncEngine
    sessions: SessionFactory
    outbox: Table
    notes: Table


@dataclass
class Backend:
    """Opens service databases on one backend and closes them afterwards."""

    name: str
    url_for: Callable[[str], str]
    engines: list[AsyncEngine] = field(default_factory=list)

    async def open(self, schema: str) -> ServiceDatabase:
        """A service's database as its runtime opens it: engine, then create_schema."""
        metadata = MetaData()
        outbox = define_outbox_table(metadata)
        notes = Table(
            "notes",
            metadata,
            Column("id", Integer, primary_key=True),
            Column("body", String(200), nullable=False),
            Column("written_at", UtcDateTime(), nullable=False),
        )
        engine = create_engine(self.url_for(schema), schema=schema)
        self.engines.append(engine)
        await create_schema(engine, metadata, schema=schema)
        return ServiceDatabase(schema, engine, session_factory(engine), outbox, notes)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """SQLite (a file per service) or a fresh PostgreSQL database (a schema per service)."""
    if request.param == "sqlite":
        chosen = Backend("sqlite", lambda schema: f"sqlite+aiosqlite:///{tmp_path}/{schema}.db")
        database_url = None
    else:
        server: Component = request.getfixturevalue("postgres")
        database_url = await create_database(server.url)
        chosen = Backend("postgres", lambda _schema: database_url)
    yield chosen
    for engine in chosen.engines:
        await engine.dispose()
    if database_url is not None:
        await drop_database(database_url)


@pytest.fixture
async def postgres_backend(postgres: Component) -> AsyncIterator[Backend]:
    """A fresh PostgreSQL database, for behaviour only PostgreSQL has."""
    database_url = await create_database(postgres.url)
    chosen = Backend("postgres", lambda _schema: database_url)
    yield chosen
    for engine in chosen.engines:
        await engine.dispose()
    await drop_database(database_url)


def report(report_id: uuid.UUID, description: str) -> ReportReceived:
    return ReportReceived(
        report_id=report_id,
        category="theft",
        location=GeoPoint(lat=22.54, lon=114.05),
        description=description,
        received_at=datetime.now(UTC),
    )


async def count(db: ServiceDatabase, table: Table) -> int:
    async with db.engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table)) or 0)


async def connected_publisher(infra: Infra) -> KafkaPublisher:
    publisher = KafkaPublisher(infra.kafka, client_id=f"test-{uuid.uuid4().hex[:6]}")
    await publisher.start()
    await publisher.wait_connected(timeout=15)
    return publisher


def make_relay(
    db: ServiceDatabase,
    publisher: KafkaPublisher | RecordingPublisher,
    *,
    registry: CollectorRegistry | None = None,
    poll_interval_s: float = 1.0,
    batch_size: int = 200,
) -> OutboxRelay:
    return OutboxRelay(
        engine=db.engine,
        table=db.outbox,
        publisher=publisher,
        service=db.schema,
        registry=registry or CollectorRegistry(),
        poll_interval_s=poll_interval_s,
        batch_size=batch_size,
    )


async def test_each_service_keeps_its_tables_to_itself(backend: Backend) -> None:
    intake = await backend.open("intake_like")
    dispatch = await backend.open("dispatch_like")

    async with db_transaction(intake.sessions) as session:
        await stage(session, intake.outbox, report(uuid.uuid4(), "only in intake"))

    # Both have a table called `outbox`; the event is in one of them only.
    assert await count(intake, intake.outbox) == 1
    assert await count(dispatch, dispatch.outbox) == 0
    if backend.name == "postgres":
        rows = await fetch(
            backend.url_for("any"),
            "SELECT table_schema FROM information_schema.tables WHERE table_name = 'outbox'",
        )
        assert sorted(schema for (schema,) in rows) == ["dispatch_like", "intake_like"]


async def test_timestamps_come_back_as_aware_utc(backend: Backend) -> None:
    db = await backend.open("notes_service")
    beijing = timezone(timedelta(hours=8))
    async with db_transaction(db.sessions) as session:
        await session.exec(
            insert(db.notes).values(
                [
                    {"body": "aware", "written_at": datetime(2026, 3, 1, 9, 30, tzinfo=beijing)},
                    {"body": "naive means UTC", "written_at": datetime(2026, 3, 1, 1, 45)},
                ]
            )
        )
        await stage(session, db.outbox, report(uuid.uuid4(), "stamped by the database"))

    async with db.engine.connect() as conn:
        rows = (await conn.execute(select(db.notes.c.body, db.notes.c.written_at))).all()
        late = await conn.scalar(
            select(db.notes.c.body).where(
                db.notes.c.written_at > datetime(2026, 3, 1, 9, 40, tzinfo=beijing)
            )
        )
        created_at = await conn.scalar(select(db.outbox.c.created_at))

    written = dict((body, at) for body, at in rows)  # noqa: C402
    assert written["aware"] == datetime(2026, 3, 1, 1, 30, tzinfo=UTC)
    assert written["naive means UTC"] == datetime(2026, 3, 1, 1, 45, tzinfo=UTC)
    assert all(at.utcoffset() == timedelta(0) for at in written.values())
    # Comparisons in SQL see the same instants: 09:40 in Beijing is 01:40 UTC.
    assert late == "naive means UTC"
    # The database's own clock (the outbox's server default) is read as UTC too.
    assert created_at is not None
    assert created_at.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - created_at) < timedelta(minutes=1)


async def test_relay_publishes_staged_events_in_order_and_marks_them(
    backend: Backend, infra: Infra
) -> None:
    db = await backend.open("relaying_service")
    report_id = uuid.uuid4()
    for step in range(10):
        async with db_transaction(db.sessions) as session:
            await stage(session, db.outbox, report(report_id, f"step {step}"))
    publisher = await connected_publisher(infra)
    registry = CollectorRegistry()
    try:
        relay = make_relay(db, publisher, registry=registry)
        assert await relay.relay_once() == 10
        assert await relay.relay_once() == 0  # marked published: never sent twice
    finally:
        await publisher.stop()

    on_topic = await TopicReader(infra.kafka, REPORTS).read_all()
    assert [e.payload["description"] for e in on_topic] == [f"step {i}" for i in range(10)]
    async with db.engine.connect() as conn:
        unpublished = await conn.scalar(
            select(func.count()).select_from(db.outbox).where(db.outbox.c.published_at.is_(None))
        )
    assert unpublished == 0
    assert registry.get_sample_value("relaying_service_outbox_published_total") == 10
    assert registry.get_sample_value("relaying_service_outbox_pending_events") == 0


async def test_kicked_relay_publishes_at_once(backend: Backend, infra: Infra) -> None:
    db = await backend.open("kicking_service")
    publisher = await connected_publisher(infra)
    # The safety-net timer is far away: only the kick can explain a quick publish.
    relay = make_relay(db, publisher, poll_interval_s=60)
    await relay.start()
    try:
        await asyncio.sleep(0.2)
        report_id = uuid.uuid4()
        async with db_transaction(db.sessions) as session:
            await stage(session, db.outbox, report(report_id, "kicked"))
        relay.kick()
        reader = TopicReader(infra.kafka, REPORTS)
        found = await reader.wait_for(lambda e: e.payload["report_id"] == str(report_id), timeout=5)
        assert len(found) == 1
    finally:
        await relay.stop()
        await publisher.stop()


async def test_rolled_back_transaction_publishes_nothing(backend: Backend, infra: Infra) -> None:
    db = await backend.open("rolling_back_service")

    async def stage_then_fail() -> None:
        async with db_transaction(db.sessions) as session:
            await stage(session, db.outbox, report(uuid.uuid4(), "never happened"))
            raise RuntimeError("refused")

    with pytest.raises(RuntimeError, match="refused"):
        await stage_then_fail()

    publisher = await connected_publisher(infra)
    try:
        assert await make_relay(db, publisher).relay_once() == 0
    finally:
        await publisher.stop()
    assert await count(db, db.outbox) == 0
    assert await TopicReader(infra.kafka, REPORTS).read_all() == []


@dataclass
class RecordingPublisher:
    """The real publisher, slowed down while it holds its rows, noting what it sent."""

    inner: KafkaPublisher
    delay_s: float = 0.05
    sent: list[uuid.UUID] = field(default_factory=list)

    async def publish(self, envelope: Envelope, *, topic: str, key: str) -> None:
        await self.publish_many([(envelope, topic, key)])

    async def publish_many(self, items: Sequence[tuple[Envelope, str, str]]) -> None:
        await asyncio.sleep(self.delay_s)
        await self.inner.publish_many(items)
        self.sent.extend(envelope.event_id for envelope, _, _ in items)


@pytest.mark.postgres
async def test_two_relays_never_publish_the_same_row_twice(
    postgres_backend: Backend, infra: Infra
) -> None:
    # Two instances of one service: the same database and schema, engines of their own.
    first = await postgres_backend.open("scaled_service")
    second = await postgres_backend.open("scaled_service")
    async with db_transaction(first.sessions) as session:
        for i in range(120):
            await stage(session, first.outbox, report(uuid.uuid4(), f"report {i}"))

    publisher = await connected_publisher(infra)
    try:
        one, two = RecordingPublisher(publisher), RecordingPublisher(publisher)
        relay_one = make_relay(first, one, batch_size=10)
        relay_two = make_relay(second, two, batch_size=10)

        async def drain(relay: OutboxRelay) -> int:
            total = 0
            while sent := await relay.relay_once():
                total += sent
            return total

        totals = list(await asyncio.gather(drain(relay_one), drain(relay_two)))
        # Leftovers one relay skipped while the other held them are picked up next round.
        totals.append(await drain(relay_one))
    finally:
        await publisher.stop()

    assert sum(totals) == 120
    assert not set(one.sent) & set(two.sent)
    on_topic = await TopicReader(infra.kafka, REPORTS).read_all()
    assert len(on_topic) == 120
    assert len({e.event_id for e in on_topic}) == 120


async def test_relay_waits_for_a_committed_transaction(backend: Backend, infra: Infra) -> None:
    """An event staged in a transaction still open is not published until it commits."""
    db = await backend.open("open_transaction_service")
    publisher = await connected_publisher(infra)
    relay = make_relay(db, publisher)
    report_id = uuid.uuid4()
    try:
        async with db_transaction(db.sessions) as session:
            await stage(session, db.outbox, report(report_id, "pending"))
            if backend.name == "postgres":
                # SQLite allows one writer at a time, so only PostgreSQL can relay meanwhile.
                assert await relay.relay_once() == 0
        assert await eventually(relay.relay_once, timeout=5) == 1
    finally:
        await publisher.stop()
    on_topic = await TopicReader(infra.kafka, REPORTS).read_all()
    assert [e.payload["report_id"] for e in on_topic] == [str(report_id)]
