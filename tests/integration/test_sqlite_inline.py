"""SQLite statements run on the event loop's thread; a locked database is waited for off it."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import create_async_engine

from shared.database import create_engine
from shared.sqlite_inline import inline_creator


async def test_statements_run_on_the_event_loops_thread(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    threads: list[int] = []
    try:
        async with engine.connect() as connection:
            raw = await connection.get_raw_connection()
            sqlite = raw.driver_connection._conn  # type: ignore[union-attr]
            sqlite.create_function("where_am_i", 0, lambda: threads.append(threading.get_ident()))
            await connection.execute(text("SELECT where_am_i()"))
    finally:
        await engine.dispose()
    assert threads == [threading.get_ident()]


async def test_a_write_waits_for_another_connections_lock_while_the_loop_goes_on(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db.sqlite"
    engine = create_engine(f"sqlite:///{path}")
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE t (x INTEGER)"))
        other = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # holds the write lock
        other.execute("INSERT INTO t VALUES (1)")

        async def release_soon() -> None:
            await asyncio.sleep(0.3)  # runs only if the loop is not blocked by the waiting write
            other.execute("COMMIT")

        releasing = asyncio.create_task(release_soon())
        async with asyncio.timeout(20), engine.begin() as connection:
            await connection.execute(text("INSERT INTO t VALUES (2)"))
        await releasing
        async with engine.connect() as connection:
            rows = (await connection.execute(text("SELECT x FROM t ORDER BY x"))).all()
        other.close()
    finally:
        await engine.dispose()
    assert [row.x for row in rows] == [1, 2]


async def test_a_lock_held_past_the_timeout_is_database_is_locked_and_changes_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db.sqlite"
    url = make_url(f"sqlite+aiosqlite:///{path}")
    engine = create_async_engine(url, async_creator=inline_creator(url, timeout=0.2))
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE t (x INTEGER)"))
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(OperationalError, match="database is locked"):
            async with engine.begin() as connection:
                await connection.execute(text("INSERT INTO t VALUES (2)"))
        other.execute("ROLLBACK")
        other.close()
        async with engine.begin() as connection:
            await connection.execute(text("INSERT INTO t VALUES (3)"))
            rows = (await connection.execute(text("SELECT x FROM t"))).all()
    finally:
        await engine.dispose()
    assert [row.x for row in rows] == [3]
