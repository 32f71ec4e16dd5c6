"""Bad input to the memory service gets a typed error; the service stays up; nothing is lost."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import msgspec
import nats
import pytest
from nats.aio.client import Client

from contracts import (
    ERROR_CODE_HEADER,
    MAX_TEXT_LENGTH,
    Connection,
    Content,
    Error,
    ErrorCode,
    Subjects,
    TurnCommit,
)
from contracts.records import Agent, Entity, Memory
from services.memory.main import create_app, create_broker_for
from shared.bus import create_broker, start_serving
from shared.config import Settings
from shared.errors import BadRequest, NotFound
from shared.storage.adapter import DatabaseAdapter
from shared.storage.client import memory_client
from shared.storage.sql import SqlAdapter

AGENT = "agent-1"
KEPT = Memory(id="kept-1", entity_id="u", room_id="room-1", content=Content(text="remember me"))


@pytest.fixture
async def client(
    nats_url: str, subjects: Subjects, tmp_path: Path
) -> AsyncIterator[DatabaseAdapter]:
    """A memory service holding one stored memory, and a client for its agent."""
    database_url = f"sqlite:///{tmp_path / 'memory.db'}"
    storage = SqlAdapter.from_url(database_url, AGENT)
    await storage.init()
    settings = Settings(nats_url=nats_url, eliza_ns=subjects.namespace, database_url=database_url)
    service = create_broker_for(settings, storage)
    caller = create_broker(nats_url, name="memory-test-client")
    async with service, caller:
        await start_serving(service)
        await caller.connect()
        adapter = memory_client(caller, agent_id=AGENT, subjects=subjects)
        await adapter.create_agent(Agent(id=AGENT, name="Keeper"))
        await adapter.create_memory(KEPT, "messages")
        yield adapter
    await storage.close()


@pytest.fixture
async def raw(nats_url: str) -> AsyncIterator[Client]:
    """A plain NATS client, as a connector in another language would use."""
    nc = await nats.connect(nats_url)
    yield nc
    await nc.close()


def body(**fields: Any) -> bytes:
    return msgspec.json.encode({"for_agent": AGENT, **fields})


INBOUND = {"entity_id": "u", "room_id": "room-1", "content": {"text": "hi"}}
FLOATS = base64.b64encode(b"\x00" * 8).decode()  # two float32 zeros, as JSON carries bytes


def oversized_memory() -> bytes:
    memory = {
        "entity_id": "u",
        "room_id": "room-1",
        "content": {"text": "x" * (MAX_TEXT_LENGTH + 1)},
    }
    return msgspec.json.encode({"for_agent": AGENT, "memory": memory, "table_name": "messages"})


@pytest.mark.parametrize(
    ("operation", "body", "code", "message"),
    [
        ("create_memory", b"{not json", ErrorCode.BAD_REQUEST, "malformed JSON"),
        ("create_memory", b"[1, 2]", ErrorCode.BAD_REQUEST, "Expected `object`"),
        ("create_memory", b'{"for_agent": "agent-1"}', ErrorCode.BAD_REQUEST, "`memory`"),
        (
            "get_memory_by_id",
            b'{"for_agent": "agent 1", "memory_id": "m"}',
            ErrorCode.BAD_REQUEST,
            "for_agent",
        ),
        (
            "get_memory_by_id",
            b'{"for_agent": "agent-1", "id": "m"}',
            ErrorCode.BAD_REQUEST,
            "unknown field `id`",
        ),
        (
            "count_memories",
            b'{"for_agent": "agent-1", "room_id": 7}',
            ErrorCode.BAD_REQUEST,
            "Expected `str`",
        ),
        ("create_memory", oversized_memory(), ErrorCode.BAD_REQUEST, "length <= 100000"),
        (
            "drop_database",
            b'{"for_agent": "agent-1"}',
            ErrorCode.NOT_FOUND,
            "unknown memory operation",
        ),
        (
            "update_entity",
            b'{"for_agent": "agent-1", "entity": {"id": "nobody", "names": ["x"]}}',
            ErrorCode.NOT_FOUND,
            "entity nobody does not exist",
        ),
        ("begin_turn", body(message=INBOUND), ErrorCode.BAD_REQUEST, "`connection`"),
        (
            "begin_turn",
            body(message={**INBOUND, "room_id": "room 1"}, connection={}),
            ErrorCode.BAD_REQUEST,
            "`$.message.room_id`",
        ),
        (
            "begin_turn",
            body(message=INBOUND, connection={"room_type": "PLANET"}),
            ErrorCode.BAD_REQUEST,
            "`$.connection.room_type`",
        ),
        (
            "begin_turn",
            body(message=INBOUND, connection={}, recent_count=-1),
            ErrorCode.BAD_REQUEST,
            ">= 0",
        ),
        (
            "begin_turn",
            body(message=INBOUND, connection={}, recent_count=1_000_000),
            ErrorCode.BAD_REQUEST,
            "<= 1000",
        ),
        (
            "begin_turn",
            body(message=INBOUND, connection={}, cache_keys="k"),
            ErrorCode.BAD_REQUEST,
            "Expected `array | null`",
        ),
        (
            "begin_turn",
            body(message=INBOUND, connection={}, recent=3),
            ErrorCode.BAD_REQUEST,
            "unknown field `recent`",
        ),
        (
            "begin_turn",
            msgspec.json.encode({"for_agent": "ghost", "message": INBOUND, "connection": {}}),
            ErrorCode.NOT_FOUND,
            "agent ghost does not exist",
        ),
        ("commit_turn", body(commit={"memories": {}}), ErrorCode.BAD_REQUEST, "`array`"),
        (
            "commit_turn",
            body(commit={"cache": [{"key": "", "value": 1}]}),
            ErrorCode.BAD_REQUEST,
            "length >= 1",
        ),
        (
            "commit_turn",
            body(commit={"cache": [{"key": "k", "value": 1, "expires_at": -5}]}),
            ErrorCode.BAD_REQUEST,
            ">= 0",
        ),
        (
            "commit_turn",
            body(commit={"memories": [INBOUND]}, extra=True),
            ErrorCode.BAD_REQUEST,
            "unknown field `extra`",
        ),
        (
            "set_embeddings",
            body(memory_ids=["kept-1"], vectors=["not base64!"]),
            ErrorCode.BAD_REQUEST,
            "base64",
        ),
        (
            "set_embeddings",
            body(memory_ids=["kept 1"], vectors=[FLOATS]),
            ErrorCode.BAD_REQUEST,
            "`$.memory_ids[0]`",
        ),
        (
            "set_embeddings",
            body(memory_ids=["kept-1", "other"], vectors=[FLOATS]),
            ErrorCode.BAD_REQUEST,
            "same length",
        ),
        (
            "set_embeddings",
            body(memory_ids=["kept-1"], vectors=["AAAA"]),
            ErrorCode.BAD_REQUEST,
            "not float32",
        ),
        (
            "set_embeddings",
            body(memory_ids="kept-1", vectors=[FLOATS]),
            ErrorCode.BAD_REQUEST,
            "Expected `array`",
        ),
    ],
)
async def test_bad_input_gets_a_typed_error_and_stored_data_survives(
    client: DatabaseAdapter,
    raw: Client,
    subjects: Subjects,
    operation: str,
    body: bytes,
    code: ErrorCode,
    message: str,
) -> None:
    reply = await raw.request(subjects.memory_operation(operation), body, timeout=5)
    error = msgspec.json.decode(reply.data, type=Error)
    assert error.code is code
    assert message in error.message
    assert reply.headers is not None
    assert reply.headers[ERROR_CODE_HEADER] in {"400", "404"}
    kept = await client.get_memory_by_id(KEPT.id, include_embeddings=True)
    assert kept is not None
    assert kept.content.text == "remember me"
    assert kept.embedding is None
    assert await client.count_memories("room-1") == 1


async def test_an_unknown_id_is_none_or_not_found_never_a_crash(client: DatabaseAdapter) -> None:
    assert await client.get_memory_by_id("no-such-memory") is None
    assert await client.get_agent("no-such-agent") is None
    with pytest.raises(NotFound, match="does not exist"):
        await client.for_agent("ghost").update_entity(Entity(id="e", names=["E"]))


async def test_a_request_over_the_nats_payload_limit_is_a_bad_request(
    client: DatabaseAdapter,
) -> None:
    too_many = [
        Memory(
            entity_id="u", room_id="room-1", content=Content(text="v"), embedding=[0.123456] * 384
        )
        for _ in range(2_000)
    ]
    with pytest.raises(BadRequest, match="larger than the NATS server accepts"):
        await client.create_memories(too_many, "messages")
    assert await client.count_memories("room-1") == 1


@dataclass
class InFlight:
    """How many storage calls the service runs at once; a call for key "slow" waits."""

    now: int = 0
    most: int = 0
    slow_started: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


class Gauged:
    """An agent's ``SqlAdapter`` whose ``get_cache`` is counted while it runs."""

    def __init__(self, adapter: SqlAdapter, gauge: InFlight) -> None:
        self.adapter = adapter
        self.gauge = gauge

    def __getattr__(self, name: str) -> Any:
        return getattr(self.adapter, name)

    async def get_cache(self, key: str) -> Any:
        self.gauge.now += 1
        self.gauge.most = max(self.gauge.most, self.gauge.now)
        try:
            if key == "slow":
                self.gauge.slow_started.set()
                await self.gauge.release.wait()
            return await self.adapter.get_cache(key)
        finally:
            self.gauge.now -= 1


class GaugedStorage(SqlAdapter):
    gauge = InFlight()

    def for_agent(self, agent_id: str) -> SqlAdapter:
        return cast("SqlAdapter", Gauged(super().for_agent(agent_id), self.gauge))


async def test_the_memory_service_answers_requests_side_by_side(
    nats_url: str, subjects: Subjects, tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path / 'memory.db'}"
    storage = GaugedStorage.from_url(database_url, AGENT)
    storage.gauge = gauge = InFlight()
    await storage.init()
    settings = Settings(nats_url=nats_url, eliza_ns=subjects.namespace, database_url=database_url)
    service = create_broker_for(settings, storage)
    caller = create_broker(nats_url, name="memory-test-client")
    try:
        async with service, caller:
            await start_serving(service)
            await caller.connect()
            adapter = memory_client(caller, agent_id=AGENT, subjects=subjects)
            await adapter.create_agent(Agent(id=AGENT, name="Keeper"))
            await adapter.set_cache("quick", 1)
            slow = asyncio.create_task(adapter.get_cache("slow"))
            await asyncio.wait_for(gauge.slow_started.wait(), timeout=10)
            # Served one at a time, these would wait behind the slow one forever.
            quick = await asyncio.wait_for(
                asyncio.gather(*(adapter.get_cache("quick") for _ in range(19))), timeout=10
            )
            assert quick == [1] * 19
            assert not slow.done()
            gauge.release.set()
            assert await slow is None
    finally:
        await storage.close()
    assert gauge.most > 1


async def test_concurrent_turns_through_the_memory_service_all_succeed_on_sqlite(
    client: DatabaseAdapter,
) -> None:
    async def turn(i: int) -> bool:
        inbound = Memory(entity_id=f"u{i % 3}", room_id="room-busy", content=Content(text=f"{i}"))
        context = await client.begin_turn(inbound, Connection(entity_names=[f"User {i % 3}"]))
        reply = Memory(
            entity_id=AGENT,
            room_id="room-busy",
            content=Content(text=f"re {i}"),
            embedding=[float(i), 1.0],
        )
        await client.commit_turn(TurnCommit(memories=[reply]))
        return context.message_stored

    assert all(await asyncio.gather(*(turn(i) for i in range(20))))
    assert await client.count_memories("room-busy") == 40
    assert len(await client.get_participants_for_room("room-busy")) == 4


async def test_the_memory_service_application_serves_operations(
    nats_url: str, subjects: Subjects, tmp_path: Path
) -> None:
    # The application (python -m services.memory) takes the broker over, context included.
    database_url = f"sqlite:///{tmp_path / 'app.db'}"
    settings = Settings(nats_url=nats_url, eliza_ns=subjects.namespace, database_url=database_url)
    caller = create_broker(nats_url, name="memory-test-client")
    async with create_app(settings), caller:
        await caller.connect()
        db = memory_client(caller, agent_id=AGENT, subjects=subjects)
        assert await db.create_agent(Agent(id=AGENT, name="Served"))
        context = await db.begin_turn(KEPT, Connection())
        assert context.message_stored
        assert [m.id for m in context.recent_messages] == [KEPT.id]
