"""The SQLite driver with one trip per statement: results, counts, errors and commits
behave as SQLAlchemy expects, and a commit with nothing to commit costs no trip."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from shared import db
from shared.sqlite_driver import OneTripConnection, OneTripDialect

METADATA = MetaData()
ITEMS = Table(
    "items",
    METADATA,
    Column("id", Integer, primary_key=True),
    Column("name", String(20), nullable=False, unique=True),
)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = db.create_engine(f"sqlite+aiosqlite:///{tmp_path}/items.db")
    await db.create_schema(engine, METADATA, schema=None)
    yield engine
    await engine.dispose()


async def test_sqlite_urls_use_the_one_trip_dialect(engine: AsyncEngine) -> None:
    assert isinstance(engine.dialect, OneTripDialect)
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        assert isinstance(raw.dbapi_connection, OneTripConnection)


async def test_rows_counts_and_ids_come_back_and_commits_are_seen_elsewhere(
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as conn:
        first = await conn.execute(insert(ITEMS).values(name="a"))
        await conn.execute(insert(ITEMS), [{"name": "b"}, {"name": "c"}])
        changed = await conn.execute(
            update(ITEMS).where(ITEMS.c.name != "a").values(name=ITEMS.c.name + "!")
        )
        assert first.inserted_primary_key == (1,)
        assert changed.rowcount == 2
    async with engine.connect() as other:
        rows = (await other.execute(select(ITEMS.c.name).order_by(ITEMS.c.id))).all()
    assert [r.name for r in rows] == ["a", "b!", "c!"]


async def test_a_failed_statement_raises_and_its_transaction_rolls_back(
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as conn:
        await conn.execute(insert(ITEMS).values(name="kept"))
    async with engine.connect() as conn:
        await conn.execute(insert(ITEMS).values(name="dropped"))
        with pytest.raises(IntegrityError):
            await conn.execute(insert(ITEMS).values(name="kept"))
        await conn.rollback()
    async with engine.connect() as conn:
        names = (await conn.execute(select(ITEMS.c.name))).scalars().all()
    assert names == ["kept"]


async def test_only_a_statement_that_writes_leaves_a_transaction_to_commit(
    engine: AsyncEngine,
) -> None:
    async with engine.connect() as conn:
        raw = (await conn.get_raw_connection()).dbapi_connection
        assert isinstance(raw, OneTripConnection)
        await conn.execute(select(ITEMS.c.id))
        assert raw.in_transaction is False  # a read opens none: commit and rollback skip
        await conn.execute(insert(ITEMS).values(name="w"))
        assert raw.in_transaction is True
        await conn.commit()
        assert raw.in_transaction is False
