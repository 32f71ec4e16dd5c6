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
        assert [v for (v,) in rows] == ["0003"]
    finally:
        await engine.dispose()
