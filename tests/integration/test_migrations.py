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
        assert [v for (v,) in rows] == ["0004"]
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
