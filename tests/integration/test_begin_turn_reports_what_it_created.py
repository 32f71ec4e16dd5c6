"""``begin_turn`` says what it created, on every backend, so the turn can announce it.

SQLite, Postgres and the memory service over a real nats-server: the world
and the room it stored, and the participants it added; nothing on the next
turn in the same room; only the newcomer when someone new speaks there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from contracts import Connection
from contracts.records import Agent, World
from shared.storage.adapter import DatabaseAdapter
from tests.integration.test_storage_conformance import (
    memory_service_client,
    new_id,
    said,
    sql_adapter,
)


@pytest.fixture(params=["sqlite", "postgres", "nats"])
async def adapter(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DatabaseAdapter]:
    sqlite_url = f"sqlite:///{tmp_path / 'agent.db'}"
    target: AbstractAsyncContextManager[DatabaseAdapter]
    if request.param == "sqlite":
        target = sql_adapter(sqlite_url)
    elif request.param == "postgres":
        target = sql_adapter(request.getfixturevalue("postgres_url"))
    else:
        nats_url = request.getfixturevalue("nats_url")
        target = memory_service_client(nats_url, request.getfixturevalue("subjects"), sqlite_url)
    async with target as db:
        assert await db.create_agent(Agent(id=db.agent_id, name="Creations"))
        try:
            yield db
        finally:
            await db.delete_agent(db.agent_id)


async def test_a_first_message_reports_the_world_room_and_participants_it_created(
    adapter: DatabaseAdapter,
) -> None:
    room, world = new_id(), new_id()

    first = await adapter.begin_turn(said("alice", room, "hi", at=1, world_id=world), Connection())

    assert (first.world_created, first.room_created) == (True, True)
    assert first.participants_added == ["alice", adapter.agent_id]


async def test_a_second_message_in_the_room_reports_nothing_created(
    adapter: DatabaseAdapter,
) -> None:
    room = new_id()
    await adapter.begin_turn(said("alice", room, "one", at=1), Connection())

    second = await adapter.begin_turn(said("alice", room, "two", at=2), Connection())

    assert (second.world_created, second.room_created, second.participants_added) == (
        False,
        False,
        [],
    )


async def test_a_newcomer_in_a_known_room_is_the_only_thing_reported(
    adapter: DatabaseAdapter,
) -> None:
    room = new_id()
    await adapter.begin_turn(said("alice", room, "one", at=1), Connection())

    later = await adapter.begin_turn(said("bob", room, "two", at=2), Connection())

    assert (later.world_created, later.room_created, later.participants_added) == (
        False,
        False,
        ["bob"],
    )


async def test_a_new_room_in_a_known_world_reports_only_the_room(
    adapter: DatabaseAdapter,
) -> None:
    world = new_id()
    assert await adapter.create_world(World(id=world, name="Guild"))

    context = await adapter.begin_turn(
        said("alice", new_id(), "hi", at=1, world_id=world), Connection()
    )

    assert (context.world_created, context.room_created) == (False, True)
