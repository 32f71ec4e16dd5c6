"""A task queued once runs once, however many processes host its agent.

Two runtime replicas and an evaluator-style host (``run_tasks=False``, as the
evaluator service builds it) host the same agent over a real nats-server and
the memory service; every replica ticks its task loop every 20 ms, so they
race for each task, and the claim in storage (``claim_task``) lets one win.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from contracts import Subjects
from contracts.records import Task
from services.memory.main import create_broker_for as memory_broker
from shared.agent.character import Character
from shared.agent.runtime import AgentRuntime
from shared.agent.tasks import TaskService, TaskWorker
from shared.bus import create_broker, start_serving
from shared.config import Settings
from shared.hosting import AgentHost, HostedAgents
from shared.storage.sql import SqlAdapter

TASKS = 12


@pytest.fixture
async def memory_service(
    nats_url: str, subjects: Subjects, tmp_path: Path
) -> AsyncIterator[SqlAdapter]:
    database_url = f"sqlite:///{tmp_path / 'memory.db'}"
    storage = SqlAdapter.from_url(database_url, "elizamesh-memory")
    await storage.init()
    settings = Settings(nats_url=nats_url, eliza_ns=subjects.namespace, database_url=database_url)
    try:
        async with memory_broker(settings, storage) as memory:
            await start_serving(memory)
            yield storage
    finally:
        await storage.close()


async def host_agent(
    exits: AsyncExitStack, nats_url: str, subjects: Subjects, agent: Character, **options: Any
) -> AgentRuntime:
    """Start a host on its own connection and the agent on it (its tasks ticking every 20 ms)."""
    broker = create_broker(nats_url, name=f"host-{uuid.uuid4().hex[:6]}")
    await exits.enter_async_context(broker)
    await broker.start()
    host = AgentHost(broker, subjects, HostedAgents(plugins=()), **options)
    exits.push_async_callback(host.stop)
    return await host.add(agent, [], {"TASK_TICK_SECONDS": "0.02"})


@pytest.mark.timeout(120)  # three hosts starting on a loaded machine
async def test_a_task_queued_once_runs_once_with_two_replicas_and_an_evaluator(
    memory_service: SqlAdapter, nats_url: str, subjects: Subjects
) -> None:
    agent = Character(name="Tasker", id=f"tasker-{uuid.uuid4().hex[:8]}")
    runs: Counter[str] = Counter()
    ran_on: dict[str, str] = {}
    all_ran = asyncio.Event()

    def worker(where: str) -> TaskWorker:
        async def work(runtime: AgentRuntime, options: Mapping[str, Any], task: Task) -> None:
            del runtime, options
            runs[task.id] += 1
            ran_on[task.id] = where
            await asyncio.sleep(0.05)  # long enough for the other replicas' ticks to see it
            if len(runs) == TASKS:
                all_ran.set()

        return TaskWorker("digest", work)

    # Inside the test's own task: a hang fails here, where the traceback shows what it awaited.
    async with asyncio.timeout(90), AsyncExitStack() as exits:
        hosts = {
            "runtime-1": await host_agent(exits, nats_url, subjects, agent),
            "runtime-2": await host_agent(exits, nats_url, subjects, agent),
            "evaluator": await host_agent(exits, nats_url, subjects, agent, run_tasks=False),
        }
        for where, runtime in hosts.items():
            runtime.register_task_worker(worker(where))
        queued = [Task(name="digest", tags=["queue"]) for _ in range(TASKS)]
        for task in queued:
            await hosts["runtime-1"].adapter.create_task(task)

        await asyncio.wait_for(all_ran.wait(), timeout=30)
        # Give every loop more ticks: a task that could run twice would by now.
        await asyncio.sleep(0.5)
        evaluator_tasks = hosts["evaluator"].get_service("task")
        assert isinstance(evaluator_tasks, TaskService)
        left = await hosts["runtime-1"].adapter.get_tasks(tags=["queue"])

    assert dict(runs) == {task.id: 1 for task in queued}
    assert left == []
    assert "evaluator" not in ran_on.values()
    assert not evaluator_tasks.ticking
