"""Schema guards: the table models match the migrations; deleting an agent leaves nothing.

``alembic check`` compares the models (``shared.storage.tables``) with the
schema the migrations build, on SQLite and Postgres; a table added to the
models without a migration, or with an ``agent_id`` that does not reference
the agent (so ``delete_agent`` would not find it), fails them. Both are shown
failing on a throwaway table added to a copy of the models.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Column, ForeignKey, MetaData, String, Table, func, select

from contracts import CacheEntry, Content, TurnCommit
from contracts.records import (
    Agent,
    Component,
    Entity,
    Log,
    Memory,
    Relationship,
    Room,
    Task,
    World,
)
from shared.database import create_engine
from shared.storage.migrate import drift, upgrade
from shared.storage.sql import SqlAdapter
from shared.storage.tables import Base, owned_by_agents, unowned_agent_columns
from tests.integration.test_migrations import fresh_postgres_database


@pytest.fixture(params=["sqlite", "postgres"])
async def migrated_database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A new database with every migration applied."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'guards.db'}"
        engine = create_engine(url)
        await upgrade(engine)
        await engine.dispose()
        yield url
        return
    async with fresh_postgres_database(request.getfixturevalue("postgres_url")) as url:
        engine = create_engine(url)
        await upgrade(engine)
        await engine.dispose()
        yield url


def models_with_a_throwaway_table(*, owned: bool) -> MetaData:
    """A copy of the table models plus a table the migrations do not know."""
    copy = MetaData()
    for table in Base.metadata.sorted_tables:
        table.to_metadata(copy)
    reference = [ForeignKey("agents.id", ondelete="CASCADE")] if owned else []
    agent_id = Column("agent_id", String(64), *reference)
    Table("throwaway", copy, Column("id", String(64), primary_key=True), agent_id)
    return copy


async def test_the_table_models_match_the_migrations(migrated_database: str) -> None:
    engine = create_engine(migrated_database)
    try:
        assert await drift(engine) == []
    finally:
        await engine.dispose()


async def test_a_table_in_the_models_but_not_in_the_migrations_fails_the_check(
    migrated_database: str,
) -> None:
    engine = create_engine(migrated_database)
    try:
        found = await drift(engine, models_with_a_throwaway_table(owned=True))
    finally:
        await engine.dispose()
    assert [(step, table.name) for step, table in found] == [("add_table", "throwaway")]


def test_every_table_with_an_agent_id_is_deleted_with_its_agent() -> None:
    assert unowned_agent_columns(Base.metadata) == []
    owned = {table.name for table, _ in owned_by_agents(Base.metadata)}
    assert owned == {t.name for t in Base.metadata.sorted_tables if "agent_id" in t.c}


def test_a_table_whose_agent_id_references_no_agent_fails_the_guard() -> None:
    assert unowned_agent_columns(models_with_a_throwaway_table(owned=False)) == [
        "throwaway.agent_id"
    ]
    owned = models_with_a_throwaway_table(owned=True)
    assert unowned_agent_columns(owned) == []
    assert "throwaway" in {table.name for table, _ in owned_by_agents(owned)}


async def fill_every_table(db: SqlAdapter) -> None:
    """Write at least one row of ``db``'s agent into every table that has an agent_id."""
    await db.create_world(World(id="w", name="W"))
    await db.create_rooms([Room(id="r", world_id="w")])
    await db.add_participants_room(["u"], "r")
    await db.create_entities([Entity(id="u", names=["U"])])
    await db.create_memory(
        Memory(entity_id="u", room_id="r", content=Content(text="hi"), embedding=[1.0, 0.0]),
        "messages",
    )
    await db.create_component(Component(entity_id="u", type="contact", data={"a": 1}))
    await db.create_task(Task(name="digest"))
    await db.commit_turn(
        TurnCommit(
            logs=[Log(entity_id="u", type="action", body={})],
            cache=[CacheEntry(key="k", value=1)],
            relationships=[Relationship(source_entity_id="u", target_entity_id="v")],
        )
    )


async def rows_of(db: SqlAdapter, agent_id: str) -> dict[str, int]:
    """How many rows of ``agent_id`` each table with an agent_id holds."""
    counts: dict[str, int] = {}
    async with db.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            if "agent_id" in table.c:
                query = select(func.count()).where(table.c.agent_id == agent_id)
                counts[table.name] = (await conn.execute(query)).scalar_one()
    return counts


async def test_deleting_an_agent_deletes_its_rows_of_every_table_and_no_one_elses(
    migrated_database: str,
) -> None:
    a = SqlAdapter.from_url(migrated_database, str(uuid.uuid4()))
    b = a.for_agent(str(uuid.uuid4()))
    try:
        for db in (a, b):
            assert await db.create_agent(Agent(id=db.agent_id, name=db.agent_id[:8]))
            await fill_every_table(db)
        filled = await rows_of(a, a.agent_id)
        empty = [table for table, count in filled.items() if count == 0]
        assert empty == [], f"fill_every_table writes no row to {empty}: add one"

        assert await a.delete_agent(a.agent_id)
        assert set((await rows_of(a, a.agent_id)).values()) == {0}
        assert await rows_of(b, b.agent_id) == filled
    finally:
        await b.delete_agent(b.agent_id)
        await a.close()
