"""The in-process embedding queue: vectors for new memories, computed in the background.

Priorities high, normal and low (high drains first); at most ``capacity``
items (the lowest-priority, oldest ones make room); batches of ``batch_size``
embedded concurrently; retried by ``EMBEDDING_RETRY`` (the policy the
embedding service uses too). In the
distributed stack the embedding service does the same from a JetStream queue.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from contracts.embedding import Priority
from contracts.records import Memory
from shared.agent.types import EventType, ModelType
from shared.storage.vectors import to_bytes

if TYPE_CHECKING:
    from shared.agent.runtime import AgentRuntime

logger = logging.getLogger("elizamesh.embedding")

_RANK: dict[str, int] = {"high": 0, "normal": 1, "low": 2}


@dataclass(frozen=True)
class RetryPolicy:
    """How many times a vector is tried, and how long to wait between tries."""

    tries: int = 4
    backoff: float = 0.5
    """Seconds before the second try; doubled before each later one."""

    def delay(self, tried: int) -> float:
        """Seconds to wait after the ``tried``-th failed try (1-based)."""
        return self.backoff * float(2 ** (tried - 1))


EMBEDDING_RETRY = RetryPolicy()
"""The one retry policy of vectors, in-process and in the embedding service."""


class EmbeddingQueue:
    """Background vectors for one runtime's memories."""

    def __init__(
        self,
        runtime: AgentRuntime,
        *,
        capacity: int = 1_000,
        batch_size: int = 10,
        retry: RetryPolicy = EMBEDDING_RETRY,
    ) -> None:
        self.runtime = runtime
        self.capacity = capacity
        self.batch_size = batch_size
        self.retry = retry
        self._heap: list[tuple[int, int, Memory]] = []
        self._queued: set[str] = set()
        """Ids queued or being embedded, so that one memory is embedded once at a time."""
        self._order = itertools.count()
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._worker: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._heap)

    async def put(self, memory: Memory, priority: Priority = "normal") -> None:
        """Queue ``memory``; when full, the lowest-priority, oldest item is dropped (logged).

        A memory already queued or being embedded is not queued again. A dropped
        one keeps no vector until the next start queues it again (its memory
        stays stored; see ``get_memories_without_embeddings``).
        """
        if memory.id in self._queued:
            return
        self._queued.add(memory.id)
        heapq.heappush(self._heap, (_RANK[priority], next(self._order), memory))
        if len(self._heap) > self.capacity:
            dropped = max(self._heap, key=lambda item: (item[0], -item[1]))
            self._heap.remove(dropped)
            heapq.heapify(self._heap)
            self._queued.discard(dropped[2].id)
            logger.warning("embedding queue full: dropped memory %s", dropped[2].id)
        self._idle.clear()
        self._ready.set()

    def start(self) -> None:
        """Start draining in the background."""
        if self._worker is None:
            self._worker = asyncio.create_task(self._drain_forever(), name="embedding-queue")

    async def stop(self, *, grace: float = 10.0) -> None:
        """Finish the queued vectors (for up to ``grace`` seconds), then stop draining.

        Vectors still queued after ``grace`` are not computed now (logged):
        their memories stay stored without a vector, and the next start of the
        runtime queues them again (``AgentRuntime`` scans for them).
        """
        if self._worker is not None and self._heap:
            try:
                async with asyncio.timeout(grace):
                    await self._idle.wait()
            except TimeoutError:
                logger.warning("stopping with %d vectors not computed", len(self._heap))
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None

    async def drained(self) -> None:
        """Wait until every queued memory has been handled."""
        await self._idle.wait()

    async def _drain_forever(self) -> None:
        while True:
            await self._ready.wait()
            batch = [
                heapq.heappop(self._heap)[2] for _ in range(min(self.batch_size, len(self._heap)))
            ]
            if not self._heap:
                self._ready.clear()
            try:
                vectors = await asyncio.gather(*(self._embed(memory) for memory in batch))
                done = [(m, v) for m, v in zip(batch, vectors, strict=True) if v is not None]
                if done:
                    await self._store(done)
            finally:
                self._queued.difference_update(m.id for m in batch)
            if not self._heap:
                self._idle.set()

    async def _embed(self, memory: Memory) -> list[float] | None:
        """The memory's vector, retried with backoff; None (and an event) when it cannot be had."""
        for tried in range(1, self.retry.tries + 1):
            try:
                vector = await self.runtime.use_model(
                    ModelType.TEXT_EMBEDDING, {"text": memory.content.text}
                )
                return list(vector)
            except Exception as exc:
                if tried == self.retry.tries:
                    logger.exception("no vector for memory %s", memory.id)
                    await self.runtime.emit_event(
                        EventType.EMBEDDING_GENERATION_FAILED,
                        {
                            "memory_id": memory.id,
                            "room_id": memory.room_id,
                            "error": f"{type(exc).__name__}: {exc}",
                        },
                    )
                    return None
                await asyncio.sleep(self.retry.delay(tried))
        return None

    async def _store(self, done: list[tuple[Memory, list[float]]]) -> None:
        """Write a whole batch of vectors in one storage call."""
        try:
            await self.runtime.adapter.set_embeddings(
                [m.id for m, _ in done], [to_bytes(v) for _, v in done]
            )
        except Exception as exc:
            logger.exception("could not store %d vectors", len(done))
            for memory, _ in done:
                await self.runtime.emit_event(
                    EventType.EMBEDDING_GENERATION_FAILED,
                    {
                        "memory_id": memory.id,
                        "room_id": memory.room_id,
                        "error": f"{type(exc).__name__}: {exc}",
                    },
                )
            return
        for memory, _ in done:
            await self.runtime.emit_event(
                EventType.EMBEDDING_GENERATION_COMPLETED,
                {"memory_id": memory.id, "room_id": memory.room_id},
            )
