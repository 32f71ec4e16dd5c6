"""An agent on a SQLite file of its own, with a scripted model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.agent.character import Character
from shared.agent.runtime import AgentRuntime
from tests.scripted import ScriptedModel


@pytest.fixture
def model() -> ScriptedModel:
    return ScriptedModel()


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'agent.db'}"


@pytest.fixture
async def runtime(model: ScriptedModel, database_url: str) -> AsyncIterator[AgentRuntime]:
    agent = AgentRuntime(
        character=Character(name="Eliza", bio=["A helpful assistant."], system="Be kind."),
        plugins=[model.plugin(embeddings=True)],
        # The task service ticks hourly: tests run due tasks themselves.
        settings={"DATABASE_URL": database_url, "TASK_TICK_SECONDS": "3600"},
    )
    await agent.initialize()
    yield agent
    await agent.stop()
