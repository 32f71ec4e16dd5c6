"""aiosqlite connections whose calls run on the event loop's thread, not on a thread each.

aiosqlite runs every call (cursor, execute, fetch, commit) on a thread of the
connection and hands the result back through the event loop: a statement
costs several thread hand-overs, each dearer than the statement itself (a
turn's reads and writes take microseconds in SQLite). Profiled on the
embedded lane of ``make bench-compare``, the hand-overs were about a third
of the CPU of a message. Here the calls run inline.

One case still goes to the connection's thread: a call that finds the
database locked (another process writes, or another engine of this process
holds a transaction open across an await). Inline, SQLite's busy handler
would sleep on the event loop's thread and could wait for a transaction that
only this loop can finish; on the thread, it waits up to the connection's
``timeout`` while the loop goes on. Inline the busy timeout is 0, so a lock
is seen at once; a statement that got SQLITE_BUSY changed nothing and is run
again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.engine import URL

P = ParamSpec("P")
T = TypeVar("T")

_BUSY = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
_DEFAULT_TIMEOUT = 5.0  # seconds, as sqlite3.connect's


def _busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:  # raised by the module itself, not by SQLite
        return "database is locked" in str(exc)
    return code & 0xFF in _BUSY  # extended codes (SQLITE_BUSY_SNAPSHOT, ...) keep the primary


class InlineConnection(aiosqlite.Connection):
    """An ``aiosqlite.Connection`` that runs its calls inline, and on its thread when locked.

    ``busy_ms``: how long a locked call waits on the connection's thread.
    """

    def __init__(self, connector: Callable[[], sqlite3.Connection], busy_ms: int) -> None:
        super().__init__(connector, iter_chunk_size=64)
        self._busy_ms = busy_ms
        self._thread.daemon = True  # as SQLAlchemy does for aiosqlite's own

    async def _execute(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        try:
            return fn(*args, **kwargs)
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                raise
        on_thread: Callable[..., Awaitable[T]] = super()._execute
        return await on_thread(self._waiting, fn, *args, **kwargs)

    def _waiting(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` with the busy timeout (on the connection's thread), then set it back to 0."""
        connection = self._conn
        connection.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
        try:
            return fn(*args, **kwargs)
        finally:
            connection.execute("PRAGMA busy_timeout = 0")


def inline_creator(url: URL, **connect_args: Any) -> Callable[[], Awaitable[InlineConnection]]:
    """Return the ``async_creator`` of an engine on the SQLite database of ``url``.

    ``connect_args`` go to ``sqlite3.connect`` as with aiosqlite (``timeout``:
    seconds a locked call waits, 5 by default); the database, URI and other
    arguments are the ones SQLAlchemy's aiosqlite dialect takes from ``url``.
    """
    [database], cparams = SQLiteDialect_aiosqlite().create_connect_args(url)
    params = {**cparams, **connect_args}
    busy_ms = int(float(params.pop("timeout", _DEFAULT_TIMEOUT)) * 1000)
    # The connection is made on aiosqlite's thread and used on the loop's.
    params["check_same_thread"] = False

    def connector() -> sqlite3.Connection:
        connection: sqlite3.Connection = sqlite3.connect(database, timeout=0, **params)
        connection.execute("PRAGMA busy_timeout = 0")
        return connection

    async def create() -> InlineConnection:
        connection = InlineConnection(connector, busy_ms)
        await connection  # connects, on the connection's thread
        return connection

    return create
