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

``Prepared`` runs a Core statement straight through such a connection,
compiled once, and ``transaction`` holds one of the engine's pooled
connections for a transaction: through SQLAlchemy's ``execute`` a statement
costs about ten times what SQLite spends on it (the compiled-cache key, an
execution context, a cursor and result wrapper, a greenlet switch per call)
and ``AsyncEngine.begin`` three times a bare checkout; a turn makes about
twenty statements in six transactions.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, ParamSpec, TypeVar

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.engine import URL, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import Insert, Select
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.util import greenlet_spawn
from sqlalchemy.util.typing import TupleAny

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


_Processor = Callable[[Any], Any] | None
_REQUIRED = object()
"""The default of a parameter that has none: the call must give it."""


class Prepared:
    """A Core statement compiled once for SQLite, run on an ``InlineConnection`` as it is.

    Parameters are given by bind name, as to ``Connection.execute``; an
    ``expanding`` one (``IN``) takes a non-empty list; an INSERT's column left
    out gets its scalar default, or NULL. Values and rows pass through the
    column types' own processors (JSON, booleans), so they read as they do
    through SQLAlchemy. A driver failure is raised as SQLAlchemy's
    ``DBAPIError`` subclass for it (``IntegrityError``, ``OperationalError``, ...).

    Raises:
        TypeError: the statement is not a SELECT, INSERT, UPDATE or DELETE, it
            selects an expression without a label, or an INSERT column has a
            default computed in Python.
    """

    def __init__(self, statement: Select[*TupleAny] | UpdateBase, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        if not isinstance(compiled, SQLCompiler) or compiled.positiontup is None:
            raise TypeError(f"not a positional SQL statement: {type(statement).__name__}")
        self.sql = compiled.string
        by_name = {name: bind for bind, name in compiled.bind_names.items()}
        columns = statement.table.c if isinstance(statement, Insert) else None
        parameters: list[tuple[str, object, _Processor, bool]] = []
        for name in compiled.positiontup:
            bind = by_name[name]
            default: object = _REQUIRED if bind.required else bind.effective_value
            if columns is not None and name in columns:
                default = _column_default(columns[name])
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            parameters.append((name, default, processor, bind.expanding))
        self._parameters = tuple(parameters)
        self._expanding = any(expanding for *_, expanding in parameters)
        if isinstance(statement, Select):
            selected = list(statement.selected_columns)
        elif isinstance(statement, UpdateBase):
            selected = list(statement.exported_columns)
        else:
            raise TypeError(f"not a SELECT, INSERT, UPDATE or DELETE: {type(statement).__name__}")
        if unnamed := [str(column) for column in selected if column.key is None]:
            raise TypeError(f"label the selected expressions {unnamed}: their rows need keys")
        self.columns = tuple(str(column.key) for column in selected)
        self._readers = tuple(
            (index, reader)
            for index, column in enumerate(selected)
            if (reader := column.type.dialect_impl(dialect).result_processor(dialect, None))
        )

    async def rows(
        self, connection: InlineConnection, params: Mapping[str, object]
    ) -> list[dict[str, object]]:
        """Run the statement with ``params``; return its rows by column key."""
        sql, values = self._bound(params)
        try:
            found = await connection.execute_fetchall(sql, values)
        except sqlite3.Error as exc:
            raise _wrapped(sql, values, exc) from exc
        return [self._read(row) for row in found]

    async def run_many(
        self, connection: InlineConnection, params: Sequence[Mapping[str, object]]
    ) -> None:
        """Run the statement once per parameter set (``executemany``); its rows are dropped."""
        if self._expanding:
            for one in params:
                await self.rows(connection, one)
            return
        values = [self._bound(one)[1] for one in params]
        try:
            await connection.executemany(self.sql, values)
        except sqlite3.Error as exc:
            raise _wrapped(self.sql, values, exc) from exc

    def _bound(self, params: Mapping[str, object]) -> tuple[str, list[object]]:
        sql, values = self.sql, list[object]()
        for name, default, processor, expanding in self._parameters:
            value = params.get(name, default)
            if value is _REQUIRED:
                raise TypeError(f"a value is required for the parameter {name!r}")
            if value is None and name not in params:
                values.append(None)  # a column left out is SQL NULL, not its type's "null"
                continue
            if expanding:
                if not isinstance(value, list | tuple) or not value:
                    raise ValueError(f"the parameter {name!r} takes a non-empty list")
                items: Sequence[object] = value
                marks = ", ".join("?" * len(items))
                sql = sql.replace(f"__[POSTCOMPILE_{name}]", marks, 1)
                values.extend(processor(v) if processor else v for v in items)
            else:
                values.append(processor(value) if processor else value)
        return sql, values

    def _read(self, row: Sequence[object]) -> dict[str, object]:
        values = list(row)
        for index, reader in self._readers:
            values[index] = reader(values[index])
        return dict(zip(self.columns, values, strict=True))


def _column_default(column: Any) -> object:
    """What an INSERT stores in ``column`` when not given: its scalar default, or NULL."""
    default = column.default
    if default is None:
        return None
    if not default.is_scalar:
        raise TypeError(f"column {column.key!r} has a default computed in Python")
    return default.arg


def _wrapped(sql: str, values: Sequence[object], exc: sqlite3.Error) -> Exception:
    """``exc`` as SQLAlchemy raises it, so callers handle one family of errors."""
    return DBAPIError.instance(sql, values, exc, sqlite3.Error)


@asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[InlineConnection]:
    """One transaction on a pooled connection of ``engine``: committed at the end, else rolled back.

    No SQLAlchemy ``Connection`` is made, so the engine's connection events
    (``begin``, ``before_cursor_execute``, ...) do not fire.

    Raises:
        TypeError: the engine's connections are not ``InlineConnection`` (not
            made by ``inline_creator``).
        sqlalchemy.exc.DBAPIError: the commit failed.
    """
    pooled = await engine.raw_connection()
    try:
        connection = pooled.driver_connection
        if not isinstance(connection, InlineConnection):
            raise TypeError(f"not an inline SQLite connection: {type(connection).__name__}")
        try:
            yield connection
        except BaseException:
            await connection.rollback()
            raise
        try:
            await connection.commit()
        except sqlite3.Error as exc:
            raise _wrapped("COMMIT", (), exc) from exc
    finally:
        # Back to the pool, which resets it (a rollback: awaited, hence the greenlet).
        await greenlet_spawn(pooled.close)
