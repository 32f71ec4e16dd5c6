"""A runtime's life: stopped and started again it is the same agent; waiting for a service
is each waiter's own business; a health check asks the storage and the model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from contracts.records import Task
from shared.agent.character import Character
from shared.agent.elizaos import AgentSpec, ElizaOS
from shared.agent.runtime import AgentRuntime
from shared.agent.tasks import TaskWorker
from shared.agent.types import ModelType, Plugin, Service
from tests.scripted import ScriptedModel


class Speech(Service):
    """A plugin service that counts how often it was started and stopped."""

    service_type = "speech"
    started = 0
    stopped = 0

    @classmethod
    async def start(cls, runtime: AgentRuntime) -> Service:
        cls.started += 1
        return cls(runtime)

    async def stop(self) -> None:
        type(self).stopped += 1


@pytest.fixture
async def eliza() -> AsyncIterator[ElizaOS]:
    registry = ElizaOS()
    yield registry
    await registry.stop_agents([a.agent_id for a in registry.get_agents() if a.is_started()])


def spec(name: str, tmp_path: Path, *plugins: Plugin) -> AgentSpec:
    return AgentSpec(
        character=Character(name=name),
        plugins=[ScriptedModel().plugin(), *plugins],
        settings={
            "DATABASE_URL": f"sqlite:///{tmp_path / f'{name}.db'}",
            "TASK_TICK_SECONDS": "0.05",
        },
    )


async def test_a_restarted_agent_has_its_plugin_services_again_and_runs_queued_tasks(
    eliza: ElizaOS, tmp_path: Path
) -> None:
    Speech.started = Speech.stopped = 0
    [added] = await eliza.add_agents(
        [spec("Ada", tmp_path, Plugin("voice", services=[Speech]))], auto_start=True
    )
    agent_id = str(added)
    runtime = eliza.get_agent(agent_id)
    assert runtime is not None
    first = runtime.get_registered_service_types()
    assert {"task", "speech"} <= set(first)

    await eliza.stop_agents([agent_id])
    assert runtime.get_registered_service_types() == []
    assert Speech.stopped == 1
    await eliza.start_agents([agent_id])

    assert runtime.get_registered_service_types() == first
    assert Speech.started == 2  # once per start, never twice at once
    ran = asyncio.Event()

    async def execute(rt: AgentRuntime, options: Mapping[str, Any], task: Task) -> None:
        del rt, options, task
        ran.set()

    runtime.register_task_worker(TaskWorker("ping", execute))
    await runtime.create_task(Task(name="ping", tags=["queue"]))
    await asyncio.wait_for(ran.wait(), timeout=30)


async def test_a_stopped_agent_keeps_its_elizaos_and_a_deleted_one_does_not(
    eliza: ElizaOS, tmp_path: Path
) -> None:
    [added] = await eliza.add_agents([spec("Bo", tmp_path)], auto_start=True)
    agent_id = str(added)
    runtime = eliza.get_agent(agent_id)
    assert runtime is not None
    await eliza.stop_agents([agent_id])
    assert runtime.has_elizaos()
    await eliza.start_agents([agent_id])
    assert runtime.has_elizaos()
    await eliza.delete_agents([agent_id])
    assert not runtime.has_elizaos()


async def test_a_cancelled_service_waiter_leaves_the_other_waiters_and_later_ones_the_service(
    tmp_path: Path,
) -> None:
    runtime = AgentRuntime(
        character=Character(name="Cy"),
        plugins=[ScriptedModel().plugin()],
        settings={"DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}", "TASK_TICK_SECONDS": "3600"},
    )
    await runtime.initialize()
    try:
        patient = asyncio.ensure_future(runtime.get_service_load_promise("speech"))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(runtime.get_service_load_promise("speech"), 0.05)
        impatient = asyncio.ensure_future(runtime.get_service_load_promise("speech"))
        impatient.cancel()
        await runtime.register_service(Speech)

        speech = await asyncio.wait_for(patient, timeout=10)
        assert isinstance(speech, Speech)
        assert await asyncio.wait_for(runtime.get_service_load_promise("speech"), 10) is speech
        assert impatient.cancelled()
    finally:
        await runtime.stop()


async def test_after_a_restart_the_service_promise_gives_the_new_service(tmp_path: Path) -> None:
    runtime = AgentRuntime(
        character=Character(name="Di"),
        plugins=[ScriptedModel().plugin(), Plugin("voice", services=[Speech])],
        settings={"DATABASE_URL": f"sqlite:///{tmp_path / 'd.db'}", "TASK_TICK_SECONDS": "3600"},
    )
    await runtime.initialize()
    before = await runtime.get_service_load_promise("speech")
    await runtime.stop()
    waiting = asyncio.ensure_future(runtime.get_service_load_promise("speech"))
    await runtime.initialize()
    try:
        after = await asyncio.wait_for(waiting, timeout=10)
        assert after is runtime.get_service("speech")
        assert after is not before
    finally:
        await runtime.stop()


async def test_a_health_check_asks_the_model_and_names_what_failed(
    eliza: ElizaOS, tmp_path: Path
) -> None:
    async def unreachable(runtime: AgentRuntime, params: dict[str, Any]) -> str:
        raise ConnectionError("the model server is down")

    down = Plugin("down", models={ModelType.TEXT_SMALL: unreachable}, priority=1_000)
    well, ill = await eliza.add_agents(
        [spec("Well", tmp_path), spec("Ill", tmp_path, down)], auto_start=True
    )
    health = await eliza.health_check()
    assert (health[str(well)].alive, health[str(well)].responsive) == (True, True)
    assert (health[str(ill)].alive, health[str(ill)].responsive) == (True, False)
    assert health[str(ill)].error == "model: ConnectionError: the model server is down"

    unprobed = await eliza.health_check([str(ill)], probe_model=False)
    assert unprobed[str(ill)].responsive

    await eliza.stop_agents([str(well)])
    stopped = (await eliza.health_check([str(well)]))[str(well)]
    assert (stopped.alive, stopped.responsive) == (False, False)
