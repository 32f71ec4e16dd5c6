"""Two agents in one database cannot see, change or delete each other's data.

Per operation family, on SQLite, Postgres and through the memory service:
both agents use the same ids (a memory, entity, component, task, log, room,
world, cache key, relationship), and every read, change and delete of one
agent leaves the other's rows as they were.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from contracts import CacheEntry, Connection, Content, TurnCommit
from contracts.records import (
    Agent,
    Component,
    Entity,
    Log,
    Memory,
    ParticipantState,
    Relationship,
    Room,
    Task,
    World,
    now_ms,
)
from shared.errors import NotFound
from shared.storage.adapter import DatabaseAdapter
from shared.storage.vectors import to_bytes
from tests.integration.storage_backends import BACKENDS, stored_agent_on


@pytest.fixture(params=BACKENDS)
async def agents(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[DatabaseAdapter, DatabaseAdapter]]:
    """Agents A and B, stored in one database (B is A's adapter ``for_agent``)."""
    async with stored_agent_on(request, tmp_path, "A") as a:
        b = a.for_agent(str(uuid.uuid4()))
        assert await b.create_agent(Agent(id=b.agent_id, name="B"))
        try:
            yield a, b
        finally:
            await b.delete_agent(b.agent_id)


def said(text: str, *, memory_id: str, room_id: str = "general") -> Memory:
    return Memory(id=memory_id, entity_id="u", room_id=room_id, content=Content(text=text))


async def test_the_same_memory_id_is_one_memory_per_agent_read_by_id_only_by_its_own(
    agents: tuple[DatabaseAdapter, DatabaseAdapter],
) -> None:
    a, b = agents
    shared_id = str(uuid.uuid4())
    await a.create_memory(said("for a", memory_id=shared_id), "messages")
    await b.create_memory(said("for b", memory_id=shared_id), "messages")

    mine, theirs = await a.get_memory_by_id(shared_id), await b.get_memory_by_id(shared_id)
    assert mine is not None
    assert theirs is not None
    assert (mine.content.text, mine.agent_id) == ("for a", a.agent_id)
    assert (theirs.content.text, theirs.agent_id) == ("for b", b.agent_id)
    assert [m.content.text for m in await b.get_memories_by_ids([shared_id])] == ["for b"]
    assert [
        m.content.text for m in await b.search_memories_by_text(table_name="messages", query="for")
    ] == ["for b"]
    assert await b.count_memories("general") == 1


async def test_one_agent_cannot_change_or_delete_another_agents_memory_by_id(
    agents: tuple[DatabaseAdapter, DatabaseAdapter],
) -> None:
    a, b = agents
    only_b = str(uuid.uuid4())
    await b.create_memory(said("b's own", memory_id=only_b), "messages")

    assert not await a.update_memory(only_b, content=Content(text="changed by a"))
    await a.delete_memory(only_b)
    await a.delete_all_memories("general", "messages")
    assert await a.set_embeddings([only_b], [to_bytes([1.0, 0.0])]) == 0

    kept = await b.get_memory_by_id(only_b, include_embeddings=True)
    assert kept is not None
    assert kept.content.text == "b's own"
    assert kept.embedding is None


async def test_vectors_of_the_same_memory_id_stay_with_each_agent(
    agents: tuple[DatabaseAdapter, DatabaseAdapter],
) -> None:
    a, b = agents
    shared_id = str(uuid.uuid4())
    for db in (a, b):
        await db.create_memory(said(db.agent_id, memory_id=shared_id), "messages")
    assert [m.id for m in await a.get_memories_without_embeddings()] == [shared_id]
    assert await a.set_embeddings([shared_id], [to_bytes([1.0, 0.0])]) == 1
    assert [m.id for m in await b.get_memories_without_embeddings()] == [shared_id]
    assert await b.set_embeddings([shared_id], [to_bytes([0.0, 1.0])]) == 1

    found_a = await a.search_memories(table_name="messages", embedding=[1.0, 0.0], count=5)
    found_b = await b.search_memories(table_name="messages", embedding=[1.0, 0.0], count=5)
    assert [(m.content.text, round(m.similarity or 0, 6)) for m in found_a] == [(a.agent_id, 1.0)]
    assert [(m.content.text, round(m.similarity or 0, 6)) for m in found_b] == [(b.agent_id, 0.0)]

    await a.delete_memory(shared_id)
    kept = await b.get_memory_by_id(shared_id, include_embeddings=True)
    assert kept is not None
    assert kept.embedding == [0.0, 1.0]


async def test_a_turn_stores_the_same_message_id_for_each_agent(
    agents: tuple[DatabaseAdapter, DatabaseAdapter],
) -> None:
    a, b = agents
    message = said("hello both", memory_id=str(uuid.uuid4()))
    first = await a.begin_turn(message, Connection(source="test"))
    second = await b.begin_turn(message, Connection(source="test"))
    assert first.message_stored
    assert second.message_stored
    assert [m.id for m in second.recent_messages] == [message.id]


async def test_entities_of_the_same_id_are_each_agents_own(
    agents: tuple[DatabaseAdapter, DatabaseAdapter],
) -> None:
    a, b = agents
    assert await a.create_entities([Entity(id="alice", names=["Alice A"])])
    assert await b.create_entities([Entity(id="alice", names=["Alice B"])])
    await a.update_entity(Entity(id="alice", names=["Renamed by A"]))
    assert [e.names for e in await b.get_entities_by_ids(["alice"])] == [["Alice B"]]
    assert await b.search_entities_by_name("Renamed") == []


async def test_components_of_the_same_id_are_each_agents_own(
    agents: tuple[DatabaseAdapter, DatabaseAdapter],
) -> None:
    a, b = agents
    shared_id = str(uuid.uuid4())
    for db in (a, b):
        assert await db.create_component(
            Component(id=shared_id, entity_id="u", type="contact", data={"by": db.agent_id})
        )
    await a.update_component(
        Component(id=shared_id, entity_id="u", type="contact", data={"by": "a again"})
    )
    only_b = str(uuid.uuid4())
    assert await b.create_component(Component(id=only_b, entity_id="v", type="contact"))
    with pytest.raises(NotFound):
        await a.update_component(Component(id=only_b, entity_id="v", type="contact"))
    await a.delete_component(only_b)
    await a.delete_component(shared_id)

    assert await a.get_components("u") == []
    assert [c.data for c in await b.get_components("u")] == [{"by": b.agent_id}]
    assert [c.id for c in await b.get_components("v")] == [only_b]


async def test_tasks_of_the_same_id_are_each_agents_own(
    agents: tuple[DatabaseAdapter, DatabaseAdapter],
) -> None:
    a, b = agents
    shared_id = str(uuid.uuid4())
    for db in (a, b):
        await db.create_task(Task(id=shared_id, name=f"task of {db.agent_id}", tags=["queue"]))
    theirs = await b.get_task(shared_id)
    assert theirs is not None
    assert theirs.name == f"task of {b.agent_id}"

    await a.update_task(Task(id=shared_id, name="changed by a", tags=["queue"]))
    claimed = await a.claim_task(shared_id, theirs.updated_at, now_ms() + 60_000)
    assert not claimed  # a's own task changed since; b's task is not a's to claim
    await a.delete_task(shared_id)

    assert await a.get_task(shared_id) is None
    assert [t.name for t in await b.get_tasks(tags=["queue"])] == [f"task of {b.agent_id}"]
    assert await b.claim_task(shared_id, theirs.updated_at, now_ms() + 60_000)


async def test_logs_of_the_same_id_are_each_agents_own(
    agents: tuple[DatabaseAdapter, DatabaseAdapter],
) -> None:
    a, b = agents
    shared_id = str(uuid.uuid4())
    for db in (a, b):
        await db.log(Log(id=shared_id, entity_id="u", type="action", body={"by": db.agent_id}))
    await a.delete_log(shared_id)
    assert await a.get_logs() == []
    assert [entry.body for entry in await b.get_logs()] == [{"by": b.agent_id}]


async def test_rooms_worlds_and_participants_of_the_same_id_are_each_agents_own(
    agents: tuple[DatabaseAdapter, DatabaseAdapter],
) -> None:
    a, b = agents
    for db in (a, b):
        await db.create_world(World(id="w", name=db.agent_id))
        await db.create_rooms([Room(id="general", name=db.agent_id, world_id="w")])
        await db.add_participants_room(["u"], "general")
    await a.set_participant_user_state("general", "u", ParticipantState.MUTED)
    await a.update_room(Room(id="general", name="renamed by a", world_id="w"))
    await a.update_world(World(id="w", name="renamed by a"))
    assert await a.remove_participant("u", "general")

    assert await b.get_participant_user_state("general", "u") is None
    assert await b.get_participants_for_room("general") == ["u"]
    assert [r.name for r in await b.get_rooms_by_ids(["general"])] == [b.agent_id]
    world = await b.get_world("w")
    assert world is not None
    assert world.name == b.agent_id

    await a.remove_world("w")
    assert [r.id for r in await b.get_rooms_by_world("w")] == ["general"]
    assert await b.get_rooms_for_participant("u") == ["general"]


async def test_the_cache_and_relationships_are_each_agents_own(
    agents: tuple[DatabaseAdapter, DatabaseAdapter],
) -> None:
    a, b = agents
    shared_id = str(uuid.uuid4())
    for db in (a, b):
        await db.set_cache("k", db.agent_id)
        assert await db.create_relationship(
            Relationship(
                id=shared_id, source_entity_id="u", target_entity_id="v", tags=[db.agent_id]
            )
        )
    await a.commit_turn(
        TurnCommit(
            cache=[CacheEntry(key="k", value="turn of a")],
            relationships=[Relationship(source_entity_id="u", target_entity_id="v", tags=["a"])],
        )
    )
    await a.update_relationship(Relationship(source_entity_id="u", target_entity_id="v"))
    assert await a.delete_cache("k")

    assert await b.get_cache("k") == b.agent_id
    assert [r.tags for r in await b.get_relationships("u")] == [[b.agent_id]]


async def test_deleting_an_agent_leaves_the_other_agents_data(
    agents: tuple[DatabaseAdapter, DatabaseAdapter],
) -> None:
    a, b = agents
    stranger = a.for_agent(str(uuid.uuid4()))
    assert await stranger.create_agent(Agent(id=stranger.agent_id, name="Stranger"))
    shared_id = str(uuid.uuid4())
    for db in (stranger, b):
        await db.create_memory(said("kept?", memory_id=shared_id), "messages")
        await db.create_task(Task(id=shared_id, name="t"))
        await db.log(Log(id=shared_id, entity_id="u", type="action", body={}))
    assert await stranger.delete_agent(stranger.agent_id)

    assert await stranger.get_memory_by_id(shared_id) is None
    assert await b.get_memory_by_id(shared_id) is not None
    assert await b.get_task(shared_id) is not None
    assert len(await b.get_logs()) == 1
