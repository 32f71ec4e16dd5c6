"""Vectors through the embedding service: the runtime's side (a queue) and the worker's.

The runtime publishes ``EmbeddingRequested`` on a JetStream work queue, one
subject per priority. Embedding-service replicas share durable consumers, one
per priority, pulled by FastStream subscribers with a long poll: the messages
of one pull are embedded in one model call once no higher priority has
work, their vectors written through the memory service (one
``set_embeddings`` request per agent), and each message acknowledged. A
failure of the model is retried with backoff (nak with delay, by
``EMBEDDING_RETRY``, the policy of the in-process queue too); a storage
outage (``Unavailable``) is retried for ``QUEUE_RETRY_SECONDS`` (minutes);
after the last try, or at once for a body that cannot be read (not UTF-8,
not JSON, nested too deep) or a vector the memory service refuses, the
request is stored on the dead-letter subject (``embedding_dead``, kept by
the dead-letter stream) and leaves the queue. A poison request is settled
on its own: the valid ones of its pull are embedded all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
from faststream.nats import NatsBroker, NatsMessage

from contracts import Subjects
from contracts.embedding import PRIORITIES, EmbeddingRequested, Priority
from contracts.events import AgentEventOccurred
from contracts.records import Memory
from shared.agent.embedding_queue import EMBEDDING_RETRY, RetryPolicy
from shared.agent.runtime import AgentRuntime
from shared.agent.turn import current_turn
from shared.agent.types import EventType, ModelType
from shared.bus import as_service_error, ensure_stream
from shared.consumer import (
    QUEUE_WAIT,
    Backoff,
    QueueConsumers,
    dead_letter,
    decoded,
    ensure_dead_letter_stream,
    pull_consumer,
    retry_or_dead_letter,
)
from shared.errors import BadRequest, Unavailable
from shared.events import EventPublisher, bus_event_type
from shared.storage.client import memory_client
from shared.storage.vectors import to_bytes
from shared.telemetry import consumed

logger = logging.getLogger("elizamesh.embedding")

_DECODER = msgspec.json.Decoder(EmbeddingRequested)
_MAX_YIELD = 2.0
"""Seconds a batch waits at most for higher priorities (a retrying one holds no one longer)."""


class JetStreamEmbeddingQueue:
    """The runtime's embedding sink in the distributed stack: publish, the service embeds."""

    def __init__(self, broker: NatsBroker, subjects: Subjects, agent_id: str) -> None:
        self.broker = broker
        self.subjects = subjects
        self.agent_id = agent_id

    async def put(self, memory: Memory, priority: Priority = "normal") -> None:
        """Queue ``memory`` for the embedding service.

        The same memory with the same text is queued once within the stream's
        duplicate window (``Nats-Msg-Id``), whichever replica or priority
        queues it: replicas that start together each scan the same backlog.
        """
        turn = current_turn()
        request = EmbeddingRequested(
            agent_id=self.agent_id,
            memory_id=memory.id,
            text=memory.content.text,
            room_id=memory.room_id,
            run_id=turn.run_id if turn is not None else None,
        )
        text = hashlib.sha256((memory.content.text or "").encode()).hexdigest()[:16]
        await self.broker.publish(
            request,
            self.subjects.embedding_queue(priority),
            headers={"Nats-Msg-Id": f"{self.agent_id}:{memory.id}:{text}"},
            stream=self.subjects.embedding_stream,
        )

    def start(self) -> None:
        """Nothing to start: the embedding service drains the queue."""

    async def stop(self) -> None:
        """Nothing to stop: the queue outlives this runtime."""


async def ensure_embedding_stream(broker: NatsBroker, subjects: Subjects) -> None:
    """Declare the embedding work queue and the dead-letter stream (idempotent)."""
    await ensure_stream(
        broker, subjects.embedding_stream, [subjects.embedding_queue_template], work_queue=True
    )
    await ensure_dead_letter_stream(broker, subjects)


class EmbeddingWorker(QueueConsumers):
    """Embeds from the embedding queue in batches, high priority first."""

    def __init__(
        self,
        broker: NatsBroker,
        subjects: Subjects,
        models: AgentRuntime,
        *,
        batch_size: int = 16,
        retry: RetryPolicy = EMBEDDING_RETRY,
        outage: Backoff | None = None,
        wait: float = QUEUE_WAIT,
    ) -> None:
        """Prepare the worker (``open`` starts it).

        Args:
            broker: Its connection.
            subjects: The stack's subjects.
            models: A runtime with a ``TEXT_EMBEDDING`` model.
            batch_size: Requests embedded in one model call, at most.
            retry: Retries of a request whose embedding failed.
            outage: Retries while storage is ``Unavailable`` (default 10 minutes).
            wait: Seconds one pull waits on the server (a long poll).
        """
        super().__init__(broker)
        self.subjects = subjects
        self.models = models
        self.batch_size = batch_size
        self.retry = retry
        self.outage = outage or Backoff()
        # Announced as the in-process queue does, so both wirings report the same events.
        self.events = EventPublisher(broker, stream=subjects.events_stream)
        self.wait = wait
        self._joining: dict[Priority, list[_Taken]] = {p: [] for p in PRIORITIES}
        self._in_hand: dict[Priority, int] = dict.fromkeys(PRIORITIES, 0)
        self._delayed: dict[Priority, set[int]] = {p: set() for p in PRIORITIES}
        """Stream sequences this worker nakked with a delay, not delivered again yet."""
        self._batch_done = asyncio.Event()

    async def declare(self) -> None:
        """Declare the stream and subscribe to one durable consumer per priority."""
        await ensure_embedding_stream(self.broker, self.subjects)
        for priority in PRIORITIES:
            self.durables.append(
                pull_consumer(
                    self.broker,
                    self.subjects.embedding_queue(priority),
                    functools.partial(self._take, priority),
                    stream=self.subjects.embedding_stream,
                    durable=_durable(priority),
                    max_deliver=-1,  # bounded by ``retry`` and ``outage``, here
                    batch_size=self.batch_size,
                    wait=self.wait,
                    description=self._take.__doc__,
                    backoff=self.outage,
                    dead_letters=(self.subjects.embedding_dead, self.subjects.dead_letters_stream),
                )
            )

    async def _take(self, priority: Priority, message: NatsMessage) -> None:
        """Embed one requested vector, in one model call with the others of its pull."""
        self._delayed[priority].discard(message.raw_message.metadata.sequence.stream)
        self._in_hand[priority] += 1
        try:
            try:
                request = decoded(_DECODER, message.body)
            except BadRequest as exc:
                await self._dead(message, f"unreadable request: {exc}")
                return
            taken = _Taken(message, request, asyncio.get_running_loop().create_future())
            joining = self._joining[priority]
            joining.append(taken)
            if len(joining) > 1:  # the first one's handler embeds the batch
                await taken.settled
                return
            # The messages of one pull are handled side by side: let them join.
            joined = 0
            while joined != len(joining):
                joined = len(joining)
                await asyncio.sleep(0)
            batch = joining.copy()
            joining.clear()
            try:
                await self._yield_to_higher(priority)
                await self._process(priority, batch)
            finally:
                for other in batch:
                    if not other.settled.done():
                        other.settled.set_result(None)
        finally:
            self._in_hand[priority] -= 1
            self._batch_done.set()

    async def _yield_to_higher(self, priority: Priority) -> None:
        """Wait while a higher priority has work (at most ``_MAX_YIELD`` seconds)."""
        higher = PRIORITIES[: PRIORITIES.index(priority)]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _MAX_YIELD
        while higher and loop.time() < deadline and await self._busy(higher):
            self._batch_done.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await self._batch_done.wait()

    async def _busy(self, priorities: Sequence[Priority]) -> bool:
        """Whether any of ``priorities`` has messages waiting or in a replica's hands.

        A message nakked here with a delay waits for its retry: it holds no one up.
        """
        js = self.broker.config.connection_state.stream
        for priority in priorities:
            if self._in_hand[priority]:
                return True
            info = await js.consumer_info(self.subjects.embedding_stream, _durable(priority))
            if not info.num_ack_pending:  # those nakked here were taken, or given up
                self._delayed[priority].clear()
            delivered = (info.num_ack_pending or 0) - len(self._delayed[priority])
            if info.num_pending or delivered > 0:
                return True
        return False

    async def _process(self, priority: Priority, batch: list[_Taken]) -> None:
        # One model call for the batch, traced in the first request's trace.
        started = time.perf_counter()
        try:
            with consumed("embedding batch", batch[0].message.headers, size=len(batch)):
                vectors = await self.models.use_model(
                    ModelType.TEXT_EMBEDDING, {"texts": [t.request.text for t in batch]}
                )
        except Exception as exc:
            for taken in batch:
                await self._retry(priority, taken.message, f"model failed: {exc}")
            return
        elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
        for taken in batch:  # one call per memory in one process: one event per memory here
            await self._announce(
                taken.request,
                EventType.MODEL_USED,
                type=str(ModelType.TEXT_EMBEDDING),
                elapsed_ms=elapsed_ms,
            )
        by_agent: dict[str, list[tuple[_Taken, bytes]]] = {}
        for taken, vector in zip(batch, vectors, strict=True):
            by_agent.setdefault(taken.request.agent_id, []).append((taken, to_bytes(vector)))
        for agent_id, items in by_agent.items():
            await self._store(priority, agent_id, items)

    async def _store(
        self, priority: Priority, agent_id: str, items: Sequence[tuple[_Taken, bytes]]
    ) -> None:
        """Write one agent's vectors in one request, then settle each message."""
        adapter = memory_client(self.broker, agent_id=agent_id, subjects=self.subjects)
        ids = [taken.request.memory_id for taken, _ in items]
        headers = items[0][0].message.headers
        missing: set[str] = set()
        try:
            with consumed("embedding write", headers, agent_id=agent_id, size=len(ids)):
                stored = await adapter.set_embeddings(ids, [blob for _, blob in items])
                if stored < len(set(ids)):  # some memories are gone: which ones?
                    missing = set(ids) - {m.id for m in await adapter.get_memories_by_ids(ids)}
        except BadRequest as exc:  # such as another vector size: no retry will do better
            for taken, _ in items:
                await self._dead(taken.message, f"the vector was refused: {exc}")
            return
        except Exception as exc:
            error = as_service_error(exc)
            for taken, _ in items:
                reason = f"could not store the vector: {error.code}: {error}"
                if isinstance(error, Unavailable):  # an outage: minutes of retries
                    await self._wait_out(priority, taken.message, reason)
                else:
                    await self._retry(priority, taken.message, reason)
            return
        for taken, _ in items:
            memory_id = taken.request.memory_id
            with consumed("embedding store", taken.message.headers, memory_id=memory_id):
                if memory_id in missing:
                    await self._dead(taken.message, f"memory {memory_id} does not exist")
                else:
                    await taken.message.ack()
                    await self._announce(taken.request, EventType.EMBEDDING_GENERATION_COMPLETED)

    async def _retry(self, priority: Priority, message: NatsMessage, reason: str) -> None:
        metadata = message.raw_message.metadata
        delivered = metadata.num_delivered
        if delivered >= self.retry.tries:
            await self._dead(message, f"{reason} (after {delivered} tries)")
            return
        logger.warning("embedding retry %d: %s", delivered, reason)
        self._delayed[priority].add(metadata.sequence.stream)
        await message.nack(delay=self.retry.delay(delivered))

    async def _wait_out(self, priority: Priority, message: NatsMessage, reason: str) -> None:
        """Retry through a storage outage for ``outage.period``, then dead-letter."""
        self._delayed[priority].add(message.raw_message.metadata.sequence.stream)
        await retry_or_dead_letter(
            self.broker,
            message,
            reason,
            backoff=self.outage,
            subject=self.subjects.embedding_dead,
            stream=self.subjects.dead_letters_stream,
        )

    async def _announce(
        self, request: EmbeddingRequested, event: EventType, **data: object
    ) -> None:
        """Publish ``event`` about ``request``'s memory on the events stream (never raises).

        ``data``: the event's details (``error``, ``type``, ...), beside ``memory_id``.
        """
        event_type = bus_event_type(event)
        details = {"memory_id": request.memory_id, **data}
        await self.events.publish(
            AgentEventOccurred(
                agent_id=request.agent_id,
                event_type=event_type,
                run_id=request.run_id,
                room_id=request.room_id,
                data=details,
            ),
            self.subjects.event(request.agent_id, event_type),
        )

    async def close(self) -> None:
        """Stop pulling; wait for the events announced so far to be stored."""
        await super().close()
        await self.events.close()

    async def _dead(self, message: NatsMessage, reason: str) -> None:
        with contextlib.suppress(BadRequest):  # an unreadable request announces nothing
            request = decoded(_DECODER, message.body)
            await self._announce(request, EventType.EMBEDDING_GENERATION_FAILED, error=reason)
        await dead_letter(
            self.broker,
            message,
            self.subjects.embedding_dead,
            reason,
            stream=self.subjects.dead_letters_stream,
        )


@dataclass
class _Taken:
    """A request taken from the queue, settled by the handler that embeds its batch."""

    message: NatsMessage
    request: EmbeddingRequested
    settled: asyncio.Future[None]


def _durable(priority: Priority) -> str:
    return f"embedding-{priority}"
