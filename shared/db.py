"""The async database layer: SQLite by default, PostgreSQL by URL.

On PostgreSQL each service keeps its tables in a schema of its own, so four
services can share one database and still never read each other's tables. SQLite goes
through :mod:`shared.sqlite_driver`: one trip to aiosqlite's thread per statement.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Column, DateTime, Dialect, MetaData, Table, TypeDecorator, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from shared import sqlite_driver
from shared.clock import utc

sqlite_driver.install()

SessionFactory = async_sessionmaker[AsyncSession]


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else utc(value)


def utc_column(*, nullable: bool = False, index: bool = False) -> Column[datetime]:
    """A ``UtcDateTime`` column for a SQLModel field: ``Field(sa_column=utc_column())``."""
    return Column(UtcDateTime(), nullable=nullable, index=index)


def is_sqlite(url: str) -> bool:
    """Whether ``url`` points at SQLite."""
    return make_url(url).get_backend_name() == "sqlite"


def upsert_insert(table: Table, *, sqlite_db: bool) -> sqlite.Insert | postgresql.Insert:
    """An INSERT into ``table`` that can say ``ON CONFLICT``, in the database's dialect
    (SQLite and PostgreSQL spell upserts alike, but each needs its own construct)."""
    return sqlite.insert(table) if sqlite_db else postgresql.insert(table)


def normalise_url(url: str) -> str:
    """Pick the async driver for a plain ``postgresql://`` or ``sqlite://`` URL."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    return parsed.render_as_string(hide_password=False)


def create_engine(url: str, *, schema: str | None = None) -> AsyncEngine:
    """Build the engine. For PostgreSQL, ``schema`` becomes the search path."""
    url = normalise_url(url)
    kwargs: dict[str, Any] = {}
    if is_sqlite(url):
        # No pre-ping: a local file has no connection to lose, and the ping would cost a
        # thread round trip on every checkout (several per dispatched report).
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30}
        engine = create_async_engine(url, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            # WAL lets the outbox relay read while a request writes.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    if schema:
        kwargs["connect_args"] = {"server_settings": {"search_path": schema}}
    kwargs.update(pool_pre_ping=True, pool_size=10, max_overflow=10)
    return create_async_engine(url, **kwargs)


def session_factory(engine: AsyncEngine) -> SessionFactory:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


async def create_schema(engine: AsyncEngine, metadata: MetaData, *, schema: str | None) -> None:
    """Create the service's schema and tables if missing (the embedded default and tests).

    Production runs the Alembic migrations instead.
    """
    async with engine.begin() as conn:
        if schema and not is_sqlite(str(engine.url)):
            await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        await conn.run_sync(metadata.create_all)


async def ping(engine: AsyncEngine) -> bool:
    """Whether the database answers."""
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        return False
    return True


@asynccontextmanager
async def transaction(factory: SessionFactory) -> AsyncIterator[AsyncSession]:
    """A session whose work commits together at the end of the block, or not at all."""
    async with factory() as session, session.begin():
        yield session
