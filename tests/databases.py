"""Fresh, empty databases on the session's throwaway PostgreSQL server, so that
tests sharing the server never see each other's schemas or rows."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine


async def _autocommit(url: str, statement: str) -> None:
    # CREATE and DROP DATABASE refuse to run inside a transaction.
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


async def create_database(server_url: str) -> str:
    """Create an empty database on ``server_url``'s server and return its URL."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    await _autocommit(server_url, f'CREATE DATABASE "{name}"')
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


async def drop_database(database_url: str) -> None:
    """Drop a database made by :func:`create_database`, closing its leftover connections."""
    url = make_url(database_url)
    server = url.set(database="postgres").render_as_string(hide_password=False)
    await _autocommit(server, f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')


async def fetch(database_url: str, query: str, **params: Any) -> list[tuple[Any, ...]]:
    """Run one query on a fresh connection and return its rows as tuples."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            result = await connection.execute(text(query), params)
            return [tuple(row) for row in result.all()]
    finally:
        await engine.dispose()
