"""SQLite through aiosqlite with one trip to its thread per statement.

SQLAlchemy's aiosqlite adapter makes up to four trips to aiosqlite's worker thread for
each statement (open a cursor, execute, fetch, close), and each trip wakes that thread
and then the event loop. Profiling dispatch under load put a third of its time in those
hand-overs. The cursor here runs all four as one function in the worker thread, and
the connection skips the trip for a commit or rollback when no transaction is open
(the pool rolls back every connection it takes back, even after a commit).

It replaces the ``sqlite+aiosqlite`` dialect when :mod:`shared.db` is imported, so every
engine on a SQLite URL uses it. It calls aiosqlite's ``Connection._execute`` (run a
function in the connection's thread), as SQLAlchemy's own adapter reaches into
aiosqlite's internals; both packages are pinned in ``requirements/main.txt``.
"""

from __future__ import annotations

import collections
import sqlite3
from typing import Any

from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
    SQLiteDialect_aiosqlite,
)


class _Outcome:
    """What a finished statement left behind: the cursor attributes SQLAlchemy reads."""

    __slots__ = ("arraysize", "description", "lastrowid", "rowcount")

    def __init__(self) -> None:
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.arraysize = 1

    def close(self) -> None:
        """Nothing stays open between statements."""


def _run(
    connection: sqlite3.Connection, operation: str, parameters: Any, many: bool
) -> tuple[Any, int, int | None, list[Any] | None, bool]:
    """Execute, fetch and close in aiosqlite's thread; also whether a transaction is open."""
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        rows = cursor.fetchall() if cursor.description else None
        return (
            cursor.description,
            cursor.rowcount,
            cursor.lastrowid,
            rows,
            connection.in_transaction,
        )
    finally:
        cursor.close()


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A client-side cursor whose statements each take one trip to the worker thread."""

    __slots__ = ()
    _awaitable_cursor_close = False

    def _make_new_cursor(self, connection: Any) -> Any:
        return _Outcome()

    def _aenter_cursor(self, cursor: Any) -> Any:
        return cursor

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        await self._run(operation, parameters, many=False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        await self._run(operation, seq_of_parameters, many=True)

    async def _run(self, operation: str, parameters: Any, *, many: bool) -> None:
        connection = self._connection
        adapted: OneTripConnection = self._adapt_connection  # type: ignore[assignment]
        async with adapted._execute_mutex:
            # A failed statement may have opened a transaction too: assume it did.
            adapted.in_transaction = True
            (
                description,
                rowcount,
                lastrowid,
                rows,
                adapted.in_transaction,
            ) = await connection._execute(_run, connection._conn, operation, parameters, many)
        outcome: _Outcome = self._cursor  # type: ignore[assignment]
        outcome.description = description
        outcome.rowcount = rowcount
        outcome.lastrowid = lastrowid
        self._rows = collections.deque(rows or ())


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    """aiosqlite's connection adapter with :class:`OneTripCursor`, which knows whether a
    transaction is open (as of the last statement)."""

    __slots__ = ("in_transaction",)
    _cursor_cls = OneTripCursor

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        self.in_transaction = True  # not known before the first statement

    def commit(self) -> None:
        if self.in_transaction:
            super().commit()
            self.in_transaction = False

    def rollback(self) -> None:
        if self.in_transaction:
            super().rollback()
            self.in_transaction = False


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The DBAPI shim that hands out :class:`OneTripConnection`."""

    def connect(self, *arg: Any, **kw: Any) -> OneTripConnection:
        adapted = super().connect(*arg, **kw)
        return OneTripConnection(self, adapted._connection)


class OneTripDialect(SQLiteDialect_aiosqlite):
    """The ``sqlite+aiosqlite`` dialect with one trip per statement."""

    supports_statement_cache = True  # each dialect subclass must say so again

    @classmethod
    def import_dbapi(cls) -> OneTripDBAPI:
        return OneTripDBAPI(__import__("aiosqlite"), __import__("sqlite3"))


def install() -> None:
    """Make ``sqlite+aiosqlite`` URLs use :class:`OneTripDialect`."""
    registry.register("sqlite.aiosqlite", __name__, OneTripDialect.__name__)
