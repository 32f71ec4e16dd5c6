"""Run the schema migrations (Alembic) on an async engine.

Processes that start together migrate one after the other, and the later
ones find nothing left to do: on Postgres the whole upgrade runs in one
transaction holding an advisory lock; on a SQLite file, under an exclusive
lock on a ``<file>.migrate.lock`` beside it.
"""

from __future__ import annotations

import asyncio
import fcntl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.errors import Internal
from shared.storage.tables import Base

MIGRATIONS = Path(__file__).parent / "migrations"
_LOCK_KEY = 0x656C697A616D  # "elizam": one advisory lock for the elizamesh schema


class SchemaNotMigratedError(Internal):
    """The database's schema is not the one this code needs, and migrations were skipped."""


def _config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection, revision: str) -> None:
    command.upgrade(_config(connection), revision)


def _downgrade(connection: Connection, revision: str) -> None:
    command.downgrade(_config(connection), revision)


async def _locked(engine: AsyncEngine, step: str, revision: str) -> None:
    run = _upgrade if step == "upgrade" else _downgrade
    async with _file_lock(engine), engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("select pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        await conn.run_sync(run, revision)


@asynccontextmanager
async def _file_lock(engine: AsyncEngine) -> AsyncIterator[None]:
    """Hold an exclusive lock beside a SQLite file; nothing for other databases."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or database in (None, "", ":memory:"):
        yield
        return
    with Path(f"{database}.migrate.lock").open("a") as lock:  # noqa: ASYNC230 - an empty local file
        # flock blocks, so wait for it in a thread and keep the event loop free.
        await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` (default: the newest)."""
    await _locked(engine, "upgrade", revision)


async def downgrade(engine: AsyncEngine, revision: str = "base") -> None:
    """Take the schema down to ``revision`` (default: empty)."""
    await _locked(engine, "downgrade", revision)


def _revisions(connection: Connection) -> tuple[set[str], set[str]]:
    """The revisions the database is at, and the newest ones this code has."""
    current = set(MigrationContext.configure(connection).get_current_heads())
    heads = set(ScriptDirectory.from_config(_config(connection)).get_heads())
    return current, heads


async def check(engine: AsyncEngine) -> None:
    """Make sure the schema is at the newest revision, without changing it.

    Raises:
        SchemaNotMigratedError: it is not (an empty database, or an older or
            newer schema); the message says to run the migrations.
    """
    async with engine.connect() as conn:
        current, heads = await conn.run_sync(_revisions)
    if current != heads:
        found = ", ".join(sorted(current)) or "no schema (never migrated)"
        raise SchemaNotMigratedError(
            f"the database has {found}, and this code needs revision {', '.join(sorted(heads))}: "
            "run the migrations first (start once without skip_migrations, or await "
            "shared.storage.migrate.upgrade(engine))",
            details={"revision": ", ".join(sorted(current)), "needed": ", ".join(sorted(heads))},
        )


async def drift(engine: AsyncEngine, metadata: MetaData = Base.metadata) -> list[Any]:
    """What ``alembic check`` finds: how the table models differ from the migrated schema.

    Empty when the migrations create exactly the tables, columns, types,
    keys and indexes of ``metadata`` (default: ``shared.storage.tables``);
    else Alembic's autogenerate differences (``("add_table", Table)``, ...).
    """

    def compare(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async with engine.connect() as conn:
        return await conn.run_sync(compare)
