"""One conformance suite for every ``DatabaseAdapter``: the same assertions on each backend.

Backends: ``SqlAdapter`` on SQLite and on Postgres (the ``NatsMemoryClient``
target joins when the memory service lands). Each test works as an agent of
its own, so tests share a database without seeing each other's rows.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from contracts import Content
from contracts.records import (
    Agent,
    Entity,
    Log,
    Memory,
    ParticipantState,
    Relationship,
    Room,
    World,
    now_ms,
)
from shared.errors import BadRequest, NotFound
from shared.storage.sql import SqlAdapter
from shared.storage.vectors import DimensionMismatch


def new_id() -> str:
    return uuid.uuid4().hex


@pytest.fixture(params=["sqlite", "postgres"])
async def adapter(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlAdapter]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'agent.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    agent_id = new_id()
    db = SqlAdapter.from_url(url, agent_id)
    await db.init()
    assert await db.create_agent(Agent(id=agent_id, name="Conformance"))
    try:
        yield db
    finally:
        await db.delete_agent(agent_id)
        await db.close()


def message(room_id: str, text: str, *, at: int, embedding: list[float] | None = None) -> Memory:
    return Memory(
        entity_id="user-1",
        room_id=room_id,
        content=Content(text=text),
        created_at=at,
        embedding=embedding,
    )


async def test_an_agent_is_stored_once_and_can_be_updated(adapter: SqlAdapter) -> None:
    agent = await adapter.get_agent(adapter.agent_id)
    assert agent is not None
    assert agent.name == "Conformance"
    assert not await adapter.create_agent(Agent(id=adapter.agent_id, name="Again"))
    changed = Agent(id=adapter.agent_id, name="Renamed", character={"bio": ["kind"]})
    assert await adapter.update_agent(adapter.agent_id, changed)
    stored = await adapter.get_agent(adapter.agent_id)
    assert stored is not None
    assert (stored.name, stored.character) == ("Renamed", {"bio": ["kind"]})
    assert not await adapter.update_agent(new_id(), changed)


async def test_a_memory_round_trips_with_its_content_and_vector(adapter: SqlAdapter) -> None:
    memory = Memory(
        entity_id="user-1",
        room_id="room-1",
        world_id="world-1",
        content=Content(text="I live in Paris", actions=["REPLY"], source="cli"),
        embedding=[0.5, -0.25, 1.0],
        metadata={"type": "message", "tags": ["a"]},
    )
    assert await adapter.create_memory(memory, "messages") == memory.id
    stored = await adapter.get_memory_by_id(memory.id)
    assert stored is not None
    assert stored.content == memory.content
    assert stored.embedding == [0.5, -0.25, 1.0]
    assert stored.metadata == {"type": "message", "tags": ["a"]}
    assert (stored.agent_id, stored.world_id, stored.created_at) == (
        adapter.agent_id,
        "world-1",
        memory.created_at,
    )


async def test_storing_the_same_memory_id_twice_keeps_one_row(adapter: SqlAdapter) -> None:
    memory = message("room-1", "once", at=1)
    await adapter.create_memory(memory, "messages")
    await adapter.create_memory(message("room-1", "twice", at=2), "messages")
    again = Memory(id=memory.id, entity_id="x", room_id="room-1", content=Content(text="dup"))
    assert await adapter.create_memory(again, "messages") == memory.id
    stored = await adapter.get_memory_by_id(memory.id)
    assert stored is not None
    assert stored.content.text == "once"
    assert await adapter.count_memories("room-1", table_name="messages") == 2


async def test_memories_come_newest_first_filtered_and_paged(adapter: SqlAdapter) -> None:
    room, other = new_id(), new_id()
    await adapter.create_memories(
        [message(room, f"m{i}", at=1000 + i) for i in range(5)]
        + [message(other, "elsewhere", at=5000)],
        "messages",
    )
    await adapter.create_memory(message(room, "a fact", at=9000), "facts")
    page = await adapter.get_memories(table_name="messages", room_id=room, count=2, offset=1)
    assert [m.content.text for m in page] == ["m3", "m2"]
    window = await adapter.get_memories(table_name="messages", room_id=room, start=1001, end=1002)
    assert [m.content.text for m in window] == ["m2", "m1"]
    both = await adapter.get_memories_by_room_ids(table_name="messages", room_ids=[room, other])
    assert [m.content.text for m in both][:2] == ["elsewhere", "m4"]
    assert await adapter.count_memories(room) == 6
    assert await adapter.count_memories(room, table_name="facts") == 1


async def test_deleting_memories_removes_only_what_was_named(adapter: SqlAdapter) -> None:
    room = new_id()
    kept = message(room, "fact", at=1, embedding=[1.0, 0.0])
    await adapter.create_memory(kept, "facts")
    doomed = [message(room, f"m{i}", at=i, embedding=[0.0, 1.0]) for i in range(3)]
    await adapter.create_memories(doomed, "messages")
    await adapter.delete_memory(doomed[0].id)
    assert await adapter.get_memory_by_id(doomed[0].id) is None
    await adapter.delete_all_memories(room, "messages")
    assert await adapter.count_memories(room) == 1
    assert await adapter.get_memory_by_id(kept.id) is not None


async def test_updating_a_memory_changes_only_the_given_fields(adapter: SqlAdapter) -> None:
    memory = message("room-1", "before", at=1)
    await adapter.create_memory(memory, "messages")
    assert await adapter.update_memory(
        memory.id, content={"text": "after"}, metadata={"edited": True}, embedding=[0.0, 2.0]
    )
    stored = await adapter.get_memory_by_id(memory.id)
    assert stored is not None
    assert stored.content.text == "after"
    assert stored.metadata == {"edited": True}
    assert stored.embedding == [0.0, 2.0]
    assert not await adapter.update_memory(new_id(), content={"text": "nobody"})
    with pytest.raises(BadRequest, match="cannot update memory fields"):
        await adapter.update_memory(memory.id, room_id="elsewhere")


async def test_vector_search_matches_brute_force_cosine_top_10(adapter: SqlAdapter) -> None:
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((10_000, 384)).astype(np.float32)
    room = new_id()
    memories = [
        message(room, f"v{i}", at=i, embedding=vectors[i].tolist()) for i in range(len(vectors))
    ]
    for start in range(0, len(memories), 2_500):
        await adapter.create_memories(memories[start : start + 2_500], "documents")
    query = rng.standard_normal(384).astype(np.float32)
    cosine = (vectors @ query) / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(query))
    expected = [f"v{i}" for i in np.argsort(-cosine)[:10]]

    found = await adapter.search_memories(
        table_name="documents", embedding=query.tolist(), count=10, room_id=room
    )
    assert [m.content.text for m in found] == expected
    similarities = [m.similarity for m in found]
    assert similarities == pytest.approx(sorted(cosine, reverse=True)[:10], abs=1e-5)
    threshold = float(cosine[np.argsort(-cosine)[3]])
    above = await adapter.search_memories(
        table_name="documents",
        embedding=query.tolist(),
        count=10,
        match_threshold=threshold,
        room_id=room,
    )
    assert [m.content.text for m in above] == expected[:4]


async def test_a_vector_of_another_dimension_is_rejected_and_nothing_is_lost(
    adapter: SqlAdapter,
) -> None:
    first = message("room-1", "384", at=1, embedding=[0.1] * 384)
    await adapter.create_memory(first, "messages")
    wrong = message("room-1", "1536", at=2, embedding=[0.1] * 1536)
    with pytest.raises(DimensionMismatch, match="1536 dimensions but this agent stores 384") as e:
        await adapter.create_memories([message("room-1", "ok", at=3), wrong], "messages")
    assert e.value.details == {"expected": "384", "got": "1536"}
    with pytest.raises(DimensionMismatch):
        await adapter.search_memories(table_name="messages", embedding=[0.1] * 768)
    with pytest.raises(DimensionMismatch):
        await adapter.ensure_embedding_dimension(1024)
    assert await adapter.count_memories("room-1") == 1
    stored = await adapter.get_memory_by_id(first.id)
    assert stored is not None
    assert stored.embedding is not None
    assert len(stored.embedding) == 384


async def test_entities_are_created_once_and_updated(adapter: SqlAdapter) -> None:
    alice = Entity(id=new_id(), names=["Alice"], metadata={"discord": {"username": "al"}})
    assert await adapter.create_entities([alice])
    assert not await adapter.create_entities([alice, Entity(id=new_id(), names=["Bob"])])
    renamed = Entity(id=alice.id, names=["Alice", "Al"], metadata={})
    await adapter.update_entity(renamed)
    [stored] = await adapter.get_entities_by_ids([alice.id, new_id()])
    assert (stored.names, stored.metadata, stored.agent_id) == (
        ["Alice", "Al"],
        {},
        adapter.agent_id,
    )
    with pytest.raises(NotFound):
        await adapter.update_entity(Entity(id=new_id(), names=["Nobody"]))


async def test_worlds_rooms_and_participants_hold_together(adapter: SqlAdapter) -> None:
    world = World(id=new_id(), name="Server", metadata={"roles": {}})
    await adapter.create_world(world)
    await adapter.update_world(
        World(id=world.id, name="Renamed", metadata={"roles": {"u": "OWNER"}})
    )
    stored_world = await adapter.get_world(world.id)
    assert stored_world is not None
    assert (stored_world.name, stored_world.metadata) == ("Renamed", {"roles": {"u": "OWNER"}})
    rooms = [Room(id=new_id(), source="discord", world_id=world.id) for _ in range(2)]
    assert await adapter.create_rooms(rooms) == [r.id for r in rooms]
    assert {r.id for r in await adapter.get_rooms_by_world(world.id)} == {r.id for r in rooms}
    room = rooms[0].id
    await adapter.add_participants_room(["u1", "u2", "u1"], room)
    await adapter.add_participants_room(["u2", "u3"], room)
    assert await adapter.get_participants_for_room(room) == ["u1", "u2", "u3"]
    assert await adapter.get_participant_user_state(room, "u1") is None
    await adapter.set_participant_user_state(room, "u1", ParticipantState.MUTED)
    assert await adapter.get_participant_user_state(room, "u1") is ParticipantState.MUTED
    with pytest.raises(NotFound, match="not a participant"):
        await adapter.set_participant_user_state(room, "stranger", ParticipantState.FOLLOWED)


async def test_the_cache_stores_json_until_it_expires(adapter: SqlAdapter) -> None:
    assert await adapter.get_cache("k") is None
    await adapter.set_cache("k", {"n": 1, "list": [1, 2]})
    await adapter.set_cache("k", {"n": 2})
    assert await adapter.get_cache("k") == {"n": 2}
    await adapter.set_cache("old", "stale", expires_at=now_ms() - 1)
    assert await adapter.get_cache("old") is None
    assert await adapter.delete_cache("k")
    assert not await adapter.delete_cache("k")


async def test_agents_do_not_see_each_others_memories(adapter: SqlAdapter) -> None:
    other = adapter.for_agent(new_id())
    assert await other.create_agent(Agent(id=other.agent_id, name="Other"))
    try:
        await adapter.create_memory(message("shared-room", "mine", at=1), "messages")
        assert await other.get_memories(table_name="messages", room_id="shared-room") == []
        assert await other.count_memories("shared-room") == 0
    finally:
        await other.delete_agent(other.agent_id)


async def test_relationships_are_found_from_either_end_and_filtered_by_tags(
    adapter: SqlAdapter,
) -> None:
    link = Relationship(source_entity_id="alice", target_entity_id="bob", tags=["friend"])
    assert await adapter.create_relationship(link)
    assert not await adapter.create_relationship(
        Relationship(source_entity_id="alice", target_entity_id="bob", tags=["other"])
    )
    await adapter.create_relationship(
        Relationship(source_entity_id="carol", target_entity_id="alice", tags=["colleague"])
    )
    assert [r.target_entity_id for r in await adapter.get_relationships("bob")] == ["bob"]
    assert len(await adapter.get_relationships("alice")) == 2
    [friend] = await adapter.get_relationships("alice", tags=["friend"])
    assert friend.id == link.id
    await adapter.update_relationship(
        Relationship(
            source_entity_id="alice",
            target_entity_id="bob",
            tags=["friend", "close"],
            metadata={"interactions": 3},
        )
    )
    [updated] = await adapter.get_relationships("bob", tags=["close"])
    assert updated.metadata == {"interactions": 3}
    with pytest.raises(NotFound):
        await adapter.update_relationship(
            Relationship(source_entity_id="bob", target_entity_id="nobody")
        )


async def test_logs_are_kept_newest_first_and_filtered(adapter: SqlAdapter) -> None:
    for i, kind in enumerate(["useModel:TEXT_LARGE", "action", "useModel:TEXT_LARGE"]):
        await adapter.log(
            Log(entity_id="user-1", room_id="room-1", type=kind, body={"n": i}, created_at=i)
        )
    models = await adapter.get_logs(type="useModel:TEXT_LARGE")
    assert [entry.body for entry in models] == [{"n": 2}, {"n": 0}]
    everything = await adapter.get_logs(room_id="room-1", count=2)
    assert [entry.body["n"] for entry in everything] == [2, 1]
    await adapter.delete_log(models[0].id)
    assert [entry.body for entry in await adapter.get_logs(type="useModel:TEXT_LARGE")] == [
        {"n": 0}
    ]
