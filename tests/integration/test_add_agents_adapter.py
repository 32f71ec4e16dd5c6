"""``add_agents`` with a ``database_adapter``: bound to the agent it is given to, and
``skip_migrations`` on a database never migrated is an error that says what to do.

The serverless pattern: an adapter made (and migrated) once, then agents added
with ``ephemeral=True, skip_migrations=True, auto_start=True, return_runtimes=True``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from contracts import Content
from contracts.records import Memory
from shared.agent.character import Character
from shared.agent.elizaos import AgentSpec, ElizaOS
from shared.agent.runtime import AgentRuntime
from shared.errors import BadRequest
from shared.storage.migrate import SchemaNotMigratedError
from shared.storage.sql import SqlAdapter
from tests.integration.test_migrations import fresh_postgres_database
from tests.scripted import ScriptedModel

AGENT = "serverless-agent"


@pytest.fixture(params=["sqlite", "postgres"])
async def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database with nothing in it: a new SQLite file, or a new Postgres database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    async with fresh_postgres_database(request.getfixturevalue("postgres_url")) as url:
        yield url


async def serverless(adapter: Any, model: ScriptedModel) -> AgentRuntime:
    [runtime] = await ElizaOS().add_agents(
        [
            AgentSpec(
                character=Character(name="Serverless", id=AGENT),
                plugins=[model.plugin()],
                settings={"TASK_TICK_SECONDS": "3600"},
                database_adapter=adapter,
            )
        ],
        ephemeral=True,
        skip_migrations=True,
        auto_start=True,
        return_runtimes=True,
    )
    assert isinstance(runtime, AgentRuntime)
    return runtime


async def test_an_adapter_made_for_another_agent_is_bound_to_the_agent_it_is_given_to(
    empty_database: str,
) -> None:
    adapter = SqlAdapter.from_url(empty_database, "some-other-agent")
    await adapter.init()
    model = ScriptedModel()
    runtime = await serverless(adapter, model)
    try:
        assert runtime.adapter.agent_id == AGENT
        message = Memory(entity_id="user", room_id="room", content=Content(text="hello"))
        result = await runtime.message_service.handle_message(runtime, message)
        assert result.status == "completed"
        assert result.did_respond
        stored = await adapter.for_agent(AGENT).get_memories(room_id="room", table_name="messages")
        assert sorted(m.content.text or "" for m in stored) == ["Hello from the script!", "hello"]
        assert await adapter.get_memories(room_id="room", table_name="messages") == []
    finally:
        await runtime.stop()
        await adapter.close()


class _Unbindable:
    """An adapter for one agent only: it has no ``for_agent``."""

    agent_id = "some-other-agent"


async def test_an_adapter_that_cannot_be_bound_is_refused_at_add_agents() -> None:
    with pytest.raises(BadRequest, match="for_agent") as raised:
        await serverless(_Unbindable(), ScriptedModel())
    assert raised.value.details == {"field": "database_adapter"}


async def test_skip_migrations_on_a_database_never_migrated_says_to_run_the_migrations(
    empty_database: str,
) -> None:
    adapter = SqlAdapter.from_url(empty_database, AGENT)
    try:
        with pytest.raises(SchemaNotMigratedError, match="run the migrations first"):
            await serverless(adapter, ScriptedModel())
        with pytest.raises(SchemaNotMigratedError, match="never migrated"):
            await adapter.init(migrate=False)
        await adapter.init()
        await adapter.init(migrate=False)  # migrated now: nothing to say
    finally:
        await adapter.close()
