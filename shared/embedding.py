"""Vectors through the embedding service: the runtime's side (a queue) and the worker's.

The runtime publishes ``EmbeddingRequested`` on a JetStream work queue, one
subject per priority. Embedding-service replicas share durable pull
consumers: each takes a batch from the highest priority that has work, embeds
the texts in one model call, writes the batch's vectors through the memory
service (one ``set_embeddings`` request per agent), and acknowledges. A
failure is retried with backoff (nak with delay, by ``EMBEDDING_RETRY``, the
policy of the in-process queue too); after its last try,
or at once for a body that cannot be read or a vector the memory service
refuses, the request goes to the dead-letter subject and leaves the queue.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import msgspec
from faststream.nats import NatsBroker
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig

from contracts import Subjects
from contracts.embedding import PRIORITIES, EmbeddingRequested, Priority
from contracts.records import Memory
from shared.agent.embedding_queue import EMBEDDING_RETRY, RetryPolicy
from shared.agent.runtime import AgentRuntime
from shared.agent.types import ModelType
from shared.bus import ensure_stream
from shared.errors import BadRequest
from shared.storage.client import memory_client
from shared.storage.vectors import to_bytes
from shared.telemetry import consumed
from shared.workers import PullWorker

logger = logging.getLogger("elizamesh.embedding")

_DECODER = msgspec.json.Decoder(EmbeddingRequested)


class JetStreamEmbeddingQueue:
    """The runtime's embedding sink in the distributed stack: publish, the service embeds."""

    def __init__(self, broker: NatsBroker, subjects: Subjects, agent_id: str) -> None:
        self.broker = broker
        self.subjects = subjects
        self.agent_id = agent_id

    async def put(self, memory: Memory, priority: Priority = "normal") -> None:
        """Queue ``memory`` for the embedding service."""
        request = EmbeddingRequested(
            agent_id=self.agent_id, memory_id=memory.id, text=memory.content.text
        )
        await self.broker.publish(
            request, self.subjects.embedding_queue(priority), stream=self.subjects.embedding_stream
        )

    def start(self) -> None:
        """Nothing to start: the embedding service drains the queue."""

    async def stop(self) -> None:
        """Nothing to stop: the queue outlives this runtime."""


async def ensure_embedding_stream(broker: NatsBroker, subjects: Subjects) -> None:
    """Declare the embedding work queue (idempotent)."""
    await ensure_stream(
        broker, subjects.embedding_stream, [subjects.embedding_queue_template], work_queue=True
    )


class EmbeddingWorker(PullWorker):
    """Drains the embedding queue in batches, high priority first."""

    def __init__(
        self,
        broker: NatsBroker,
        subjects: Subjects,
        models: AgentRuntime,
        *,
        batch_size: int = 16,
        retry: RetryPolicy = EMBEDDING_RETRY,
    ) -> None:
        self.subjects = subjects
        self.models = models
        self.batch_size = batch_size
        self.retry = retry
        self._by_priority: dict[Priority, Any] = {}
        super().__init__(broker)

    async def open(self) -> None:
        """Declare the stream and one durable pull consumer per priority."""
        await ensure_embedding_stream(self.broker, self.subjects)
        js = self.broker.config.connection_state.stream
        for priority in PRIORITIES:
            self._by_priority[priority] = await js.pull_subscribe(
                self.subjects.embedding_queue(priority),
                durable=f"embedding-{priority}",
                stream=self.subjects.embedding_stream,
                config=ConsumerConfig(ack_wait=60, max_deliver=self.retry.tries + 1),
            )
        self.subscriptions = list(self._by_priority.values())
        self.durables = [(self.subjects.embedding_stream, f"embedding-{p}") for p in PRIORITIES]

    async def drain_once(self) -> int:
        """Process one batch from the highest priority that has work; return its size."""
        for priority in PRIORITIES:
            try:
                batch: list[Msg] = await self._by_priority[priority].fetch(
                    self.batch_size, timeout=0.05
                )
            except TimeoutError:
                continue
            if batch:
                await self._process(batch)
                return len(batch)
        return 0

    async def _process(self, batch: list[Msg]) -> None:
        readable: list[tuple[Msg, EmbeddingRequested]] = []
        for msg in batch:
            try:
                readable.append((msg, _DECODER.decode(msg.data)))
            except msgspec.DecodeError as exc:
                await self._dead(msg, f"unreadable request: {exc}")
        if not readable:
            return
        # One model call for the batch, traced in the first request's trace.
        try:
            with consumed("embedding batch", readable[0][0].headers, size=len(readable)):
                vectors = await self.models.use_model(
                    ModelType.TEXT_EMBEDDING, {"texts": [r.text for _, r in readable]}
                )
        except Exception as exc:
            for msg, _ in readable:
                await self._retry(msg, f"model failed: {exc}")
            return
        by_agent: dict[str, list[tuple[Msg, EmbeddingRequested, bytes]]] = {}
        for (msg, request), vector in zip(readable, vectors, strict=True):
            by_agent.setdefault(request.agent_id, []).append((msg, request, to_bytes(vector)))
        for agent_id, items in by_agent.items():
            await self._store(agent_id, items)

    async def _store(
        self, agent_id: str, items: Sequence[tuple[Msg, EmbeddingRequested, bytes]]
    ) -> None:
        """Write one agent's vectors in one request, then settle each message."""
        adapter = memory_client(self.broker, agent_id=agent_id, subjects=self.subjects)
        ids = [request.memory_id for _, request, _ in items]
        missing: set[str] = set()
        try:
            with consumed("embedding write", items[0][0].headers, agent_id=agent_id, size=len(ids)):
                stored = await adapter.set_embeddings(ids, [blob for _, _, blob in items])
                if stored < len(set(ids)):  # some memories are gone: which ones?
                    missing = set(ids) - {m.id for m in await adapter.get_memories_by_ids(ids)}
        except BadRequest as exc:  # such as another vector size: no retry will do better
            for msg, _, _ in items:
                await self._dead(msg, f"the vector was refused: {exc}")
            return
        except Exception as exc:
            for msg, _, _ in items:
                await self._retry(msg, f"could not store the vector: {exc}")
            return
        for msg, request, _ in items:
            with consumed("embedding store", msg.headers, memory_id=request.memory_id):
                if request.memory_id in missing:
                    await self._dead(msg, f"memory {request.memory_id} does not exist")
                else:
                    await msg.ack()

    async def _retry(self, msg: Msg, reason: str) -> None:
        delivered = msg.metadata.num_delivered
        if delivered >= self.retry.tries:
            await self._dead(msg, f"{reason} (after {delivered} tries)")
            return
        logger.warning("embedding retry %d: %s", delivered, reason)
        await msg.nak(delay=self.retry.delay(delivered))

    async def _dead(self, msg: Msg, reason: str) -> None:
        logger.error("embedding request dead-lettered: %s", reason)
        with contextlib.suppress(Exception):
            await self.broker.publish(
                msg.data,
                self.subjects.embedding_dead,
                headers={"Elizamesh-Dead-Reason": reason[:200], "Elizamesh-Subject": msg.subject},
            )
        await msg.term()
