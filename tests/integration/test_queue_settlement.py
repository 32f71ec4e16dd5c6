"""Queue workers settle every message on its own: poison is dead-lettered, never a blockage.

A real nats-server and memory service. Each pull here brings the poison and
the valid messages together (they are queued before the worker starts), so
a worker that left the poison unsettled, or let it fail its batch, would hold
the valid ones for ``ack_wait`` (60 s for embeddings, 300 s for evaluations).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from faststream.nats import NatsBroker
from nats.aio.client import Client

from contracts import Content, Subjects
from contracts.evaluation import EvaluateTurn
from contracts.records import Agent, Memory
from services.memory.main import create_broker_for as memory_broker
from shared.agent.character import Character
from shared.agent.embedding_queue import RetryPolicy
from shared.agent.runtime import AgentRuntime
from shared.agent.types import ModelType
from shared.bus import create_broker, start_serving
from shared.config import Settings
from shared.consumer import DEAD_REASON_HEADER, DEAD_SUBJECT_HEADER, Backoff
from shared.embedding import EmbeddingWorker, JetStreamEmbeddingQueue, ensure_embedding_stream
from shared.evaluation import EvaluationWorker, ensure_evaluation_stream
from shared.hosting import AgentHost, HostedAgents
from shared.storage.client import memory_client
from shared.storage.sql import SqlAdapter
from tests.scripted import embed

AGENT = "agent-q"
DEEP = b'{"text": "x", "extra": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
NOT_UTF8 = b'{"agent_id": "\xff\xfe"}'


@dataclass
class Queues:
    broker: NatsBroker
    subjects: Subjects
    nats_url: str
    storage: SqlAdapter
    settings: Settings
    workers: list[Any] = field(default_factory=list)

    async def dead_letters(self, count: int) -> list[tuple[bytes, dict[str, str]]]:
        """The first ``count`` dead letters stored (waits for them)."""
        js = self.broker.config.connection_state.stream
        subscription = await js.subscribe(
            self.subjects.dead_letters_template + "",
            stream=self.subjects.dead_letters_stream,
            ordered_consumer=True,
        )
        embedding_dead = await js.subscribe(
            self.subjects.embedding_dead, stream=self.subjects.dead_letters_stream
        )
        letters: list[tuple[bytes, dict[str, str]]] = []
        try:
            async with asyncio.timeout(30):
                while len(letters) < count:
                    for sub in (subscription, embedding_dead):
                        try:
                            msg = await sub.next_msg(timeout=0.1)
                        except TimeoutError:
                            continue
                        letters.append((msg.data, dict(msg.headers or {})))
        finally:
            await subscription.unsubscribe()
            await embedding_dead.unsubscribe()
        return letters


@pytest.fixture
async def queues(nats_url: str, subjects: Subjects, tmp_path: Path) -> AsyncIterator[Queues]:
    settings = Settings.from_env(
        {
            "NATS_URL": nats_url,
            "ELIZA_NS": subjects.namespace,
            "DATABASE_URL": f"sqlite:///{tmp_path}/m.db",
        }
    )
    storage = SqlAdapter.from_url(settings.database_url, "elizamesh-memory")
    await storage.init()
    broker = create_broker(nats_url, name="queues-test")
    async with broker:
        await broker.connect()
        await ensure_embedding_stream(broker, subjects)
        await ensure_evaluation_stream(broker, subjects)
        rig = Queues(broker, subjects, nats_url, storage, settings)
        try:
            yield rig
        finally:
            for worker in rig.workers:
                await worker.close()
            js = broker.config.connection_state.stream
            for name in (
                subjects.embedding_stream,
                subjects.evaluation_stream,
                subjects.dead_letters_stream,
            ):
                await js.delete_stream(name)
    await storage.close()


def embedder() -> AgentRuntime:
    models = AgentRuntime(character=Character(name="models"))
    models.register_model(ModelType.TEXT_EMBEDDING, embed)
    return models


async def until(check: Callable[[], Awaitable[bool]], *, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        for _ in itertools.count():
            if await check():
                return
            await asyncio.sleep(0.05)


async def queue_raw(nc: Client, subject: str, stream: str, body: bytes) -> None:
    await nc.jetstream().publish(subject, body, stream=stream)


async def test_a_poison_request_is_dead_lettered_and_the_valid_ones_of_its_pull_are_embedded(
    queues: Queues,
) -> None:
    memory = memory_broker(queues.settings, queues.storage)
    async with memory:
        await start_serving(memory)
        db = memory_client(queues.broker, agent_id=AGENT, subjects=queues.subjects)
        await db.create_agent(Agent(id=AGENT, name="Q"))
        queue = JetStreamEmbeddingQueue(queues.broker, queues.subjects, AGENT)
        subject = queues.subjects.embedding_queue("normal")
        nc = await nats.connect(queues.nats_url)
        try:
            await queue_raw(nc, subject, queues.subjects.embedding_stream, DEEP)
            await queue_raw(nc, subject, queues.subjects.embedding_stream, NOT_UTF8)
            valid = []
            for i in range(5):
                stored = Memory(entity_id="u", room_id="r", content=Content(text=f"valid {i}"))
                await db.create_memory(stored, "messages")
                await queue.put(stored)
                valid.append(stored)
        finally:
            await nc.close()
        worker = EmbeddingWorker(queues.broker, queues.subjects, embedder())
        queues.workers.append(worker)
        await worker.open()

        async def all_embedded() -> bool:
            found = await db.get_memories_by_ids([m.id for m in valid], include_embeddings=True)
            return len(found) == len(valid) and all(m.embedding for m in found)

        await until(all_embedded)  # well within ack_wait (60 s): nothing waited for the poison
        letters = await queues.dead_letters(2)
    reasons = sorted(headers[DEAD_REASON_HEADER] for _, headers in letters)
    assert reasons[0].startswith("unreadable request: malformed JSON: nested too deeply")
    assert reasons[1].startswith("unreadable request: the body is not UTF-8")
    assert {headers[DEAD_SUBJECT_HEADER] for _, headers in letters} == {subject}
    assert sorted(body for body, _ in letters) == sorted([DEEP, NOT_UTF8])
    js = queues.broker.config.connection_state.stream
    info = await js.consumer_info(queues.subjects.embedding_stream, "embedding-normal")
    assert (info.num_pending, info.num_ack_pending) == (0, 0)


async def test_vectors_wait_out_a_storage_outage_then_are_written(queues: Queues) -> None:
    memory = Memory(entity_id="u", room_id="r", content=Content(text="patient"))
    queue = JetStreamEmbeddingQueue(queues.broker, queues.subjects, AGENT)
    await queue.put(memory)
    outage = Backoff(first=0.05, longest=0.2, period=600)
    worker = EmbeddingWorker(
        queues.broker,
        queues.subjects,
        embedder(),
        retry=RetryPolicy(tries=2, backoff=0.05),
        outage=outage,
    )
    queues.workers.append(worker)
    await worker.open()  # no memory service: every write is `unavailable`
    js = queues.broker.config.connection_state.stream

    async def retried_beyond_tries() -> bool:
        info = await js.consumer_info(queues.subjects.embedding_stream, "embedding-normal")
        return int(info.num_redelivered or 0) >= 3 or int(info.delivered.consumer_seq) >= 4

    await until(retried_beyond_tries)  # more tries than `retry` allows a failing model
    service = memory_broker(queues.settings, queues.storage)
    async with service:
        await start_serving(service)
        db = memory_client(queues.broker, agent_id=AGENT, subjects=queues.subjects)
        await db.create_agent(Agent(id=AGENT, name="Q"))
        await db.create_memory(memory, "messages")

        async def written() -> bool:
            found = await db.get_memory_by_id(memory.id, include_embeddings=True)
            return found is not None and found.embedding is not None

        await until(written)
    dead = await js.stream_info(queues.subjects.dead_letters_stream)
    assert dead.state.messages == 0


async def test_a_storage_outage_longer_than_the_period_is_dead_lettered_with_its_reason(
    queues: Queues,
) -> None:
    memory = Memory(entity_id="u", room_id="r", content=Content(text="given up"))
    await JetStreamEmbeddingQueue(queues.broker, queues.subjects, AGENT).put(memory)
    worker = EmbeddingWorker(
        queues.broker,
        queues.subjects,
        embedder(),
        outage=Backoff(first=0.05, longest=0.1, period=0.5),
    )
    queues.workers.append(worker)
    await worker.open()
    [(body, headers)] = await queues.dead_letters(1)
    assert msgspec.json.decode(body)["memory_id"] == memory.id
    assert "unavailable" in headers[DEAD_REASON_HEADER]


async def test_a_poison_evaluation_job_is_dead_lettered_and_the_valid_ones_are_settled(
    queues: Queues,
) -> None:
    host = AgentHost(queues.broker, queues.subjects, HostedAgents(plugins=()))
    nc = await nats.connect(queues.nats_url)
    subject = queues.subjects.turn_evaluate("someone")
    try:
        await queue_raw(nc, subject, queues.subjects.evaluation_stream, DEEP)
        await queue_raw(nc, subject, queues.subjects.evaluation_stream, NOT_UTF8)
        job = EvaluateTurn(
            agent_id="someone",
            run_id="run-1",
            message=Memory(entity_id="u", room_id="r", content=Content(text="hi")),
        )
        for _ in range(3):  # an agent that is gone: evaluated as nothing to do, and acked
            await queue_raw(
                nc, subject, queues.subjects.evaluation_stream, msgspec.json.encode(job)
            )
    finally:
        await nc.close()
    stops: list[Any] = []

    class Counting(EvaluationWorker):
        async def evaluate(self, job: EvaluateTurn) -> bool:
            stops.append(job.run_id)
            return await super().evaluate(job)

    worker = Counting(queues.broker, queues.subjects, host, backoff=0.05)
    queues.workers.append(worker)
    memory = memory_broker(queues.settings, queues.storage)
    async with memory:
        await start_serving(memory)
        await worker.open()
        letters = await queues.dead_letters(2)
        js = queues.broker.config.connection_state.stream

        async def drained() -> bool:
            info = await js.stream_info(queues.subjects.evaluation_stream)
            return int(info.state.messages) == 0

        await until(drained)
    assert stops == ["run-1"] * 3
    reasons = sorted(headers[DEAD_REASON_HEADER] for _, headers in letters)
    assert reasons[0].startswith("malformed JSON: nested too deeply")
    assert reasons[1].startswith("the body is not UTF-8")
