"""The database engine factory: SQLite by default, Postgres when ``DATABASE_URL`` says so."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext import asyncio as sqlalchemy_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import ConnectionPoolEntry

from shared.sqlite_inline import inline_creator

_ASYNC_DRIVERS = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
}


def async_url(url: str) -> str:
    """Return ``url`` with an async driver.

    ``postgres://`` and ``postgresql://`` get asyncpg, ``sqlite://`` gets
    aiosqlite; a URL that already names a driver is kept as it is.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"invalid DATABASE_URL {url!r}: expected scheme://...")
    return f"{_ASYNC_DRIVERS.get(scheme, scheme)}://{rest}"


def create_engine(url: str, *, pool_size: int | None = None) -> AsyncEngine:
    """Return an async engine for ``url``, creating the SQLite file's folder if needed.

    ``pool_size``: connections kept open (SQLAlchemy's default, 5, when None);
    set it to the number of transactions meant to run at once. An in-memory
    SQLite database has one connection whatever is asked.
    """
    parsed = make_url(async_url(url))
    # Looked up at call time: OpenTelemetry's SQLAlchemy instrumentation wraps
    # the module's function, and a name imported before that would bypass it.
    create_async_engine = sqlalchemy_asyncio.create_async_engine
    pool: dict[str, int] = {} if pool_size is None else {"pool_size": pool_size}
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(parsed, pool_pre_ping=True, **pool)
    if parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    else:
        pool = {}
    # A writer waits up to 30 s for another one (another process; this
    # process's writers queue in SqlAdapter) rather than fail "database is locked".
    # Statements run on the event loop's thread (shared.sqlite_inline).
    engine = create_async_engine(parsed, async_creator=inline_creator(parsed, timeout=30), **pool)
    event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    """Make SQLite enforce foreign keys (as Postgres does) and let readers run beside a writer.

    In WAL mode, ``synchronous=NORMAL`` syncs at checkpoints rather than at every
    commit: a crash of the process loses nothing; a power cut may lose the last
    transactions, never corrupt the file.
    """
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
