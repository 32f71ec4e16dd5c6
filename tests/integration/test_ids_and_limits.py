"""Data integrity at the edge: UUID and platform ids, limits on write, per-agent rooms, backlogs.

What a user writes is what they read back, for every agent, after a restart,
on SQLite and Postgres (and through the memory service where storage is
involved); what cannot be stored is refused with a ``BadRequest`` naming the
field, and the room goes on working.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts import Content, Subjects
from contracts.content import MAX_TEXT_LENGTH
from contracts.message import create_unique_uuid, is_id
from contracts.records import Agent, ChannelType, Memory, Room, World
from services.memory.main import create_broker_for
from shared.agent.character import Character, CharacterError
from shared.agent.edge import inbound
from shared.agent.embedding_queue import EmbeddingQueue
from shared.agent.runtime import AgentRuntime
from shared.agent.types import Action, ActionResult, Plugin
from shared.bus import create_broker, start_serving
from shared.config import Settings
from shared.errors import BadRequest
from shared.storage.adapter import DatabaseAdapter
from shared.storage.client import memory_client
from shared.storage.sql import SqlAdapter
from tests.scripted import ScriptedModel, embed, plan


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database for the test: a SQLite file of its own, or the shared Postgres."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'agent.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@asynccontextmanager
async def stored_agent(url: str, agent_id: str | None = None) -> AsyncIterator[SqlAdapter]:
    db = SqlAdapter.from_url(url, agent_id or str(uuid.uuid4()))
    await db.init()
    assert await db.create_agent(Agent(id=db.agent_id, name="Integrity"))
    try:
        yield db
    finally:
        await db.delete_agent(db.agent_id)
        await db.close()


@asynccontextmanager
async def through_memory_service(
    nats_url: str, subjects: Subjects, url: str
) -> AsyncIterator[DatabaseAdapter]:
    settings_ = Settings(nats_url=nats_url, eliza_ns=subjects.namespace, database_url=url)
    async with stored_agent(url) as storage:
        service = create_broker_for(settings_, storage)
        client = create_broker(nats_url, name="integrity-client")
        async with service, client:
            await start_serving(service)
            await client.connect()
            remote = memory_client(client, agent_id=str(uuid.uuid4()), subjects=subjects)
            assert await remote.create_agent(Agent(id=remote.agent_id, name="Remote"))
            try:
                yield remote
            finally:
                await remote.delete_agent(remote.agent_id)


@pytest.fixture(params=["sqlite", "postgres", "nats"])
async def adapter(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DatabaseAdapter]:
    sqlite_url = f"sqlite:///{tmp_path / 'agent.db'}"
    target: AbstractAsyncContextManager[DatabaseAdapter]
    if request.param == "sqlite":
        target = stored_agent(sqlite_url)
    elif request.param == "postgres":
        target = stored_agent(request.getfixturevalue("postgres_url"))
    else:
        nats_url = request.getfixturevalue("nats_url")
        target = through_memory_service(nats_url, request.getfixturevalue("subjects"), sqlite_url)
    async with target as db:
        yield db


def runtime_on(url: str, *plugins: Plugin, name: str | None = None) -> AgentRuntime:
    return AgentRuntime(
        character=Character(name=name or f"Ada-{uuid.uuid4().hex[:8]}"),
        plugins=list(plugins),
        settings={"DATABASE_URL": url},
    )


# -- uuid.UUID ids ------------------------------------------------------------


async def test_uuid_ids_are_stored_as_their_text_and_found_by_uuid_or_text(
    adapter: DatabaseAdapter,
) -> None:
    room, world, user = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    memory = Memory(
        entity_id=user,  # type: ignore[arg-type]  # a uuid.UUID, as elizaOS users write
        room_id=room,  # type: ignore[arg-type]
        world_id=world,  # type: ignore[arg-type]
        content=Content(text="hello there"),
    )
    await adapter.create_memory(memory, "messages")
    ask: Any = adapter  # the operations take uuid.UUID at run time; their types say str
    by_uuid = await ask.get_memories(table_name="messages", room_id=room)
    by_text = await adapter.get_memories(table_name="messages", room_id=str(room))
    assert [m.id for m in by_uuid] == [m.id for m in by_text] == [memory.id]
    assert (by_uuid[0].room_id, by_uuid[0].entity_id) == (str(room), str(user))
    assert await ask.get_memory_by_id(uuid.UUID(memory.id)) == by_text[0]
    assert await ask.count_memories(room) == 1
    await adapter.create_world(World(id=world))  # type: ignore[arg-type]
    await adapter.create_rooms([Room(id=room, world_id=world)])  # type: ignore[arg-type]
    await ask.add_participants_room([user], room)
    assert await ask.get_participants_for_room(room) == [str(user)]
    assert [r.id for r in await ask.get_rooms_by_world(world)] == [str(room)]
    assert (await ask.get_world(world)).id == str(world)


async def test_a_runtime_takes_uuid_ids_for_the_agent_and_the_message(
    database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    agent_id = uuid.uuid4()
    runtime = AgentRuntime(
        character=Character(name="Quick", id=agent_id),  # type: ignore[arg-type]
        plugins=[ScriptedModel(large=[plan("Hi!")]).plugin()],
        settings={"DATABASE_URL": database_url},
    )
    await runtime.initialize()
    try:
        assert runtime.agent_id == str(agent_id)
        room = uuid.uuid4()
        result = await runtime.message_service.handle_message(
            runtime,
            Memory(entity_id=uuid.uuid4(), room_id=room, content=Content(text="Hello")),  # type: ignore[arg-type]
        )
        assert result.status == "completed"
        stored = await runtime.get_memories(table_name="messages", room_id=room)  # type: ignore[arg-type]
        assert [m.content.text for m in stored] == ["Hi!", "Hello"]
    finally:
        await runtime.stop()


# -- platform ids -------------------------------------------------------------

PLATFORM_IDS = ["alice@example.com", "discord:123 general", "x" * 80, 12345, "élève ☕"]


@pytest.mark.parametrize("platform_id", PLATFORM_IDS, ids=repr)
async def test_a_platform_id_of_any_form_is_mapped_and_the_room_stays_readable(
    database_url: str, platform_id: Any
) -> None:
    runtime = runtime_on(database_url, ScriptedModel(default=plan("ok")).plugin())
    await runtime.initialize()
    try:
        for text in ("hello", "again"):
            message = Memory(entity_id=platform_id, room_id=platform_id, content=Content(text=text))
            result = await runtime.message_service.handle_message(runtime, message)
            assert result.status == "completed"
        given = str(platform_id)  # an int is its decimal text, a valid id as it is
        room_id = given if is_id(given) else create_unique_uuid(runtime.agent_id, given)
        stored = await runtime.get_memories(table_name="messages", room_id=room_id)
        assert [m.content.text for m in stored] == ["ok", "again", "ok", "hello"]
        assert stored[-1].entity_id == room_id  # the same platform id, the same agent id
        if room_id != given:
            assert stored[-1].metadata["platform_ids"]["room_id"] == given
        assert await runtime.search_entities_by_name(runtime.character.name)
    finally:
        await runtime.stop()


def test_an_empty_or_control_character_platform_id_is_refused_naming_the_field() -> None:
    for bad in ("", "line\nbreak", "nul\x00", "y" * 2_000):
        with pytest.raises(BadRequest) as refused:
            inbound("agent-1", Memory(entity_id="u", room_id=bad, content=Content(text="hi")))
        assert refused.value.details["field"] == "room_id"


platform_ids = st.one_of(
    st.uuids(),
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=90),
    st.emails(),
    st.integers(min_value=0),
    st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z"),
)


@given(platform_id=platform_ids, other=platform_ids)
def test_every_platform_id_maps_to_a_valid_id_per_agent(platform_id: Any, other: Any) -> None:
    message = Memory(entity_id=platform_id, room_id=other, id=str(platform_id), content=Content())
    for_a = inbound("agent-a", message)
    assert all(is_id(i) for i in (for_a.id, for_a.entity_id, for_a.room_id))
    assert inbound("agent-a", message) == for_a  # deterministic
    for_b = inbound("agent-b", message)
    if not is_id(str(other)):
        assert for_b.room_id != for_a.room_id  # two agents, two ids


# -- what is written is readable ------------------------------------------------

ids = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z"),
    st.text(min_size=0, max_size=80),
    st.emails(),
    st.integers().map(str),
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(room_id=ids, entity_id=ids, text=st.text(max_size=200))
async def test_a_write_is_read_back_equal_or_refused_and_reads_never_fail(
    adapter: DatabaseAdapter, room_id: str, entity_id: str, text: str
) -> None:
    memory = Memory(entity_id=entity_id, room_id=room_id, content=Content(text=text))
    refused: BadRequest | None = None
    try:
        await adapter.create_memory(memory, "messages")
    except BadRequest as exc:
        refused = exc
    if refused is not None:  # the field is named (in the details, or over NATS in the text)
        assert any(f in str(refused) for f in ("entity_id", "room_id", "content.text"))
    else:
        for _ in range(2):  # and again, as every later message of the room reads it
            stored = await adapter.get_memories(table_name="messages", room_id=room_id)
            assert [(m.entity_id, m.content) for m in stored if m.id == memory.id] == [
                (entity_id, memory.content)
            ]
    await adapter.get_memories(table_name="messages", count=5)
    await adapter.search_entities_by_name("a")


async def test_an_over_limit_text_is_refused_by_every_backend_and_nothing_is_stored(
    adapter: DatabaseAdapter,
) -> None:
    long = Memory(entity_id="u", room_id="r", content=Content(text="y" * (MAX_TEXT_LENGTH + 1)))
    with pytest.raises(BadRequest, match=r"content\.text"):
        await adapter.create_memory(long, "messages")
    assert await adapter.get_memories(table_name="messages", room_id="r") == []
    await adapter.create_memory(Memory(entity_id="u", room_id="r", content=Content()), "messages")
    assert len(await adapter.get_memories(table_name="messages", room_id="r")) == 1


async def test_an_over_long_inbound_message_is_refused_and_the_room_goes_on(
    database_url: str,
) -> None:
    runtime = runtime_on(database_url, ScriptedModel(default=plan("ok")).plugin())
    await runtime.initialize()
    try:
        with pytest.raises(BadRequest) as refused:
            await runtime.message_service.handle_message(
                runtime, Memory(entity_id="u", room_id="r1", content=Content(text="y" * 150_000))
            )
        assert refused.value.details["field"] == "content.text"
        assert str(MAX_TEXT_LENGTH) in refused.value.message
        result = await runtime.message_service.handle_message(
            runtime, Memory(entity_id="u", room_id="r1", content=Content(text="are you there?"))
        )
        assert result.status == "completed"
        stored = await runtime.get_memories(table_name="messages", room_id="r1")
        assert [m.content.text for m in stored] == ["ok", "are you there?"]
    finally:
        await runtime.stop()


async def test_a_long_action_result_is_stored_cut_with_a_marker(database_url: str) -> None:
    async def fetch(*_: Any) -> ActionResult:
        return ActionResult(text="<html>" + "x" * 120_000)

    model = ScriptedModel(large=[plan("", actions="FETCH")], default=plan("ok"))
    runtime = runtime_on(
        database_url, model.plugin(), Plugin(name="web", actions=[Action("FETCH", fetch)])
    )
    await runtime.initialize()
    try:
        first = await runtime.message_service.handle_message(
            runtime, Memory(entity_id="u", room_id="r2", content=Content(text="fetch the page"))
        )
        assert first.status == "completed"
        then = await runtime.message_service.handle_message(
            runtime, Memory(entity_id="u", room_id="r2", content=Content(text="thanks"))
        )
        assert then.status == "completed"
        stored = await runtime.get_memories(table_name="messages", room_id="r2")
        [result] = [m for m in stored if m.content.metadata.get("type") == "action_result"]
        assert len(result.content.text) <= MAX_TEXT_LENGTH
        assert result.content.text.startswith("<html>xxx")
        assert "[truncated: 120,006 characters" in result.content.text
    finally:
        await runtime.stop()


def test_a_character_whose_id_is_not_an_id_is_refused_naming_the_field() -> None:
    with pytest.raises(CharacterError, match=r"\$\.id"):
        Character.parse({"name": "Ada", "id": "not a uuid!"})


async def test_a_room_name_longer_than_its_column_is_refused_on_every_backend(
    adapter: DatabaseAdapter,
) -> None:
    with pytest.raises(BadRequest) as refused:
        await adapter.create_rooms([Room(id="long-name", name="n" * 300)])
    assert refused.value.details["field"] == "name"
    assert await adapter.get_rooms_by_ids(["long-name"]) == []


# -- per-agent rooms and worlds --------------------------------------------------


async def test_two_agents_in_one_database_keep_their_own_room_general(
    database_url: str,
) -> None:
    async with stored_agent(database_url) as a, stored_agent(database_url) as b:
        world = f"w-{uuid.uuid4().hex[:8]}"
        for db, kind in ((a, ChannelType.GROUP), (b, ChannelType.DM)):
            await db.create_world(World(id=world, name=db.agent_id))
            await db.create_rooms([Room(id="general", type=kind, world_id=world)])
            await db.add_participants_room(["u"], "general")
            await db.create_memories(
                [
                    Memory(entity_id="u", room_id="general", content=Content(text=f"{i}"))
                    for i in range(2)
                ],
                "messages",
            )
        [room_b] = await b.get_rooms_by_ids(["general"])
        assert room_b.type == ChannelType.DM
        world_b = await b.get_world(world)
        assert world_b is not None
        assert world_b.name == b.agent_id

        await a.delete_room("general")
        assert await a.get_rooms_by_ids(["general"]) == []
        assert await b.count_memories("general") == 2
        assert await b.get_participants_for_room("general") == ["u"]

        await a.create_rooms([Room(id="general", world_id=world)])
        await a.remove_world(world)
        assert await a.get_world(world) is None
        assert [r.id for r in await b.get_rooms_by_world(world)] == ["general"]
        assert await b.count_memories("general") == 2

        [mine] = await b.get_memories(table_name="messages", room_id="general", count=1)
        assert await a.get_memories_by_ids([mine.id]) == []
        await a.delete_memory(mine.id)
        assert await b.get_memory_by_id(mine.id) is not None


# -- message ids reused across chats -----------------------------------------------


async def test_one_message_id_in_two_chats_is_two_turns_each_answered(
    database_url: str,
) -> None:
    model = ScriptedModel(large=[plan("reply number 1"), plan("reply number 2")])
    runtime = runtime_on(database_url, model.plugin())
    await runtime.initialize()
    try:
        a = await runtime.message_service.handle_message(
            runtime,
            Memory(
                id="42",
                entity_id="tg-1001",
                room_id="chat-A",
                content=Content(text="door code 7788"),
            ),
        )
        b = await runtime.message_service.handle_message(
            runtime,
            Memory(
                id="42", entity_id="tg-2002", room_id="chat-B", content=Content(text="weather?")
            ),
        )
        assert (a.response_content.text, b.response_content.text) == (
            "reply number 1",
            "reply number 2",
        )
        assert len(model.prompts["TEXT_LARGE"]) == 2
        chat_b = await runtime.get_memories(table_name="messages", room_id="chat-B")
        assert [m.content.text for m in chat_b] == ["reply number 2", "weather?"]
        assert chat_b[1].metadata["platform_ids"]["id"] == "42"
        again = await runtime.message_service.handle_message(
            runtime,
            Memory(
                id="42", entity_id="tg-2002", room_id="chat-B", content=Content(text="weather?")
            ),
        )
        assert again.response_content.text == "reply number 2"  # the same message: replayed
        assert len(model.prompts["TEXT_LARGE"]) == 2
    finally:
        await runtime.stop()


# -- vectors after a stop or a crash ---------------------------------------------------


async def test_memories_left_without_a_vector_are_embedded_after_a_restart(
    database_url: str,
) -> None:
    name = f"Keeper-{uuid.uuid4().hex[:8]}"
    gate = asyncio.Event()

    async def stuck_embed(runtime: AgentRuntime, params: dict[str, Any]) -> Any:
        await gate.wait()  # a model that never answers before the crash
        return await embed(runtime, params)

    crashed = runtime_on(
        database_url,
        ScriptedModel(default=plan("ok")).plugin(),
        Plugin(name="emb", models={"TEXT_EMBEDDING": stuck_embed}),
        name=name,
    )
    await crashed.initialize()
    for i in range(4):
        await crashed.message_service.handle_message(
            crashed, Memory(entity_id="u1", room_id="r1", content=Content(text=f"fact {i}"))
        )
    queue = crashed.embedding_queue
    assert isinstance(queue, EmbeddingQueue)
    assert len(queue) > 0
    await queue.stop(grace=0.01)  # the crash: what is queued is never computed
    await crashed.stop()

    restarted = runtime_on(
        database_url, ScriptedModel(default=plan("ok")).plugin(embeddings=True), name=name
    )
    await restarted.initialize()
    try:
        await asyncio.sleep(0)
        backlog = restarted.embedding_queue
        assert isinstance(backlog, EmbeddingQueue)
        await backlog.drained()
        stored = await restarted.get_memories(
            table_name="messages", room_id="r1", include_embeddings=True
        )
        assert len(stored) == 8
        assert [m.content.text for m in stored if m.embedding is None] == []
        assert await restarted.get_memories_without_embeddings() == []
    finally:
        await restarted.stop()
