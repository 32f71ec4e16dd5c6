"""Bad input to the memory service gets a typed error; the service stays up; nothing is lost."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import nats
import pytest
from nats.aio.client import Client

from contracts import ERROR_CODE_HEADER, MAX_TEXT_LENGTH, Content, Error, ErrorCode, Subjects
from contracts.records import Agent, Entity, Memory
from services.memory.main import create_broker_for
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
    kept = await client.get_memory_by_id(KEPT.id)
    assert kept is not None
    assert kept.content.text == "remember me"
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
