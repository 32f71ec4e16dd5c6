"""One agent's storage on each backend, for tests that assert the same on all of them.

A backend is named by a fixture's ``request.param``: ``"sqlite"`` (a file in
the test's ``tmp_path``), ``"postgres"`` (the session's server, fixture
``postgres_url``) or ``"nats"`` (``NatsMemoryClient`` to a memory service on
the session's nats-server, fixtures ``nats_url`` and ``subjects``, which
stores in a SQLite file).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from contracts import Subjects
from contracts.records import Agent
from services.memory.main import create_broker_for
from shared.bus import create_broker, start_serving
from shared.config import Settings
from shared.storage.adapter import DatabaseAdapter
from shared.storage.client import memory_client
from shared.storage.sql import SqlAdapter

SQL_BACKENDS = ("sqlite", "postgres")
BACKENDS = (*SQL_BACKENDS, "nats")


def new_id() -> str:
    """A fresh id (32 hex digits), so tests sharing a database never share rows."""
    return uuid.uuid4().hex


def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The shared Postgres for ``"postgres"``, else a SQLite file in the test's ``tmp_path``."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite:///{tmp_path / 'agent.db'}"


@asynccontextmanager
async def sql_adapter(url: str) -> AsyncIterator[DatabaseAdapter]:
    """A migrated ``SqlAdapter`` on ``url`` for a new agent id (the agent row is not created)."""
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
    """A memory service storing in ``database_url``, and a client of it for a new agent id."""
    settings = Settings(nats_url=nats_url, eliza_ns=subjects.namespace, database_url=database_url)
    async with sql_adapter(database_url) as storage:
        service = create_broker_for(settings, storage)  # type: ignore[arg-type]
        client = create_broker(nats_url, name="storage-test-client")
        async with service, client:
            await start_serving(service)
            await client.connect()
            yield memory_client(client, agent_id=new_id(), subjects=subjects)


@asynccontextmanager
async def stored_agent_on(
    request: pytest.FixtureRequest, tmp_path: Path, name: str
) -> AsyncIterator[DatabaseAdapter]:
    """A new agent called ``name`` on the backend ``request.param`` names; deleted afterwards."""
    target: AbstractAsyncContextManager[DatabaseAdapter]
    if request.param == "nats":
        target = memory_service_client(
            request.getfixturevalue("nats_url"),
            request.getfixturevalue("subjects"),
            database_url(request, tmp_path),
        )
    else:
        target = sql_adapter(database_url(request, tmp_path))
    async with target as db:
        assert await db.create_agent(Agent(id=db.agent_id, name=name))
        try:
            yield db
        finally:
            await db.delete_agent(db.agent_id)
