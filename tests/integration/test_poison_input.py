"""Poison input on real NATS and Postgres: a typed ``bad_request``, bounded replies.

An error reply that quoted an unbounded value used to exceed the server's
max_payload (the ``Nats-Service-Error`` header is not checked by nats-py),
and nats-server then closed the service's connection for good.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import msgspec
import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from contracts import ERROR_HEADER, Error, Subjects
from contracts.records import Agent
from services.memory.main import create_broker_for
from shared.bus import HEADER_LIMIT, MESSAGE_LIMIT, create_broker, start_serving
from shared.config import Settings
from shared.health import no_consumers, serve_health
from shared.storage.client import memory_client
from shared.storage.sql import SqlAdapter


@pytest.fixture
async def raw(nats_url: str) -> AsyncIterator[Client]:
    nc = await nats.connect(nats_url)
    yield nc
    await nc.close()


def bounded_error(reply: Msg) -> Error:
    error = msgspec.json.decode(reply.data, type=Error)
    assert len(error.message) <= MESSAGE_LIMIT
    assert reply.headers is not None
    assert len(reply.headers[ERROR_HEADER]) <= HEADER_LIMIT
    return error


async def test_a_600_kb_value_to_health_gets_a_short_error_and_the_service_stays_connected(
    nats_url: str, subjects: Subjects, raw: Client
) -> None:
    service = create_broker(nats_url, name="health-under-test")
    serve_health(service, subjects, "probe", no_consumers)
    async with service:
        await start_serving(service)
        poison = msgspec.json.encode({"type": "x" * 600_000})
        error = bounded_error(await raw.request(subjects.health, poison, timeout=5))
        assert error.code == "bad_request"
        await asyncio.sleep(0.2)  # the server would close the connection here
        assert service.config.connection_state.connection.is_connected
        answer = await raw.request(subjects.health, b"{}", timeout=5)
        assert b'"service":"probe"' in answer.data


async def test_bad_values_on_postgres_are_bad_requests_not_internal(
    nats_url: str, subjects: Subjects, postgres_url: str, raw: Client
) -> None:
    agent = f"poison-{uuid.uuid4().hex[:8]}"
    storage = SqlAdapter.from_url(postgres_url, agent)
    await storage.init()
    settings = Settings(nats_url=nats_url, eliza_ns=subjects.namespace, database_url=postgres_url)
    service = create_broker_for(settings, storage)
    caller = create_broker(nats_url, name="poison-client")
    try:
        async with service, caller:
            await start_serving(service)
            await caller.connect()
            await memory_client(caller, agent_id=agent, subjects=subjects).create_agent(
                Agent(id=agent, name="Poisoned")
            )
            memory = {"entity_id": "u", "room_id": "room-1", "content": {"text": "nul \x00 here"}}
            bodies = {
                "create_memory": [
                    msgspec.json.encode(
                        {"for_agent": agent, "memory": memory, "table_name": "messages"}
                    ),
                    b'{"for_agent": "' + agent.encode() + b'", "memory": {"text": "\xff"}}',
                    b"[" * 100_000 + b"]" * 100_000,
                ],
                "get_memories": [
                    b'{"for_agent": "'
                    + agent.encode()
                    + b'", "table_name": "messages", "count": 99999999999999999999999}'
                ],
            }
            for operation, requests in bodies.items():
                for body in requests:
                    reply = await raw.request(
                        subjects.memory_operation(operation), body, timeout=10
                    )
                    assert bounded_error(reply).code == "bad_request", (operation, reply.data)
            count = await raw.request(
                subjects.memory_operation("count_memories"),
                msgspec.json.encode({"for_agent": agent, "room_id": "room-1"}),
                timeout=10,
            )
            assert b"error" not in count.data
    finally:
        await storage.close()
