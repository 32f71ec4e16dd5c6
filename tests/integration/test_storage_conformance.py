"""One conformance suite for every ``DatabaseAdapter``: the same assertions on each backend.

Targets: ``SqlAdapter`` on SQLite, ``SqlAdapter`` on Postgres, and
``NatsMemoryClient`` talking to the memory service on a real nats-server
(which stores in SQLite). Each test works as an agent of its own, so tests
share a database without seeing each other's rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import CacheEntry, Connection, Content, TurnCommit
from contracts.records import (
    Agent,
    ChannelType,
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
from shared.errors import BadRequest, Conflict, NotFound
from shared.storage.adapter import DatabaseAdapter
from shared.storage.sql import SqlAdapter
from shared.storage.vectors import to_bytes
from tests.integration.storage_backends import (
    BACKENDS,
    SQL_BACKENDS,
    database_url,
    memory_service_client,
    new_id,
    sql_adapter,
    stored_agent_on,
)

# What test_begin_turn_reports_what_it_created imports from here (until it
# takes the first three from storage_backends).
__all__ = ["memory_service_client", "new_id", "said", "sql_adapter"]

BATCH = 100  # vectors per request: 100 x 384 floats as JSON stay under NATS's 1 MB payload


@pytest.fixture(params=BACKENDS)
async def adapter(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DatabaseAdapter]:
    async with stored_agent_on(request, tmp_path, "Conformance") as db:
        yield db


def message(room_id: str, text: str, *, at: int, embedding: list[float] | None = None) -> Memory:
    return Memory(
        entity_id="user-1",
        room_id=room_id,
        content=Content(text=text),
        created_at=at,
        embedding=embedding,
    )


async def test_an_agent_is_stored_once_and_can_be_updated(adapter: DatabaseAdapter) -> None:
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


async def test_a_memory_round_trips_with_its_content_and_vector(adapter: DatabaseAdapter) -> None:
    memory = Memory(
        entity_id="user-1",
        room_id="room-1",
        world_id="world-1",
        content=Content(text="I live in Paris", actions=["REPLY"], source="cli"),
        embedding=[0.5, -0.25, 1.0],
        metadata={"type": "message", "tags": ["a"]},
    )
    assert await adapter.create_memory(memory, "messages") == memory.id
    stored = await adapter.get_memory_by_id(memory.id, include_embeddings=True)
    assert stored is not None
    assert stored.content == memory.content
    assert stored.embedding == [0.5, -0.25, 1.0]
    assert stored.metadata == {"type": "message", "tags": ["a"]}
    assert (stored.agent_id, stored.world_id, stored.created_at) == (
        adapter.agent_id,
        "world-1",
        memory.created_at,
    )


async def test_storing_the_same_memory_id_twice_keeps_one_row(adapter: DatabaseAdapter) -> None:
    memory = message("room-1", "once", at=1)
    await adapter.create_memory(memory, "messages")
    await adapter.create_memory(message("room-1", "twice", at=2), "messages")
    again = Memory(id=memory.id, entity_id="x", room_id="room-1", content=Content(text="dup"))
    assert await adapter.create_memory(again, "messages") == memory.id
    stored = await adapter.get_memory_by_id(memory.id)
    assert stored is not None
    assert stored.content.text == "once"
    assert await adapter.count_memories("room-1", table_name="messages") == 2


async def test_memories_come_newest_first_filtered_and_paged(adapter: DatabaseAdapter) -> None:
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


async def test_deleting_memories_removes_only_what_was_named(adapter: DatabaseAdapter) -> None:
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


async def test_updating_a_memory_changes_only_the_given_fields(adapter: DatabaseAdapter) -> None:
    memory = message("room-1", "before", at=1)
    await adapter.create_memory(memory, "messages")
    assert await adapter.update_memory(
        memory.id, content=Content(text="after"), metadata={"edited": True}, embedding=[0.0, 2.0]
    )
    stored = await adapter.get_memory_by_id(memory.id, include_embeddings=True)
    assert stored is not None
    assert stored.content.text == "after"
    assert stored.metadata == {"edited": True}
    assert stored.embedding == [0.0, 2.0]
    assert not await adapter.update_memory(new_id(), content=Content(text="nobody"))


async def test_vector_search_matches_brute_force_cosine_top_10(adapter: DatabaseAdapter) -> None:
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((10_000, 384)).astype(np.float32)
    room = new_id()
    memories = [
        message(room, f"v{i}", at=i, embedding=vectors[i].tolist()) for i in range(len(vectors))
    ]
    for start in range(0, len(memories), BATCH):
        await adapter.create_memories(memories[start : start + BATCH], "documents")
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
    adapter: DatabaseAdapter,
) -> None:
    first = message("room-1", "384", at=1, embedding=[0.1] * 384)
    await adapter.create_memory(first, "messages")
    wrong = message("room-1", "1536", at=2, embedding=[0.1] * 1536)
    with pytest.raises(BadRequest, match="1536 dimensions but this agent stores 384") as e:
        await adapter.create_memories([message("room-1", "ok", at=3), wrong], "messages")
    assert e.value.details == {"expected": "384", "got": "1536"}
    with pytest.raises(BadRequest, match="768 dimensions"):
        await adapter.search_memories(table_name="messages", embedding=[0.1] * 768)
    with pytest.raises(BadRequest, match="1024 dimensions"):
        await adapter.ensure_embedding_dimension(1024)
    assert await adapter.count_memories("room-1") == 1
    stored = await adapter.get_memory_by_id(first.id, include_embeddings=True)
    assert stored is not None
    assert stored.embedding is not None
    assert len(stored.embedding) == 384


async def test_entities_are_created_once_and_updated(adapter: DatabaseAdapter) -> None:
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


async def test_worlds_rooms_and_participants_hold_together(adapter: DatabaseAdapter) -> None:
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


async def test_the_cache_stores_json_until_it_expires(adapter: DatabaseAdapter) -> None:
    assert await adapter.get_cache("k") is None
    await adapter.set_cache("k", {"n": 1, "list": [1, 2]})
    await adapter.set_cache("k", {"n": 2})
    assert await adapter.get_cache("k") == {"n": 2}
    await adapter.set_cache("old", "stale", expires_at=now_ms() - 1)
    assert await adapter.get_cache("old") is None
    assert await adapter.delete_cache("k")
    assert not await adapter.delete_cache("k")


async def test_agents_do_not_see_each_others_memories(adapter: DatabaseAdapter) -> None:
    other = adapter.for_agent(new_id())
    assert await other.create_agent(Agent(id=other.agent_id, name="Other"))
    try:
        await adapter.create_memory(message("shared-room", "mine", at=1), "messages")
        assert await other.get_memories(table_name="messages", room_id="shared-room") == []
        assert await other.count_memories("shared-room") == 0
    finally:
        await other.delete_agent(other.agent_id)


async def test_relationships_are_found_from_either_end_and_filtered_by_tags(
    adapter: DatabaseAdapter,
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


async def test_logs_are_kept_newest_first_and_filtered(adapter: DatabaseAdapter) -> None:
    for i, kind in enumerate(["useModel:TEXT_LARGE", "action", "useModel:TEXT_LARGE"]):
        await adapter.log(
            Log(entity_id="user-1", room_id="room-1", type=kind, body={"n": i}, created_at=i)
        )
    models = await adapter.get_logs(log_type="useModel:TEXT_LARGE")
    assert [entry.body for entry in models] == [{"n": 2}, {"n": 0}]
    everything = await adapter.get_logs(room_id="room-1", count=2)
    assert [entry.body["n"] for entry in everything] == [2, 1]
    await adapter.delete_log(models[0].id)
    assert [entry.body for entry in await adapter.get_logs(log_type="useModel:TEXT_LARGE")] == [
        {"n": 0}
    ]


async def test_text_search_finds_memories_containing_the_words(adapter: DatabaseAdapter) -> None:
    room = new_id()
    texts = ["The capital of France is Paris", "I like cats", "paris in spring", "100% sure"]
    await adapter.create_memories([message(room, t, at=i) for i, t in enumerate(texts)], "messages")
    found = await adapter.search_memories_by_text(
        table_name="messages", query="PARIS", room_id=room
    )
    assert [m.content.text for m in found] == ["paris in spring", "The capital of France is Paris"]
    literal = await adapter.search_memories_by_text(table_name="messages", query="0%", room_id=room)
    assert [m.content.text for m in literal] == ["100% sure"]
    assert await adapter.search_memories_by_text(table_name="facts", query="paris") == []


async def test_entities_are_found_by_name(adapter: DatabaseAdapter) -> None:
    await adapter.create_entities(
        [
            Entity(id="e-ada", names=["Ada Lovelace", "ada"]),
            Entity(id="e-alan", names=["Alan Turing"]),
            Entity(id="e-zoe", names=["Zoé"]),
        ]
    )
    assert [e.id for e in await adapter.get_entities_by_names(["ADA", "nobody"])] == ["e-ada"]
    assert {e.id for e in await adapter.search_entities_by_name("a")} == {"e-ada", "e-alan"}
    assert [e.id for e in await adapter.search_entities_by_name("zoé")] == ["e-zoe"]
    assert len(await adapter.search_entities_by_name("a", limit=1)) == 1


async def test_components_belong_to_an_entity_by_type(adapter: DatabaseAdapter) -> None:
    contact = Component(entity_id="e1", type="contact", data={"email": "a@b.c"}, world_id="w1")
    assert await adapter.create_component(contact)
    assert not await adapter.create_component(contact)
    await adapter.create_component(Component(entity_id="e1", type="prefs", data={}))
    found = await adapter.get_component("e1", "contact")
    assert found is not None
    assert found.data == {"email": "a@b.c"}
    assert await adapter.get_component("e1", "contact", world_id="other") is None
    await adapter.update_component(
        Component(id=contact.id, entity_id="e1", type="contact", data={"email": "new@b.c"})
    )
    assert [c.type for c in await adapter.get_components("e1")] == ["contact", "prefs"]
    updated = await adapter.get_component("e1", "contact")
    assert updated is not None
    assert updated.data == {"email": "new@b.c"}
    await adapter.delete_component(contact.id)
    assert await adapter.get_component("e1", "contact") is None
    with pytest.raises(NotFound):
        await adapter.update_component(Component(entity_id="e1", type="gone"))


async def test_tasks_are_found_by_room_tags_and_name(adapter: DatabaseAdapter) -> None:
    daily = Task(name="digest", room_id="r1", tags=["queue", "repeat"], metadata={"every": 1})
    once = Task(name="remind", room_id="r1", tags=["queue"], created_at=daily.created_at + 1)
    await adapter.create_task(daily)
    await adapter.create_task(once)
    assert [t.name for t in await adapter.get_tasks(room_id="r1", tags=["queue"])] == [
        "digest",
        "remind",
    ]
    assert [t.name for t in await adapter.get_tasks(tags=["repeat"])] == ["digest"]
    assert [t.id for t in await adapter.get_tasks_by_name("remind")] == [once.id]
    await adapter.update_task(
        Task(id=daily.id, name="digest", room_id="r1", tags=["queue"], metadata={"every": 2})
    )
    stored = await adapter.get_task(daily.id)
    assert stored is not None
    assert (stored.tags, stored.metadata, stored.created_at) == (
        ["queue"],
        {"every": 2},
        daily.created_at,
    )
    assert stored.updated_at >= daily.updated_at
    await adapter.delete_task(once.id)
    assert await adapter.get_task(once.id) is None
    with pytest.raises(NotFound):
        await adapter.update_task(Task(name="ghost"))


async def test_rooms_and_worlds_can_be_changed_and_removed(adapter: DatabaseAdapter) -> None:
    world = World(id=new_id(), name="Guild")
    await adapter.create_world(world)
    room = Room(id=new_id(), name="general", source="discord", world_id=world.id)
    lone = Room(id=new_id(), name="dm", source="cli")
    await adapter.create_rooms([room, lone])
    await adapter.update_room(Room(id=room.id, name="lobby", source="discord", world_id=world.id))
    [renamed] = await adapter.get_rooms_by_ids([room.id])
    assert renamed.name == "lobby"
    await adapter.add_participants_room(["u1"], room.id)
    await adapter.add_participants_room(["u1"], lone.id)
    await adapter.create_memory(message(room.id, "hello", at=1), "messages")
    assert await adapter.get_rooms_for_participant("u1") == [room.id, lone.id]
    assert [w.id for w in await adapter.get_all_worlds()] == [world.id]
    await adapter.remove_world(world.id)
    assert await adapter.get_world(world.id) is None
    assert [r.id for r in await adapter.get_rooms_by_ids([room.id, lone.id])] == [lone.id]
    assert await adapter.count_memories(room.id) == 0
    assert await adapter.get_rooms_for_participant("u1") == [lone.id]
    await adapter.delete_room(lone.id)
    assert await adapter.get_rooms_by_ids([lone.id]) == []
    with pytest.raises(NotFound):
        await adapter.update_room(lone)


async def test_participants_can_leave_a_room(adapter: DatabaseAdapter) -> None:
    room = Room(id=new_id())
    await adapter.create_rooms([room])
    await adapter.add_participants_room(["u1", "u2"], room.id)
    assert await adapter.is_room_participant(room.id, "u1")
    assert await adapter.remove_participant("u1", room.id)
    assert not await adapter.remove_participant("u1", room.id)
    assert not await adapter.is_room_participant(room.id, "u1")
    assert await adapter.get_participants_for_room(room.id) == ["u2"]


async def test_a_memory_naming_another_agent_is_stored_as_the_adapters_agents(
    adapter: DatabaseAdapter,
) -> None:
    named = Memory(agent_id=new_id(), entity_id="u", room_id="r", content=Content(text="?"))
    await adapter.create_memory(named, "messages")
    stored = await adapter.get_memory_by_id(named.id)
    assert stored is not None
    assert stored.agent_id == adapter.agent_id
    assert await adapter.for_agent(named.agent_id or "").get_memory_by_id(named.id) is None


async def test_a_memory_for_an_unknown_agent_is_a_conflict_not_a_crash(
    adapter: DatabaseAdapter,
) -> None:
    stranger = adapter.for_agent(new_id())
    memory = Memory(entity_id="u", room_id="r", content=Content(text="?"))
    with pytest.raises(Conflict, match="does not exist"):
        await stranger.create_memory(memory, "messages")
    assert await stranger.get_memory_by_id(memory.id) is None


# -- turns: one read and one write per turn ------------------------------------


def said(entity_id: str, room_id: str, text: str, *, at: int, **fields: Any) -> Memory:
    return Memory(
        entity_id=entity_id, room_id=room_id, content=Content(text=text), created_at=at, **fields
    )


async def test_a_first_message_creates_its_sender_world_room_and_participants(
    adapter: DatabaseAdapter,
) -> None:
    room, world = new_id(), new_id()
    inbound = said("alice", room, "hello", at=1, world_id=world)
    connection = Connection(
        entity_names=["Alice"],
        source="discord",
        room_type=ChannelType.GROUP,
        room_name="general",
        world_name="Guild",
        channel_id="c-1",
        message_server_id="s-1",
        entity_metadata={"username": "al"},
    )
    context = await adapter.begin_turn(inbound, connection)
    assert context.message_stored
    assert context.agent is not None
    assert context.agent.id == adapter.agent_id
    assert (context.room.id, context.room.name, context.room.type, context.room.source) == (
        room,
        "general",
        ChannelType.GROUP,
        "discord",
    )
    assert (context.room.channel_id, context.room.world_id) == ("c-1", world)
    assert context.world is not None
    assert (context.world.id, context.world.name, context.world.message_server_id) == (
        world,
        "Guild",
        "s-1",
    )
    assert context.participants == ["alice", adapter.agent_id]
    [alice] = context.entities  # the agent has no entity of its own in this test
    assert (alice.id, alice.names, alice.metadata) == (
        "alice",
        ["Alice"],
        {"discord": {"username": "al"}},
    )
    assert [m.id for m in context.recent_messages] == [inbound.id]
    assert context.participant_state is None
    assert (context.outcome, context.cache) == (None, {})

    assert await adapter.get_world(world) == context.world
    assert await adapter.get_rooms_by_ids([room]) == [context.room]
    assert await adapter.get_participants_for_room(room) == ["alice", adapter.agent_id]
    assert await adapter.get_entities_by_ids(["alice"]) == [alice]
    stored = await adapter.get_memory_by_id(inbound.id)
    assert stored is not None
    assert (stored.content.text, stored.agent_id) == ("hello", adapter.agent_id)


async def test_a_room_without_a_world_id_gets_a_world_of_its_own_id(
    adapter: DatabaseAdapter,
) -> None:
    room = new_id()
    context = await adapter.begin_turn(said("u", room, "hi", at=1), Connection())
    assert context.world is not None
    assert (context.world.id, context.world.name, context.room.world_id) == (room, room, room)
    assert (context.room.name, context.room.type, context.room.source) == (
        room,
        ChannelType.DM,
        "unknown",
    )
    assert [(e.id, e.names) for e in context.entities] == [("u", ["u"])]


async def test_the_same_message_begun_twice_is_stored_once_and_nothing_is_duplicated(
    adapter: DatabaseAdapter,
) -> None:
    room = new_id()
    inbound = said("alice", room, "hello", at=1)
    connection = Connection(entity_names=["Alice"])
    assert (await adapter.begin_turn(inbound, connection)).message_stored
    resent = msgspec.structs.replace(inbound, content=Content(text="changed"))
    again = await adapter.begin_turn(resent, connection)
    assert not again.message_stored
    assert [m.content.text for m in again.recent_messages] == ["hello"]
    assert again.participants == ["alice", adapter.agent_id]
    assert await adapter.count_memories(room) == 1
    assert await adapter.get_participants_for_room(room) == ["alice", adapter.agent_id]
    assert [w.id for w in await adapter.get_all_worlds()] == [room]
    assert len(await adapter.get_rooms_by_ids([room])) == 1
    [alice] = await adapter.get_entities_by_ids(["alice"])
    assert alice.names == ["Alice"]


async def test_a_known_sender_gets_new_names_and_metadata_merged_in(
    adapter: DatabaseAdapter,
) -> None:
    room = new_id()
    first = Connection(entity_names=["Alice"], source="discord", entity_metadata={"id": "1"})
    await adapter.begin_turn(said("alice", room, "one", at=1), first)
    later = Connection(
        entity_names=["Al", "Alice"], source="discord", entity_metadata={"nick": "a"}
    )
    context = await adapter.begin_turn(said("alice", room, "two", at=2), later)
    [alice] = [e for e in context.entities if e.id == "alice"]
    assert alice.names == ["Alice", "Al"]
    assert alice.metadata == {"discord": {"id": "1", "nick": "a"}}
    assert await adapter.get_entities_by_ids(["alice"]) == [alice]


async def test_a_turn_reads_recent_messages_newest_first_without_vectors_and_their_authors(
    adapter: DatabaseAdapter,
) -> None:
    room = new_id()
    agent = adapter.agent_id
    await adapter.create_entities(
        [Entity(id=agent, names=["Agent"]), Entity(id="bob", names=["Bob"])]
    )
    # Bob spoke in the room without being a participant (he left since).
    earlier = [said("bob", room, f"m{i}", at=10 + i, embedding=[1.0, float(i)]) for i in range(5)]
    await adapter.create_memories(earlier, "messages")
    await adapter.create_memory(said("bob", room, "a fact", at=99), "facts")
    inbound = said("alice", room, "now", at=100, embedding=[0.5, 0.5])
    context = await adapter.begin_turn(inbound, Connection(entity_names=["Alice"]), recent_count=3)
    assert [m.content.text for m in context.recent_messages] == ["now", "m4", "m3"]
    assert all(m.embedding is None for m in context.recent_messages)
    assert context.participants == ["alice", agent]
    assert [e.id for e in context.entities] == ["alice", agent, "bob"]
    stored = await adapter.get_memory_by_id(inbound.id, include_embeddings=True)
    assert stored is not None
    assert stored.embedding == [0.5, 0.5]


async def test_a_turn_reads_its_outcome_cache_values_and_the_agents_state(
    adapter: DatabaseAdapter,
) -> None:
    room = new_id()
    await adapter.begin_turn(said("alice", room, "first", at=1), Connection())
    await adapter.set_participant_user_state(room, adapter.agent_id, ParticipantState.MUTED)
    await adapter.set_cache("outcome:m2", {"status": "completed"})
    await adapter.set_cache("reflection", "m0")
    await adapter.set_cache("stale", 1, expires_at=now_ms() - 1)
    context = await adapter.begin_turn(
        said("alice", room, "second", at=2),
        Connection(),
        outcome_key="outcome:m2",
        cache_keys=["reflection", "stale", "absent"],
    )
    assert context.outcome == {"status": "completed"}
    assert context.cache == {"reflection": "m0"}
    assert context.participant_state is ParticipantState.MUTED
    none = await adapter.begin_turn(
        said("alice", room, "third", at=3), Connection(), outcome_key="stale"
    )
    assert (none.outcome, none.cache) == (None, {})


async def test_a_turn_commit_stores_everything_at_once(adapter: DatabaseAdapter) -> None:
    room, agent = new_id(), adapter.agent_id
    inbound = said("alice", room, "hello", at=1)
    await adapter.begin_turn(inbound, Connection())
    await adapter.create_relationship(
        Relationship(source_entity_id="alice", target_entity_id=agent, tags=["acquaintance"])
    )
    reply = said(agent, room, "hi back", at=2, embedding=[1.0, 0.0])
    fact = said("alice", room, "alice likes tea", at=3, embedding=[0.0, 1.0])
    commit = TurnCommit(
        memories=[reply, msgspec.structs.replace(inbound, content=Content(text="changed"))],
        facts=[fact],
        logs=[Log(entity_id=agent, room_id=room, type="action", body={"n": 1})],
        cache=[
            CacheEntry(key="outcome", value={"done": True}),
            CacheEntry(key="gone", value=1, expires_at=now_ms() - 1),
        ],
        relationships=[
            Relationship(
                source_entity_id="alice",
                target_entity_id=agent,
                tags=["friend"],
                metadata={"interactions": 2},
            ),
            Relationship(source_entity_id=agent, target_entity_id="bob", tags=["new"]),
        ],
    )
    await adapter.commit_turn(commit)
    messages = await adapter.get_memories(table_name="messages", room_id=room)
    assert [m.content.text for m in messages] == ["hi back", "hello"]
    [stored_fact] = await adapter.get_memories(
        table_name="facts", room_id=room, include_embeddings=True
    )
    assert (stored_fact.content.text, stored_fact.embedding) == ("alice likes tea", [0.0, 1.0])
    assert [entry.body for entry in await adapter.get_logs(room_id=room)] == [{"n": 1}]
    assert await adapter.get_cache("outcome") == {"done": True}
    assert await adapter.get_cache("gone") is None
    [link] = await adapter.get_relationships("alice")
    assert (link.tags, link.metadata) == (["friend"], {"interactions": 2})
    [new] = await adapter.get_relationships("bob")
    assert (new.source_entity_id, new.tags) == (agent, ["new"])

    await adapter.commit_turn(commit)  # a redelivered turn writes nothing twice
    assert await adapter.count_memories(room) == 3
    assert len(await adapter.get_logs(room_id=room)) == 1
    assert len(await adapter.get_relationships(agent)) == 2


async def test_a_turn_commit_with_a_wrong_dimension_stores_nothing(
    adapter: DatabaseAdapter,
) -> None:
    room = new_id()
    await adapter.create_memory(said("alice", room, "first", at=1, embedding=[0.1] * 4), "messages")
    wrong = TurnCommit(
        memories=[said(adapter.agent_id, room, "reply", at=2, embedding=[0.2] * 4)],
        facts=[said("alice", room, "fact", at=3, embedding=[0.3] * 3)],
        logs=[Log(entity_id="alice", room_id=room, type="action")],
        cache=[CacheEntry(key="k", value=1)],
        relationships=[Relationship(source_entity_id="alice", target_entity_id="bob")],
    )
    with pytest.raises(BadRequest, match="3 dimensions but this agent stores 4") as raised:
        await adapter.commit_turn(wrong)
    assert raised.value.details == {"expected": "4", "got": "3"}
    assert await adapter.count_memories(room) == 1
    assert await adapter.get_logs(room_id=room) == []
    assert await adapter.get_cache("k") is None
    assert await adapter.get_relationships("alice") == []
    await adapter.commit_turn(TurnCommit(memories=wrong.memories, cache=wrong.cache))
    assert await adapter.count_memories(room) == 2
    assert await adapter.get_cache("k") == 1


async def test_vectors_are_set_in_one_batch_and_found_by_search(adapter: DatabaseAdapter) -> None:
    room = new_id()
    memories = [said("u", room, t, at=i) for i, t in enumerate(["north", "east", "south"])]
    await adapter.create_memories(memories, "messages")
    vectors = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]]
    ids = [m.id for m in memories]
    stored = await adapter.set_embeddings(
        [*ids, "no-such-memory"], [to_bytes(v) for v in [*vectors, [1.0, 1.0, 1.0]]]
    )
    assert stored == 3
    found = await adapter.get_memories_by_ids(ids, include_embeddings=True)
    assert [m.embedding for m in found] == vectors
    [best] = await adapter.search_memories(
        table_name="messages", embedding=[0.9, 0.1, 0.0], count=1, room_id=room
    )
    assert best.content.text == "north"
    assert await adapter.set_embeddings([ids[0]], [to_bytes([0.0, 0.0, 1.0])]) == 1
    replaced = await adapter.get_memory_by_id(ids[0], include_embeddings=True)
    assert replaced is not None
    assert replaced.embedding == [0.0, 0.0, 1.0]
    assert await adapter.set_embeddings([], []) == 0
    other = adapter.for_agent(new_id())
    assert await other.create_agent(Agent(id=other.agent_id, name="Other"))
    try:
        assert await other.set_embeddings([ids[1]], [to_bytes([5.0, 5.0, 5.0])]) == 0
    finally:
        await other.delete_agent(other.agent_id)
    kept = await adapter.get_memory_by_id(ids[1], include_embeddings=True)
    assert kept is not None
    assert kept.embedding == [0.0, 1.0, 0.0]


async def test_vectors_of_another_size_or_shape_are_refused_and_nothing_is_stored(
    adapter: DatabaseAdapter,
) -> None:
    room = new_id()
    first, second = said("u", room, "a", at=1), said("u", room, "b", at=2)
    await adapter.create_memories([first, second], "messages")
    assert await adapter.set_embeddings([first.id], [to_bytes([1.0, 2.0, 3.0])]) == 1
    with pytest.raises(BadRequest, match="5 dimensions but this agent stores 3") as raised:
        await adapter.set_embeddings(
            [first.id, second.id], [to_bytes([9.0, 9.0, 9.0]), to_bytes([1.0] * 5)]
        )
    assert raised.value.details == {"expected": "3", "got": "5"}
    with pytest.raises(BadRequest, match="same length; got 2 memory_ids and 1 vectors"):
        await adapter.set_embeddings([first.id, second.id], [to_bytes([9.0, 9.0, 9.0])])
    with pytest.raises(BadRequest, match="not float32"):
        await adapter.set_embeddings([second.id], [b"\x00\x00\x80"])
    stored = await adapter.get_memories_by_ids([first.id, second.id], include_embeddings=True)
    assert [m.embedding for m in stored] == [[1.0, 2.0, 3.0], None]


async def test_reads_carry_no_vector_unless_asked(adapter: DatabaseAdapter) -> None:
    room = new_id()
    memories = [said("u", room, f"m{i}", at=i, embedding=[1.0, float(i)]) for i in range(3)]
    await adapter.create_memories(memories, "messages")
    ids = [m.id for m in memories]

    async def reads(include_embeddings: bool) -> list[list[Memory]]:
        one = await adapter.get_memory_by_id(ids[0], include_embeddings=include_embeddings)
        return [
            await adapter.get_memories(
                table_name="messages", room_id=room, include_embeddings=include_embeddings
            ),
            await adapter.get_memories_by_ids(ids, include_embeddings=include_embeddings),
            [one] if one is not None else [],
            await adapter.get_memories_by_room_ids(
                table_name="messages", room_ids=[room], include_embeddings=include_embeddings
            ),
            await adapter.search_memories(
                table_name="messages",
                embedding=[1.0, 1.0],
                room_id=room,
                include_embeddings=include_embeddings,
            ),
            await adapter.search_memories_by_text(
                table_name="messages",
                query="m",
                room_id=room,
                include_embeddings=include_embeddings,
            ),
        ]

    without, with_vectors = await reads(False), await reads(True)
    assert [len(read) for read in without] == [3, 3, 1, 3, 3, 3]
    assert all(m.embedding is None for read in without for m in read)
    assert [len(read) for read in with_vectors] == [3, 3, 1, 3, 3, 3]
    by_id = {m.id: m.embedding for m in memories}
    assert all(m.embedding == by_id[m.id] for read in with_vectors for m in read)
    assert [m.similarity for m in without[4]] == [m.similarity for m in with_vectors[4]]


# -- the SQL adapter: transactions and statements -------------------------------


@dataclass
class Statements:
    """What an engine ran: its SQL statements and how many transactions it began."""

    sql: list[str] = field(default_factory=list)
    transactions: int = 0

    def clear(self) -> None:
        self.sql.clear()
        self.transactions = 0


@contextmanager
def recorded(engine: AsyncEngine) -> Iterator[Statements]:
    seen = Statements()

    def on_statement(*args: Any) -> None:
        seen.sql.append(args[2])

    def on_begin(connection: Any) -> None:
        seen.transactions += 1

    event.listen(engine.sync_engine, "before_cursor_execute", on_statement)
    event.listen(engine.sync_engine, "begin", on_begin)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", on_statement)
        event.remove(engine.sync_engine, "begin", on_begin)


@pytest.fixture(params=SQL_BACKENDS)
async def sql(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlAdapter]:
    """``SqlAdapter`` on each database, for an agent (and its entity) of this test's own."""
    db = SqlAdapter.from_url(database_url(request, tmp_path), new_id())
    await db.init()
    await db.create_agent(Agent(id=db.agent_id, name="Counted"))
    await db.create_entities([Entity(id=db.agent_id, names=["Counted"])])
    try:
        yield db
    finally:
        await db.delete_agent(db.agent_id)
        await db.close()


async def test_a_turn_is_one_transaction_to_begin_and_one_to_commit(sql: SqlAdapter) -> None:
    room, agent = new_id(), sql.agent_id
    connection = Connection(entity_names=["Alice"], source="discord")
    with recorded(sql.engine) as seen:
        await sql.begin_turn(said("alice", room, "first", at=1), connection, cache_keys=["k"])
        assert seen.transactions == 1
        assert len(seen.sql) <= 14  # the sender, room and world are new
        seen.clear()
        context = await sql.begin_turn(
            said("alice", room, "second", at=2), connection, outcome_key="o", cache_keys=["k"]
        )
        assert seen.transactions == 1
        assert len(seen.sql) <= 7  # agent, people, room+world, message, recent, cache, tasks
        assert [e.id for e in context.entities] == ["alice", agent]
        seen.clear()
        await sql.commit_turn(
            TurnCommit(
                memories=[said(agent, room, "reply", at=3, embedding=[1.0, 0.0])],
                facts=[said("alice", room, "fact", at=4, embedding=[0.0, 1.0])],
                logs=[Log(entity_id=agent, room_id=room, type="action")],
                cache=[CacheEntry(key="o", value={"status": "completed"})],
                relationships=[Relationship(source_entity_id="alice", target_entity_id=agent)],
            )
        )
        assert seen.transactions == 1
        assert len(seen.sql) <= 8  # the first vectors also fix the agent's dimension
        seen.clear()
        await sql.commit_turn(
            TurnCommit(
                memories=[said(agent, room, "again", at=5, embedding=[1.0, 1.0])],
                logs=[Log(entity_id=agent, room_id=room, type="action")],
                cache=[CacheEntry(key="o", value={"status": "completed"})],
            )
        )
        assert seen.transactions == 1
        assert len(seen.sql) <= 5  # memories, agent (dimension), vectors, logs, cache


async def test_reads_without_vectors_never_touch_the_vector_table(sql: SqlAdapter) -> None:
    room = new_id()
    memories = [said("u", room, f"m{i}", at=i, embedding=[1.0, float(i)]) for i in range(3)]
    await sql.create_memories(memories, "messages")
    with recorded(sql.engine) as seen:
        await sql.get_memories(table_name="messages", room_id=room)
        await sql.get_memories_by_ids([m.id for m in memories])
        await sql.get_memories_by_room_ids(table_name="messages", room_ids=[room])
        await sql.search_memories_by_text(table_name="messages", query="m", room_id=room)
        await sql.begin_turn(said("u", room, "hi", at=9), Connection())
    assert seen.sql
    assert not [statement for statement in seen.sql if "embeddings" in statement]
    with recorded(sql.engine) as seen:
        await sql.get_memories(table_name="messages", room_id=room, include_embeddings=True)
    assert [statement for statement in seen.sql if "embeddings" in statement]


async def test_replicas_beginning_turns_in_a_new_room_at_once_all_succeed(
    sql: SqlAdapter,
) -> None:
    # Two engines on one database, as two replicas: "create if absent" races.
    url = sql.engine.url.render_as_string(hide_password=False)
    other = SqlAdapter.from_url(url, sql.agent_id)
    room = new_id()
    try:
        contexts = await asyncio.gather(
            *(
                replica.begin_turn(said("alice", room, f"m{i}", at=i), Connection(), recent_count=0)
                for i in range(10)
                for replica in (sql, other)
            )
        )
    finally:
        await other.close()
    assert all(c.message_stored for c in contexts)
    assert await sql.count_memories(room) == 20
    assert sorted(await sql.get_participants_for_room(room)) == sorted(["alice", sql.agent_id])
    assert len(await sql.get_entities_by_ids(["alice"])) == 1
    assert len(await sql.get_rooms_by_ids([room])) == 1
    assert await sql.get_world(room) is not None
