"""Queue workers: drain JetStream pull consumers in batches, inside a service's lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any

from faststream import FastStream
from faststream.nats import NatsBroker

from contracts import Subjects
from contracts.control import ConsumerHealth
from shared.health import consumer_health, serve_health
from shared.telemetry import QUEUE_DEPTH

logger = logging.getLogger("elizamesh.workers")


class PullWorker(ABC):
    """Drains batches until cancelled; its durable consumers outlive it."""

    def __init__(self, broker: NatsBroker) -> None:
        self.broker = broker
        self.subscriptions: list[Any] = []
        self.durables: list[tuple[str, str]] = []
        """(stream, durable consumer) pairs this worker drains, for its health."""
        self.running = False

    @abstractmethod
    async def open(self) -> None:
        """Join the consumers (filling ``subscriptions``)."""

    @abstractmethod
    async def drain_once(self) -> int:
        """Process one batch; return how many messages it took (0: nothing to do)."""

    async def run_forever(self, idle: float = 0.1, measure_every: float = 5.0) -> None:
        """Drain until cancelled, resting ``idle`` seconds when there is no work.

        Every ``measure_every`` seconds, the depth of each queue it drains is
        recorded in the ``elizamesh.queue.depth`` gauge.
        """
        self.running = True
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._drain_forever(idle))
                tasks.create_task(self._measure_forever(measure_every))
        finally:
            self.running = False

    async def _drain_forever(self, idle: float) -> None:
        while True:
            try:
                if not await self.drain_once():
                    await asyncio.sleep(idle)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("%s: batch failed", type(self).__name__)
                await asyncio.sleep(idle)

    async def _measure_forever(self, every: float) -> None:
        while True:
            try:
                for consumer in await self.consumers():
                    QUEUE_DEPTH.set(consumer.pending, {"consumer": consumer.name})
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a metric missed is no reason to stop draining
                logger.warning("%s: could not measure the queues: %s", type(self).__name__, exc)
            await asyncio.sleep(every)

    async def consumers(self) -> list[ConsumerHealth]:
        """Each durable consumer's lag, alive while this worker drains it."""
        return [
            await consumer_health(self.broker, stream, durable, alive=self.running)
            for stream, durable in self.durables
        ]

    async def close(self) -> None:
        """Leave the consumers (they stay durable on the server)."""
        for subscription in self.subscriptions:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        self.subscriptions.clear()


def serve_worker(
    app: FastStream,
    make: Callable[[], Awaitable[PullWorker]],
    *,
    name: str,
    subjects: Subjects,
) -> None:
    """Start a worker once ``app`` is connected; on shutdown, let it finish its batch and leave.

    The service answers ``<ns>.health`` as ``name``: its consumers' lag, and
    whether the worker is draining them (not ok before it starts).
    """
    running: list[tuple[PullWorker, asyncio.Task[None]]] = []

    async def probe() -> tuple[list[ConsumerHealth], dict[str, Any]]:
        if not running:
            return [ConsumerHealth(name=name, alive=False)], {"state": "starting"}
        return await running[0][0].consumers(), {}

    broker = app.broker
    if not isinstance(broker, NatsBroker):
        raise TypeError("a queue worker runs on a NATS broker")
    serve_health(broker, subjects, name, probe)

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
