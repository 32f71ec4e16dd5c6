"""Queue workers: drain JetStream pull consumers in batches, inside a service's lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any

from faststream import FastStream

logger = logging.getLogger("elizamesh.workers")


class PullWorker(ABC):
    """Drains batches until cancelled; its durable consumers outlive it."""

    def __init__(self) -> None:
        self.subscriptions: list[Any] = []

    @abstractmethod
    async def open(self) -> None:
        """Join the consumers (filling ``subscriptions``)."""

    @abstractmethod
    async def drain_once(self) -> int:
        """Process one batch; return how many messages it took (0: nothing to do)."""

    async def run_forever(self, idle: float = 0.1) -> None:
        """Drain until cancelled, resting ``idle`` seconds when there is no work."""
        while True:
            try:
                if not await self.drain_once():
                    await asyncio.sleep(idle)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("%s: batch failed", type(self).__name__)
                await asyncio.sleep(idle)

    async def close(self) -> None:
        """Leave the consumers (they stay durable on the server)."""
        for subscription in self.subscriptions:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        self.subscriptions.clear()


def serve_worker(app: FastStream, make: Callable[[], Awaitable[PullWorker]], *, name: str) -> None:
    """Start a worker once ``app`` is connected; on shutdown, let it finish its batch and leave."""
    running: list[tuple[PullWorker, asyncio.Task[None]]] = []

    @app.after_startup
    async def start_worker() -> None:
        worker = await make()
        await worker.open()
        running.append((worker, asyncio.create_task(worker.run_forever(), name=name)))

    @app.on_shutdown
    async def stop_worker() -> None:
        for worker, loop in running:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)
            await worker.close()
