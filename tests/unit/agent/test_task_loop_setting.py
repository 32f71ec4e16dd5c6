"""``TASK_LOOP=off``: an agent hosted only for its evaluators runs no task loop."""

from __future__ import annotations

import pytest

from shared.agent.character import Character
from shared.agent.runtime import AgentRuntime
from shared.agent.tasks import TaskService
from tests.scripted import ScriptedModel


@pytest.mark.parametrize("off", ["off", "false", "0"])
async def test_a_runtime_with_the_task_loop_off_runs_no_task_on_its_own(
    model: ScriptedModel, database_url: str, off: str
) -> None:
    agent = AgentRuntime(
        character=Character(name="Eliza"),
        plugins=[model.plugin(embeddings=True)],
        settings={"DATABASE_URL": database_url, "TASK_TICK_SECONDS": "0.02", "TASK_LOOP": off},
    )
    await agent.initialize()
    try:
        service = agent.get_service("task")
        assert isinstance(service, TaskService)
        assert not service.ticking
    finally:
        await agent.stop()
