"""Tasks: work an agent does later, once or repeatedly, run by the task service.

A task names a worker (``runtime.register_task_worker``). Tasks tagged
``queue`` run on the service's next tick when their worker's ``validate``
accepts them; ``repeat`` tasks run again every ``metadata["update_interval"]``
milliseconds; others are deleted once done.

Every process hosting an agent may tick, so a task runs only once it is
claimed in storage (``claim_task``: one atomic conditional update), and the
task runs once per stack however many replicas host the agent. A process
that dies or fails while running a task holds it until the claim ends
(``TASK_CLAIM_SECONDS``, default 300), then another tick tries it again.
``TASK_LOOP=off`` starts no loop at all (the evaluator service's agents).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import msgspec

from contracts.records import Task, now_ms
from shared.agent.types import Service, TaskExecute, TaskValidate, TaskWorker

if TYPE_CHECKING:
    from shared.agent.runtime import AgentRuntime

__all__ = ["TaskExecute", "TaskService", "TaskValidate", "TaskWorker"]

logger = logging.getLogger("elizamesh.tasks")


class TaskService(Service):
    """Runs due tasks every ``TASK_TICK_SECONDS`` (default 1), each claimed before it runs."""

    service_type = "task"
    capability_description = "Runs queued and repeating tasks."

    def __init__(self, runtime: AgentRuntime) -> None:
        super().__init__(runtime)
        self.tick = float(runtime.get_setting("TASK_TICK_SECONDS") or 1.0)
        self.claim_ms = int(float(runtime.get_setting("TASK_CLAIM_SECONDS") or 300) * 1000)
        self._loop: asyncio.Task[None] | None = None
        self._running = asyncio.Lock()  # one pass at a time: a task never runs twice at once

    @classmethod
    async def start(cls, runtime: AgentRuntime) -> TaskService:
        """Start ticking in the background (unless the setting ``TASK_LOOP`` is ``off``)."""
        service = cls(runtime)
        loop = runtime.get_setting("TASK_LOOP")  # "false" comes back as False
        if loop is not False and str(loop).lower() not in _OFF:
            service._loop = asyncio.create_task(service._run_forever(), name="task-service")
        return service

    @property
    def ticking(self) -> bool:
        """Whether this service runs due tasks on its own (not with ``TASK_LOOP=off``)."""
        return self._loop is not None and not self._loop.done()

    async def stop(self) -> None:
        """Stop ticking (a task being run is cancelled)."""
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)

    async def _run_forever(self) -> None:
        while True:
            await asyncio.sleep(self.tick)  # the first pass a tick after start, as in elizaOS
            try:
                await self.run_due_tasks()
            except Exception:
                logger.exception("task tick failed")

    async def run_due_tasks(self) -> list[str]:
        """Run every queued task that is due now; return the ids of those that ran."""
        async with self._running:
            return await self._run_due_tasks()

    async def _run_due_tasks(self) -> list[str]:
        ran: list[str] = []
        for task in await self.runtime.adapter.get_tasks(tags=["queue"]):
            worker = self.runtime.get_task_worker(task.name)
            if worker is None or not _due(task) or not await worker.validate(self.runtime, task):
                continue
            claimed = await self.runtime.adapter.claim_task(
                task.id, task.updated_at, now_ms() + self.claim_ms
            )
            if not claimed:  # another process runs it, or ran it since we read it
                continue
            try:
                await worker.execute(self.runtime, task.metadata, task)
            except Exception:
                logger.exception("task %s (%s) failed", task.name, task.id)
                continue
            ran.append(task.id)
            if "repeat" in task.tags:
                await self.runtime.adapter.update_task(
                    msgspec.structs.replace(task, updated_at=now_ms())
                )
            else:
                await self.runtime.adapter.delete_task(task.id)
        return ran


_OFF = {"off", "0", "no"}


def _due(task: Task) -> bool:
    if "repeat" not in task.tags:
        return True
    interval = int(task.metadata.get("update_interval") or 0)
    return now_ms() - task.updated_at >= interval
