"""Bootstrap's world actions (roles, settings, contacts, choices) and the task service."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from contracts import Content
from contracts.records import Memory, Room, Task, World
from shared.agent.character import Character
from shared.agent.runtime import AgentRuntime
from shared.agent.tasks import TaskService, TaskWorker
from shared.agent.types import HandlerOptions, State
from shared.agent.worlds import (
    AWAITING_CHOICE,
    choose_option,
    update_contact,
    update_role,
    update_settings,
)
from tests.scripted import ScriptedModel


async def in_world(runtime: AgentRuntime, owner: str = "owner-1") -> str:
    await runtime.adapter.create_world(World(id="w1", metadata={"ownership": {"owner_id": owner}}))
    await runtime.adapter.create_rooms([Room(id="room-w1", world_id="w1")])
    return "room-w1"


def from_(entity_id: str, room_id: str, text: str = "") -> Memory:
    return Memory(entity_id=entity_id, room_id=room_id, content=Content(text=text))


async def run(action: Any, runtime: AgentRuntime, message: Memory, **parameters: Any) -> Any:
    return await action(runtime, message, State(), HandlerOptions(parameters=parameters), None, [])


async def test_the_owner_can_make_an_admin_and_an_admin_cannot_make_an_owner(
    runtime: AgentRuntime,
) -> None:
    room = await in_world(runtime)
    made = await run(update_role, runtime, from_("owner-1", room), entityId="ada", role="ADMIN")
    assert made.success
    refused = await run(update_role, runtime, from_("ada", room), entityId="bob", role="OWNER")
    assert not refused.success
    assert "a ADMIN cannot make bob OWNER" in refused.error
    nobody = await run(update_role, runtime, from_("bob", room), entityId="bob", role="ADMIN")
    assert not nobody.success
    world = await runtime.adapter.get_world("w1")
    assert world is not None
    assert world.metadata["roles"] == {"ada": "ADMIN"}


async def test_the_role_is_read_from_the_message_by_the_model(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    room = await in_world(runtime)
    model.small.append("<response><entityId>ada</entityId><role>admin</role></response>")
    result = await run(update_role, runtime, from_("owner-1", room, "make ada an admin"))
    assert result.success
    assert "make ada an admin" in model.prompts["TEXT_SMALL"][-1]


async def test_only_owners_and_admins_change_world_settings(runtime: AgentRuntime) -> None:
    room = await in_world(runtime)
    denied = await run(update_settings, runtime, from_("stranger", room), key="LANG", value="fr")
    assert not denied.success
    done = await run(update_settings, runtime, from_("owner-1", room), key="LANG", value="fr")
    assert done.success
    world = await runtime.adapter.get_world("w1")
    assert world is not None
    assert world.metadata["settings"] == {"LANG": "fr"}


async def test_contact_details_accumulate_on_a_component(runtime: AgentRuntime) -> None:
    await run(update_contact, runtime, from_("ada", "r"), platform="discord", handle="ada#1")
    await run(update_contact, runtime, from_("ada", "r"), platform="email", handle="ada@x.org")
    contact = await runtime.adapter.get_component("ada", "contact")
    assert contact is not None
    assert contact.data == {"discord": "ada#1", "email": "ada@x.org"}


async def test_choosing_an_option_runs_the_task_with_it(runtime: AgentRuntime) -> None:
    chosen: list[str] = []

    async def deploy(rt: AgentRuntime, options: Mapping[str, Any], task: Task) -> None:
        chosen.append(str(options["option"]))

    runtime.register_task_worker(TaskWorker("deploy", deploy))
    task = Task(
        name="deploy",
        room_id="r",
        tags=[AWAITING_CHOICE],
        metadata={"options": [{"name": "staging"}, {"name": "production"}]},
    )
    await runtime.adapter.create_task(task)
    wrong = await run(choose_option, runtime, from_("u", "r"), taskId=task.id, option="moon")
    assert not wrong.success
    right = await run(choose_option, runtime, from_("u", "r"), taskId=task.id, option="staging")
    assert right.success
    assert chosen == ["staging"]
    assert await runtime.adapter.get_task(task.id) is None


async def test_the_task_service_runs_queued_tasks_once_and_repeating_ones_when_due(
    runtime: AgentRuntime,
) -> None:
    ran: list[str] = []

    async def work(rt: AgentRuntime, options: Mapping[str, Any], task: Task) -> None:
        ran.append(task.id)

    runtime.register_task_worker(TaskWorker("work", work))
    once = Task(name="work", tags=["queue"])
    hourly = Task(
        name="work", tags=["queue", "repeat"], metadata={"update_interval": 3_600_000}, updated_at=0
    )
    idle = Task(name="work", tags=["later"])
    for task in (once, hourly, idle):
        await runtime.adapter.create_task(task)
    service = runtime.get_service("task")
    assert isinstance(service, TaskService)
    assert sorted(await service.run_due_tasks()) == sorted([once.id, hourly.id])
    assert await service.run_due_tasks() == []  # the repeating one is not due for an hour
    assert await runtime.adapter.get_task(once.id) is None
    assert await runtime.adapter.get_task(hourly.id) is not None
    assert sorted(ran) == sorted([once.id, hourly.id])


async def test_queued_tasks_run_on_their_own_at_each_tick_and_only_once(
    model: ScriptedModel, database_url: str
) -> None:
    agent = AgentRuntime(
        character=Character(name="Eliza"),
        plugins=[model.plugin(embeddings=True)],
        settings={"DATABASE_URL": database_url, "TASK_TICK_SECONDS": "0.02"},
    )
    ran: list[str] = []
    finished = asyncio.Event()

    async def work(rt: AgentRuntime, options: Mapping[str, Any], task: Task) -> None:
        ran.append(task.id)
        finished.set()

    await agent.initialize()
    try:
        agent.register_task_worker(TaskWorker("work", work))
        task = Task(name="work", tags=["queue"])
        await agent.adapter.create_task(task)
        service = agent.get_service("task")
        assert isinstance(service, TaskService)
        manual = asyncio.create_task(service.run_due_tasks())  # alongside the ticking loop
        await asyncio.wait_for(finished.wait(), timeout=10)
        await manual
        await asyncio.sleep(0.1)  # a few more ticks
        assert ran == [task.id]
        assert await agent.adapter.get_task(task.id) is None
    finally:
        await agent.stop()
