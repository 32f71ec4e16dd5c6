"""An agent on the OpenAI plugin, talking to the fake OpenAI-compatible server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from elizamesh.plugins.openai import get_openai_plugin
from shared.agent.character import Character
from shared.agent.runtime import AgentRuntime
from tests.fake_openai import FakeOpenAI, fake_openai_server

SYSTEM = "You are a helpful assistant."


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with fake_openai_server() as server:
        yield server


@pytest.fixture
async def runtime(fake: FakeOpenAI, tmp_path: Path) -> AsyncIterator[AgentRuntime]:
    agent = AgentRuntime(
        character=Character(name="Assistant", system=SYSTEM),
        plugins=[get_openai_plugin()],
        settings={
            "OPENAI_API_KEY": "sk-test",
            "OPENAI_BASE_URL": fake.url,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
            "TASK_TICK_SECONDS": "3600",
        },
    )
    await agent.initialize()
    yield agent
    await agent.stop()
