"""The in-process embedding queue: vectors for new memories, computed in the background.

Priorities high, normal and low (high drains first); at most ``capacity``
items (the lowest-priority, oldest ones make room); batches of ``batch_size``
embedded concurrently; up to ``max_retries`` retries with backoff. In the
distributed stack the embedding service does the same from a JetStream queue.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from typing import TYPE_CHECKING, Protocol

from contracts.embedding import Priority
from contracts.records import Memory
from shared.agent.types import EventType, ModelType

if TYPE_CHECKING:
    from shared.agent.runtime import AgentRuntime

logger = logging.getLogger("elizamesh.embedding")

_RANK: dict[str, int] = {"high": 0, "normal": 1, "low": 2}


class EmbeddingSink(Protocol):
    """Where a runtime sends memories that need a vector (in-process, or a JetStream queue)."""

    async def put(self, memory: Memory, priority: Priority = "normal") -> None:
        """Queue ``memory`` for a vector."""
        ...

    def start(self) -> None:
        """Start draining (if this sink drains at all)."""
        ...

    async def stop(self) -> None:
        """Stop draining."""
        ...


class EmbeddingQueue:
    """Background vectors for one runtime's memories."""

    def __init__(
        self,
        runtime: AgentRuntime,
        *,
        capacity: int = 1_000,
        batch_size: int = 10,
        max_retries: int = 3,
        backoff: float = 0.2,
    ) -> None:
        self.runtime = runtime
        self.capacity = capacity
        self.batch_size = batch_size
        self.max_retries = max_retries
        self.backoff = backoff
        self._heap: list[tuple[int, int, Memory]] = []
        self._order = itertools.count()
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._worker: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._heap)

    async def put(self, memory: Memory, priority: Priority = "normal") -> None:
        """Queue ``memory``; when full, the lowest-priority, oldest item is dropped (logged)."""
        heapq.heappush(self._heap, (_RANK[priority], next(self._order), memory))
        if len(self._heap) > self.capacity:
            dropped = max(self._heap, key=lambda item: (item[0], -item[1]))
            self._heap.remove(dropped)
            heapq.heapify(self._heap)
            logger.warning("embedding queue full: dropped memory %s", dropped[2].id)
        self._idle.clear()
        self._ready.set()

    def start(self) -> None:
        """Start draining in the background."""
        if self._worker is None:
            self._worker = asyncio.create_task(self._drain_forever(), name="embedding-queue")

    async def stop(self) -> None:
        """Stop draining; queued items are left (they are re-queued on the next message)."""
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
            await asyncio.gather(*(self._embed(memory) for memory in batch))
            if not self._heap:
                self._idle.set()

    async def _embed(self, memory: Memory) -> None:
        for attempt in range(self.max_retries + 1):
            try:
                vector = await self.runtime.use_model(
                    ModelType.TEXT_EMBEDDING, {"text": memory.content.text}
                )
                await self.runtime.adapter.update_memory(memory.id, embedding=list(vector))
            except Exception as exc:
                if attempt == self.max_retries:
                    logger.exception("no vector for memory %s", memory.id)
                    await self.runtime.emit_event(
                        EventType.EMBEDDING_GENERATION_FAILED,
                        {"memory_id": memory.id, "error": f"{type(exc).__name__}: {exc}"},
                    )
                    return
                await asyncio.sleep(self.backoff * 2**attempt)
            else:
                await self.runtime.emit_event(
                    EventType.EMBEDDING_GENERATION_COMPLETED, {"memory_id": memory.id}
                )
                return
