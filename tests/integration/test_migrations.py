"""Migrations go up from empty, down, and up again, and concurrent starts do not collide."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.database import async_url, create_engine
from shared.storage.migrate import downgrade, upgrade

TABLES = {
    "agents",
    "memories",
    "embeddings",
    "entities",
    "worlds",
    "rooms",
    "participants",
    "cache",
    "relationships",
    "logs",
    "components",
    "tasks",
}


async def table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    return names - {"alembic_version"}


@asynccontextmanager
async def fresh_postgres_database(server_url: str) -> AsyncIterator[str]:
    """A new, empty database on the server of ``server_url``; dropped afterwards."""
    server = make_url(async_url(server_url))
    name = f"elizamesh_migrate_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server.render_as_string(hide_password=False))
    try:
        async with admin.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f'create database "{name}"'))
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        async with admin.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f'drop database if exists "{name}" with (force)'))
        await admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
async def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database with nothing in it: a new SQLite file, or a new Postgres database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    async with fresh_postgres_database(request.getfixturevalue("postgres_url")) as url:
        yield url


async def test_upgrade_downgrade_and_upgrade_again(empty_database: str) -> None:
    engine = create_engine(empty_database)
    try:
        await upgrade(engine)
        assert await table_names(engine) == TABLES
        await downgrade(engine)
        assert await table_names(engine) == set()
        await upgrade(engine)
        assert await table_names(engine) == TABLES
        await upgrade(engine)  # already at head: nothing to do, nothing broken
        assert await table_names(engine) == TABLES
    finally:
        await engine.dispose()


MIGRATE = (
    "import asyncio, sys; from shared.database import create_engine; "
    "from shared.storage.migrate import upgrade; asyncio.run(upgrade(create_engine(sys.argv[1])))"
)


async def test_four_processes_migrating_at_once_leave_one_good_schema(empty_database: str) -> None:
    racers = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", MIGRATE, empty_database)
        for _ in range(4)
    ]
    codes = await asyncio.gather(*(racer.wait() for racer in racers))
    assert codes == [0, 0, 0, 0]
    engine = create_engine(empty_database)
    try:
        assert await table_names(engine) == TABLES
        async with engine.connect() as conn:
            rows = (await conn.execute(text("select version_num from alembic_version"))).all()
        assert [v for (v,) in rows] == ["0005"]
    finally:
        await engine.dispose()


SHARED_ROOM = [
    "insert into agents (id, name, enabled, character, created_at, updated_at) values "
    "('agent-a', 'A', true, '{}', 0, 0), ('agent-b', 'B', true, '{}', 0, 0)",
    "insert into worlds (id, agent_id, name, metadata) values ('w', 'agent-a', 'W', '{}')",
    "insert into rooms (id, agent_id, name, source, type, world_id, metadata) values "
    "('general', 'agent-a', 'general', 'discord', 'GROUP', 'w', '{}')",
    "insert into participants (entity_id, room_id, agent_id) values "
    "('u', 'general', 'agent-a'), ('u', 'general', 'agent-b')",
    "insert into memories (id, type, agent_id, entity_id, room_id, content, metadata, "
    '"unique", created_at) values '
    "('m-a', 'messages', 'agent-a', 'u', 'general', '{}', '{}', true, 1), "
    "('m-b', 'messages', 'agent-b', 'u', 'general', '{}', '{}', true, 2)",
]


async def test_a_room_two_agents_shared_becomes_one_per_agent_and_back(
    empty_database: str,
) -> None:
    engine = create_engine(empty_database)
    try:
        await upgrade(engine, "0003")
        async with engine.begin() as conn:
            for statement in SHARED_ROOM:
                await conn.execute(text(statement))
        await upgrade(engine)
        async with engine.connect() as conn:
            rooms = (await conn.execute(text("select id, agent_id, type from rooms"))).all()
            worlds = (await conn.execute(text("select id, agent_id from worlds"))).all()
            members = (await conn.execute(text("select agent_id from participants"))).all()
        assert sorted(rooms) == [("general", "agent-a", "GROUP"), ("general", "agent-b", "GROUP")]
        assert sorted(worlds) == [("w", "agent-a"), ("w", "agent-b")]
        assert sorted(a for (a,) in members) == ["agent-a", "agent-b"]

        await downgrade(engine, "0003")
        async with engine.connect() as conn:
            rooms = (await conn.execute(text("select id, agent_id from rooms"))).all()
            count = (await conn.execute(text("select count(*) from participants"))).scalar_one()
        assert rooms == [("general", "agent-a")]
        assert count == 2  # the participants stay, under the one room left
        await upgrade(engine)
        async with engine.connect() as conn:
            rooms = (await conn.execute(text("select id, agent_id from rooms"))).all()
        assert sorted(rooms) == [("general", "agent-a"), ("general", "agent-b")]
    finally:
        await engine.dispose()


TWO_AGENTS_AT_0004 = [
    "insert into agents (id, name, enabled, character, created_at, updated_at) values "
    "('agent-a', 'A', true, '{}', 0, 0), ('agent-b', 'B', true, '{}', 0, 0)",
    "insert into memories (id, type, agent_id, entity_id, room_id, content, metadata, "
    '"unique", created_at) values '
    "('m-1', 'messages', 'agent-a', 'u', 'r', '{\"text\": \"a\"}', '{}', true, 1), "
    "('m-2', 'messages', 'agent-b', 'u', 'r', '{\"text\": \"b\"}', '{}', true, 2)",
    "insert into embeddings (memory_id, dim, vector) values ('m-1', 1, :vector)",
    "insert into logs (id, agent_id, entity_id, type, body, created_at) values "
    "('l-1', 'agent-a', 'u', 'action', '{}', 1)",
    "insert into components (id, agent_id, entity_id, type, data, created_at) values "
    "('c-1', 'agent-b', 'u', 'contact', '{}', 1)",
    "insert into tasks (id, agent_id, name, description, tags, metadata, created_at, "
    "updated_at) values ('t-1', 'agent-a', 'digest', '', '[]', '{}', 1, 1)",
    "insert into relationships (id, source_entity_id, target_entity_id, agent_id, tags, "
    "metadata, created_at) values ('k-1', 'u', 'v', 'agent-b', '[]', '{}', 1)",
]
PER_AGENT = ("memories", "embeddings", "logs", "components", "tasks", "relationships")


async def rows_by_agent(engine: AsyncEngine) -> dict[str, list[tuple[str, str]]]:
    """Each per-agent table's (id, agent_id) rows, sorted; a vector's id is its memory's."""
    found: dict[str, list[tuple[str, str]]] = {}
    async with engine.connect() as conn:
        for table in PER_AGENT:
            key = "memory_id" if table == "embeddings" else "id"
            query = f"select {key}, agent_id from {table}"  # noqa: S608 - names of this test
            rows = await conn.execute(text(query))
            found[table] = sorted((i, a) for i, a in rows.all())
    return found


async def test_memories_logs_tasks_and_components_become_per_agent_and_back(
    empty_database: str,
) -> None:
    engine = create_engine(empty_database)
    try:
        await upgrade(engine, "0004")
        async with engine.begin() as conn:
            for statement in TWO_AGENTS_AT_0004:
                bound = {"vector": b"\x00\x00\x80?"} if ":vector" in statement else {}
                await conn.execute(text(statement), bound)
        await upgrade(engine, "0005")
        assert await rows_by_agent(engine) == {
            "memories": [("m-1", "agent-a"), ("m-2", "agent-b")],
            "embeddings": [("m-1", "agent-a")],
            "logs": [("l-1", "agent-a")],
            "components": [("c-1", "agent-b")],
            "tasks": [("t-1", "agent-a")],
            "relationships": [("k-1", "agent-b")],
        }
        # The same ids are now free for the other agent.
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "insert into memories (id, type, agent_id, entity_id, room_id, content, "
                    'metadata, "unique", created_at) values '
                    "('m-1', 'messages', 'agent-b', 'u', 'r', '{}', '{}', true, 3)"
                )
            )
            await conn.execute(
                text(
                    "insert into embeddings (memory_id, agent_id, dim, vector) "
                    "values ('m-1', 'agent-b', 1, :vector)"
                ),
                {"vector": b"\x00\x00\x00@"},
            )
            claimed = await conn.execute(text("update tasks set claimed_until = 5"))
            assert claimed.rowcount == 1

        await downgrade(engine, "0004")
        async with engine.connect() as conn:
            memories = (await conn.execute(text("select id, agent_id from memories"))).all()
            vectors = (await conn.execute(text("select memory_id, vector from embeddings"))).all()
        # One row per id is kept (the smallest agent id's), with its own vector.
        assert sorted(memories) == [("m-1", "agent-a"), ("m-2", "agent-b")]
        assert vectors == [("m-1", b"\x00\x00\x80?")]

        await upgrade(engine)
        assert (await rows_by_agent(engine))["embeddings"] == [("m-1", "agent-a")]
    finally:
        await engine.dispose()
