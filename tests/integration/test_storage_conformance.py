"""One conformance suite for every ``DatabaseAdapter``: the same assertions on each backend.

Targets: ``SqlAdapter`` on SQLite, ``SqlAdapter`` on Postgres, and
``NatsMemoryClient`` talking to the memory service on a real nats-server
(which stores in SQLite). Each test works as an agent of its own, so tests
share a database without seeing each other's rows.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import numpy as np
import pytest

from contracts import Content, Subjects
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
from services.memory.main import create_broker_for
from shared.bus import create_broker, start_serving
from shared.config import Settings
from shared.errors import BadRequest, Conflict, NotFound
from shared.storage.adapter import DatabaseAdapter
from shared.storage.client import memory_client
from shared.storage.sql import SqlAdapter

BATCH = 100  # vectors per request: 100 x 384 floats as JSON stay under NATS's 1 MB payload


def new_id() -> str:
    return uuid.uuid4().hex


@asynccontextmanager
async def sql_adapter(url: str) -> AsyncIterator[DatabaseAdapter]:
    db = SqlAdapter.from_url(url, new_id())
    await db.init()
    try:
        yield db
    finally:
        await db.close()


@asynccontextmanager
async def memory_service_client(
    nats_url: str, subjects: Subjects, database_url: str
) -> AsyncIterator[DatabaseAdapter]:
    settings = Settings(nats_url=nats_url, eliza_ns=subjects.namespace, database_url=database_url)
    async with sql_adapter(database_url) as storage:
        service = create_broker_for(settings, storage)  # type: ignore[arg-type]
        client = create_broker(nats_url, name="conformance-client")
        async with service, client:
            await start_serving(service)
            await client.connect()
            yield memory_client(client, agent_id=new_id(), subjects=subjects)


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
        assert await db.create_agent(Agent(id=db.agent_id, name="Conformance"))
        try:
            yield db
        finally:
            await db.delete_agent(db.agent_id)


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
    stored = await adapter.get_memory_by_id(memory.id)
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
    stored = await adapter.get_memory_by_id(first.id)
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


async def test_a_memory_for_an_unknown_agent_is_a_conflict_not_a_crash(
    adapter: DatabaseAdapter,
) -> None:
    stranger = Memory(agent_id=new_id(), entity_id="u", room_id="r", content=Content(text="?"))
    with pytest.raises(Conflict, match="does not exist"):
        await adapter.create_memory(stranger, "messages")
    assert await adapter.get_memory_by_id(stranger.id) is None
