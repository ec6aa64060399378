"""Schema migrations with Alembic, one history per service, each in its own schema.

    python -m tools.migrate all                        # upgrade every service to head
    python -m tools.migrate dispatch                   # one service
    python -m tools.migrate dispatch revision -m "add escalation"   # autogenerate
    python -m tools.migrate dispatch current           # show the applied revision
    python -m tools.migrate all check                  # fail if models and migrations differ

The database is ``DATABASE_URL`` (or ``--database-url``). On PostgreSQL each
service's tables, and its ``alembic_version`` table, live in the schema named
after the service (``volunteer_locator`` for the volunteer-locator), the same
schema the service itself uses; the schema is created when missing.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection

from shared.db import create_engine, is_sqlite, normalise_url

NameType = Literal[
    "schema",
    "table",
    "column",
    "index",
    "unique_constraint",
    "foreign_key_constraint",
    "check_constraint",
]
NameParent = Literal["schema_name", "table_name", "schema_qualified_table_name"]

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = ROOT / "migrations"


@dataclass(frozen=True)
class MigratedService:
    """Where one service's tables and migration history are."""

    name: str
    models: str
    base: str

    @property
    def schema(self) -> str:
        """The PostgreSQL schema the service owns (as ``ServiceSettings.schema_name``)."""
        return self.name.replace("-", "_")

    @property
    def versions(self) -> Path:
        """The directory of this service's revision files."""
        return MIGRATIONS / "versions" / self.schema

    def metadata(self) -> MetaData:
        """The service's table metadata (imported only when migrating)."""
        base = getattr(importlib.import_module(self.models), self.base)
        metadata: MetaData = base.metadata
        return metadata


SERVICES: dict[str, MigratedService] = {
    s.name: s
    for s in (
        MigratedService("intake", "services.intake.models", "IntakeTable"),
        MigratedService("dispatch", "services.dispatch.models", "DispatchTable"),
        MigratedService("volunteer-locator", "services.volunteer_locator.models", "LocatorTable"),
        MigratedService("notification", "services.notification.models", "NotificationTable"),
    )
}


def make_config(service: str, database_url: str, *, versions: Path | None = None) -> Config:
    """The Alembic configuration of one service (no alembic.ini needed)."""
    spec = SERVICES[service]
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("version_locations", str(versions or spec.versions))
    config.set_main_option("path_separator", "os")
    # Attributes, not options: a URL's %-escapes would trip the ini interpolation.
    config.attributes["service"] = service
    config.attributes["database_url"] = normalise_url(database_url)
    return config


def run_environment() -> None:
    """The body of ``migrations/env.py``: migrate the configured service online."""
    from alembic import context

    config = context.config
    service = config.attributes.get("service")
    if service not in SERVICES:
        raise SystemExit("run migrations with `python -m tools.migrate <service>`")
    if context.is_offline_mode():
        raise SystemExit("offline (--sql) migrations are not supported; run them online")
    spec = SERVICES[service]
    asyncio.run(_migrate_online(config.attributes["database_url"], spec))


async def _migrate_online(database_url: str, spec: MigratedService) -> None:
    sqlite = is_sqlite(database_url)
    schema = None if sqlite else spec.schema
    engine = create_engine(database_url, schema=schema)
    metadata = spec.metadata()
    try:
        async with engine.connect() as connection:
            if schema:
                await connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
                await connection.commit()
            await connection.run_sync(_run_migrations, metadata, schema, sqlite)
            await connection.commit()
    finally:
        await engine.dispose()


def _run_migrations(
    connection: Connection, metadata: MetaData, schema: str | None, sqlite: bool
) -> None:
    from alembic import context

    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table_schema=schema,
        compare_type=True,
        include_name=_not_the_version_table,
        # SQLite alters tables by copying them.
        render_as_batch=sqlite,
    )
    with context.begin_transaction():
        context.run_migrations()


def _not_the_version_table(
    name: str | None, type_: NameType, _parents: MutableMapping[NameParent, str | None]
) -> bool:
    # The reflected schema is the search path's default, so Alembic would not
    # recognise its own schema-qualified version table and offer to drop it.
    return not (type_ == "table" and name == "alembic_version")


def upgrade(service: str, database_url: str, *, to: str = "head", **kw: Any) -> None:
    """Bring one service's schema up to ``to``."""
    command.upgrade(make_config(service, database_url, **kw), to)


def revision(service: str, database_url: str, message: str, **kw: Any) -> None:
    """Autogenerate a revision from the difference between the models and the database."""
    command.revision(make_config(service, database_url, **kw), message=message, autogenerate=True)


def check(service: str, database_url: str, **kw: Any) -> None:
    """Fail when the models have changes no revision covers."""
    command.check(make_config(service, database_url, **kw))


def current(service: str, database_url: str, **kw: Any) -> None:
    """Print the revision the database is at."""
    command.current(make_config(service, database_url, **kw), verbose=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one migration command for one service or all of them."""
    parser = argparse.ArgumentParser(description="Alembic migrations, one schema per service.")
    parser.add_argument("service", choices=[*SERVICES, "all"])
    parser.add_argument(
        "action", nargs="?", default="upgrade", choices=["upgrade", "revision", "check", "current"]
    )
    parser.add_argument("-m", "--message", help="the revision's message (revision)")
    parser.add_argument("--to", default="head", help="target revision (upgrade)")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("set DATABASE_URL or pass --database-url")
    if args.action == "revision" and not args.message:
        parser.error("revision needs -m MESSAGE")
    services = list(SERVICES) if args.service == "all" else [args.service]
    for service in services:
        print(f"{service}: {args.action}", file=sys.stderr, flush=True)
        if args.action == "upgrade":
            upgrade(service, args.database_url, to=args.to)
        elif args.action == "revision":
            revision(service, args.database_url, args.message)
        elif args.action == "check":
            check(service, args.database_url)
        else:
            current(service, args.database_url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
