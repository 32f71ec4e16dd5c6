"""SQLite statements run on the event loop's thread; a locked database is waited for off it."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    event,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from contracts import CacheEntry, Connection, Content, TurnCommit
from contracts.records import Agent, Log, Memory
from shared.database import create_engine
from shared.errors import Conflict
from shared.sqlite_inline import InlineConnection, Prepared, inline_creator, transaction
from shared.storage.adapter import DatabaseAdapter
from shared.storage.sql import SqlAdapter
from shared.storage.vectors import to_bytes
from tests.integration.storage_backends import sql_adapter


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


# -- Prepared and transaction: the fast path of SqlAdapter on SQLite ----------------

_TABLES = MetaData()
_T = Table(
    "t",
    _TABLES,
    Column("id", Integer, primary_key=True),
    Column("body", JSON),
    Column("flag", Boolean),
    Column("tag", String(16), unique=True),
)
_ALL = select(_T).order_by(_T.c.id)
_RAW = text("SELECT id, body, typeof(body) AS body_type, flag, typeof(flag) AS flag_type FROM t")


@asynccontextmanager
async def table_on(path: Path, **pool: int) -> AsyncIterator[AsyncEngine]:
    """An engine as ``shared.database`` makes it (or with ``pool``), with ``_T`` created."""
    if pool:
        url = make_url(f"sqlite+aiosqlite:///{path}")
        engine = create_async_engine(url, async_creator=inline_creator(url), **pool)
    else:
        engine = create_engine(f"sqlite:///{path}")
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_TABLES.create_all)
        yield engine
    finally:
        await engine.dispose()


@dataclass
class PreparedCalls:
    """How many statements ran through ``Prepared`` (the fast path)."""

    count: int = 0


@pytest.fixture
def prepared_calls(monkeypatch: pytest.MonkeyPatch) -> PreparedCalls:
    calls = PreparedCalls()
    rows, run_many = Prepared.rows, Prepared.run_many

    async def counted_rows(
        self: Prepared, connection: InlineConnection, params: Mapping[str, object]
    ) -> list[dict[str, object]]:
        calls.count += 1
        return await rows(self, connection, params)

    async def counted_run_many(
        self: Prepared, connection: InlineConnection, params: Sequence[Mapping[str, object]]
    ) -> None:
        calls.count += 1
        await run_many(self, connection, params)

    monkeypatch.setattr(Prepared, "rows", counted_rows)
    monkeypatch.setattr(Prepared, "run_many", counted_run_many)
    return calls


@contextmanager
def core_statements(engine: AsyncEngine) -> Iterator[list[str]]:
    """The SQL that SQLAlchemy runs on ``engine`` meanwhile; listening turns the fast path off."""
    seen: list[str] = []

    def on_statement(*args: Any) -> None:
        seen.append(args[2])

    event.listen(engine.sync_engine, "before_cursor_execute", on_statement)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", on_statement)


ROWS = [
    {
        "id": 1,
        "body": {"text": "héllo ✓", "n": [1, 2.5, None, True], "deep": {"a": {}}},
        "flag": True,
    },
    {"id": 2, "body": ["a", {"b": None}], "flag": False},
    {"id": 3, "body": "just a string", "flag": None},
]


async def test_json_and_booleans_written_by_prepared_read_through_core_as_written(
    tmp_path: Path,
) -> None:
    async with table_on(tmp_path / "db.sqlite") as engine:
        async with transaction(engine) as driver:
            await Prepared(insert(_T), engine.dialect).run_many(driver, ROWS)
        async with engine.connect() as connection:
            read = (await connection.execute(_ALL)).mappings().all()
    assert [dict(row) for row in read] == [{**row, "tag": None} for row in ROWS]


async def test_json_and_booleans_written_through_core_read_by_prepared_as_written(
    tmp_path: Path,
) -> None:
    async with table_on(tmp_path / "db.sqlite") as engine:
        async with engine.begin() as connection:
            await connection.execute(insert(_T), ROWS)
        async with transaction(engine) as driver:
            read = await Prepared(_ALL, engine.dialect).rows(driver, {})
    assert read == [{**row, "tag": None} for row in ROWS]


async def test_prepared_and_core_store_json_and_booleans_in_the_same_form(tmp_path: Path) -> None:
    async with (
        table_on(tmp_path / "fast.sqlite") as fast,
        table_on(tmp_path / "core.sqlite") as core,
    ):
        async with transaction(fast) as driver:
            await Prepared(insert(_T), fast.dialect).run_many(driver, ROWS)
        async with core.begin() as connection:
            await connection.execute(insert(_T), ROWS)
        stored = []
        for engine in (fast, core):
            async with engine.connect() as connection:
                stored.append((await connection.execute(_RAW)).all())
    assert stored[0] == stored[1]
    assert [row.flag_type for row in stored[0]] == ["integer", "integer", "null"]


async def test_a_json_column_left_out_of_an_insert_is_sql_null_on_both_paths(
    tmp_path: Path,
) -> None:
    # Prepared's docstring: "an INSERT's column left out gets its scalar default, or NULL".
    async with table_on(tmp_path / "db.sqlite") as engine:
        async with transaction(engine) as driver:
            await Prepared(insert(_T), engine.dialect).rows(driver, {"id": 1})
        async with engine.begin() as connection:
            await connection.execute(insert(_T), {"id": 2})
            stored = (await connection.execute(_RAW)).all()
    assert [(row.id, row.body_type) for row in stored] == [(1, "null"), (2, "null")]


async def test_an_unlabelled_expression_is_refused_with_a_type_error_saying_to_label_it() -> None:
    # Core would key it "count_1"; rows keyed by an invented name could collide.
    with pytest.raises(TypeError, match="label"):
        Prepared(select(func.count()).select_from(_T), SQLiteDialect_aiosqlite())
    labelled = Prepared(select(func.count().label("n")).select_from(_T), SQLiteDialect_aiosqlite())
    assert labelled.columns == ("n",)


async def test_an_in_list_of_one_or_several_values_selects_those_rows(tmp_path: Path) -> None:
    chosen = Prepared(
        select(_T.c.id)
        .where(_T.c.id.in_(bindparam("ids", expanding=True)), _T.c.flag.is_not(None))
        .order_by(_T.c.id),
        SQLiteDialect_aiosqlite(),
    )
    flagged = Prepared(
        select(_T.c.id).where(_T.c.flag.in_(bindparam("flags", expanding=True))),
        SQLiteDialect_aiosqlite(),
    )
    async with table_on(tmp_path / "db.sqlite") as engine, transaction(engine) as driver:
        await Prepared(insert(_T), engine.dialect).run_many(driver, ROWS)
        found = [
            [row["id"] for row in await chosen.rows(driver, {"ids": ids})]
            for ids in ([2], [3, 1, 2], (1,), [4], [1, 1])
        ]
        true_ones = await flagged.rows(driver, {"flags": [True]})
    assert found == [[2], [1, 2], [1], [], [1]]
    assert true_ones == [{"id": 1}]


async def test_an_empty_in_list_is_a_value_error_naming_the_parameter(tmp_path: Path) -> None:
    chosen = Prepared(
        select(_T.c.id).where(_T.c.id.in_(bindparam("ids", expanding=True))),
        SQLiteDialect_aiosqlite(),
    )
    async with table_on(tmp_path / "db.sqlite") as engine, transaction(engine) as driver:
        with pytest.raises(ValueError, match="'ids'") as raised:
            await chosen.rows(driver, {"ids": []})
        with pytest.raises(ValueError, match="'ids'"):
            await chosen.run_many(driver, [{"ids": [1]}, {"ids": []}])
        assert await chosen.rows(driver, {"ids": [1]}) == []
    assert not isinstance(raised.value, DBAPIError)


async def add_in_a_transaction(
    engine: AsyncEngine,
    add: Prepared,
    rows: Sequence[Mapping[str, object]],
    *,
    then_fail: bool = False,
    used: list[InlineConnection] | None = None,
) -> None:
    """Insert ``rows`` in one ``transaction``, then raise RuntimeError if ``then_fail``."""
    async with transaction(engine) as driver:
        if used is not None:
            used.append(driver)
        for row in rows:
            await add.rows(driver, row)
        if then_fail:
            raise RuntimeError("after the insert")


async def test_a_unique_violation_on_the_fast_path_is_an_integrity_error(tmp_path: Path) -> None:
    add = Prepared(insert(_T), SQLiteDialect_aiosqlite())
    async with table_on(tmp_path / "db.sqlite") as engine:
        async with transaction(engine) as driver:
            await add.rows(driver, {"id": 1, "tag": "same"})
        with pytest.raises(IntegrityError, match="UNIQUE") as raised:
            await add_in_a_transaction(engine, add, [{"id": 2}, {"id": 3, "tag": "same"}])
        async with engine.connect() as connection:
            left = (await connection.execute(_ALL)).all()
    assert isinstance(raised.value.orig, sqlite3.IntegrityError)
    assert [(row.id, row.tag) for row in left] == [(1, "same")]  # id 2 was rolled back


async def test_a_duplicate_log_id_through_the_adapter_is_a_conflict_on_the_fast_path(
    tmp_path: Path, prepared_calls: PreparedCalls
) -> None:
    async with sql_adapter(f"sqlite:///{tmp_path / 'agent.db'}") as db:
        assert await db.create_agent(Agent(id=db.agent_id, name="Logger"))
        entry = Log(entity_id="u", type="action", body={"n": 1})
        await db.log(entry)
        prepared_calls.count = 0
        with pytest.raises(Conflict, match="duplicate id") as raised:
            await db.log(msgspec.structs.replace(entry, body={"n": 2}))
        logs = await db.get_logs()
    assert prepared_calls.count == 1
    assert isinstance(raised.value.__cause__, IntegrityError)
    assert [log.body for log in logs] == [{"n": 1}]


async def test_a_transaction_commits_on_success_and_rolls_back_on_an_exception(
    tmp_path: Path,
) -> None:
    add = Prepared(insert(_T), SQLiteDialect_aiosqlite())
    # One connection in the pool: each transaction must get back the one before it.
    async with table_on(
        tmp_path / "db.sqlite", pool_size=1, max_overflow=0, pool_timeout=5
    ) as engine:
        async with transaction(engine) as first:
            await add.rows(first, {"id": 1})
        failing: list[InlineConnection] = []
        with pytest.raises(RuntimeError, match="after the insert"):
            await add_in_a_transaction(engine, add, [{"id": 2}], then_fail=True, used=failing)
        async with transaction(engine) as again:
            assert not again.in_transaction
            await add.rows(again, {"id": 3})
        async with engine.connect() as connection:
            ids = (await connection.execute(select(_T.c.id).order_by(_T.c.id))).scalars().all()
    assert failing == [first]
    assert again is first
    assert ids == [1, 3]


LOCK_HOLDER = """
import sqlite3, sys, time
other = sqlite3.connect(sys.argv[1], isolation_level=None)
other.execute("BEGIN IMMEDIATE")
other.execute("INSERT INTO t (id, tag) VALUES (1, 'other')")
print("locked", flush=True)
time.sleep(1)
other.execute("COMMIT")
"""


async def test_a_fast_path_write_waits_for_another_process_lock_while_the_loop_goes_on(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db.sqlite"
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async with table_on(path) as engine:
        holder = await asyncio.create_subprocess_exec(
            sys.executable, "-c", LOCK_HOLDER, str(path), stdout=asyncio.subprocess.PIPE
        )
        assert holder.stdout is not None
        assert await holder.stdout.readline() == b"locked\n"
        ticker = asyncio.create_task(tick())
        async with asyncio.timeout(20), transaction(engine) as driver:
            await Prepared(insert(_T), engine.dialect).rows(driver, {"id": 2, "tag": "mine"})
        ticker.cancel()
        assert await holder.wait() == 0
        async with engine.connect() as connection:
            tags = (await connection.execute(select(_T.c.tag).order_by(_T.c.id))).scalars().all()
    assert tags == ["other", "mine"]
    assert ticks >= 3  # a loop blocked by the waiting write would not have ticked at all


async def adapter_operations(db: DatabaseAdapter) -> list[object]:
    """A few operations that write and read JSON, booleans, vectors and IN lists; their results."""
    room = "room-1"
    memories = [
        Memory(
            id=f"m{i}",
            entity_id="alice",
            room_id=room,
            content=Content(text=f"héllo {i}"),
            metadata={"i": i, "tags": ["x"]},
            unique=i % 2 == 0,
            created_at=i,
            embedding=[1.0, float(i)],
        )
        for i in range(3)
    ]
    results: list[object] = [
        await db.create_memories(memories, "messages"),
        await db.set_cache("k", {"nested": [1, None, "✓"], "ok": True}),
        await db.get_cache("k"),
        await db.get_memories_by_ids(["m2", "m0", "absent"], include_embeddings=True),
        await db.get_memories(table_name="messages", room_id=room, unique=True),
        await db.set_embeddings(["m1", "absent"], [to_bytes([0.5, 0.5])] * 2),
    ]
    context = await db.begin_turn(
        Memory(id="m9", entity_id="alice", room_id=room, content=Content(text="hi"), created_at=9),
        Connection(entity_names=["Alice"], source="test"),
        cache_keys=["k"],
    )
    results.append(msgspec.structs.replace(context, agent=None))  # its times are the clock's
    await db.commit_turn(
        TurnCommit(
            logs=[Log(id="l1", entity_id="alice", type="action", created_at=1)],
            cache=[CacheEntry(key="k", value=False)],
        )
    )
    results.append(await db.get_cache("k"))
    try:
        await db.log(Log(id="l1", entity_id="alice", type="again", created_at=2))
    except Conflict as conflict:
        results.append(type(conflict.__cause__))
    return results


async def test_adapter_operations_give_the_same_results_through_core_as_on_the_fast_path(
    tmp_path: Path, prepared_calls: PreparedCalls
) -> None:
    results: list[list[object]] = []
    async with sql_adapter(f"sqlite:///{tmp_path / 'fast.db'}") as fast:
        assert await fast.create_agent(Agent(id="agent-1", name="Same"))
        prepared_calls.count = 0
        results.append(await adapter_operations(fast.for_agent("agent-1")))
    on_fast_path = prepared_calls.count
    async with sql_adapter(f"sqlite:///{tmp_path / 'core.db'}") as core:
        assert isinstance(core, SqlAdapter)
        assert await core.create_agent(Agent(id="agent-1", name="Same"))
        prepared_calls.count = 0
        with core_statements(core.engine) as through_core:
            results.append(await adapter_operations(core.for_agent("agent-1")))
    assert on_fast_path > 0
    assert prepared_calls.count == 0
    assert through_core
    assert results[0] == results[1]
    assert results[0][-1] is IntegrityError
