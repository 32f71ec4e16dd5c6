"""The embedding worker on a real nats-server, writing through a real memory service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from faststream.nats import NatsBroker

from contracts import Content, Subjects
from contracts.records import Agent, Memory
from services.memory.main import create_broker_for as memory_broker
from shared.agent.character import Character
from shared.agent.embedding_queue import RetryPolicy
from shared.agent.runtime import AgentRuntime
from shared.agent.types import ModelType, Plugin
from shared.bus import create_broker, start_serving, subscriptions_registered
from shared.config import Settings
from shared.embedding import EmbeddingWorker, JetStreamEmbeddingQueue
from shared.storage.adapter import DatabaseAdapter
from shared.storage.client import memory_client
from shared.storage.sql import SqlAdapter
from tests.scripted import embed

AGENT = "agent-e"


@dataclass
class Rig:
    broker: NatsBroker
    subjects: Subjects
    db: DatabaseAdapter
    queue: JetStreamEmbeddingQueue
    models: AgentRuntime
    calls: list[list[str]]
    failures: list[str]
    workers: list[EmbeddingWorker]

    def worker(self, **options: Any) -> EmbeddingWorker:
        retry = RetryPolicy(backoff=0.05, **options)
        worker = EmbeddingWorker(self.broker, self.subjects, self.models, retry=retry)
        self.workers.append(worker)
        return worker

    async def stored(self, text: str, priority: str = "normal") -> Memory:
        memory = Memory(entity_id="u", room_id="r", content=Content(text=text))
        await self.db.create_memory(memory, "messages")
        await self.queue.put(memory, priority)  # type: ignore[arg-type]
        return memory

    async def vector(self, memory: Memory) -> list[float] | None:
        found = await self.db.get_memory_by_id(memory.id, include_embeddings=True)
        assert found is not None
        return found.embedding


@pytest.fixture
async def rig(nats_url: str, subjects: Subjects, tmp_path: Path) -> AsyncIterator[Rig]:
    settings = Settings(nats_url=nats_url, eliza_ns=subjects.namespace)
    storage = SqlAdapter.from_url(f"sqlite:///{tmp_path / 'm.db'}", AGENT)
    await storage.init()
    service = memory_broker(settings, storage)
    broker = create_broker(nats_url, name="embedding-test")
    calls: list[list[str]] = []
    failures: list[str] = []

    async def counting(runtime: AgentRuntime, params: dict[str, Any]) -> Any:
        calls.append(list(params["texts"]))
        if failures:
            raise ConnectionError(failures.pop())
        return [await embed(runtime, {"text": t}) for t in params["texts"]]

    models = AgentRuntime(character=Character(name="models"))
    await models.register_plugin(Plugin("counting", models={ModelType.TEXT_EMBEDDING: counting}))
    async with service, broker:
        await start_serving(service)
        await broker.connect()
        db = memory_client(broker, agent_id=AGENT, subjects=subjects)
        await db.create_agent(Agent(id=AGENT, name="E"))
        queue = JetStreamEmbeddingQueue(broker, subjects, AGENT)
        rig = Rig(broker, subjects, db, queue, models, calls, failures, [])
        yield rig
        for worker in rig.workers:
            await worker.close()
        await broker.config.connection_state.stream.delete_stream(subjects.embedding_stream)
    await storage.close()


async def test_high_priority_drains_first_and_vectors_are_written(rig: Rig) -> None:
    worker = rig.worker()
    await worker.open()
    lows = [await rig.stored(f"low {i}", "low") for i in range(3)]
    high = await rig.stored("urgent", "high")
    assert await worker.drain_once() == 1
    assert rig.calls == [["urgent"]]
    assert await rig.vector(high) is not None
    assert await rig.vector(lows[0]) is None
    assert await worker.drain_once() == 3
    assert rig.calls[1] == ["low 0", "low 1", "low 2"]  # one batch, one model call
    assert all([await rig.vector(m) is not None for m in lows])


async def test_a_failing_model_is_retried_with_backoff_then_succeeds(rig: Rig) -> None:
    worker = rig.worker()
    await worker.open()
    rig.failures.append("model down")
    memory = await rig.stored("retry me")
    assert await worker.drain_once() == 1  # fails, nak with a delay
    assert await rig.vector(memory) is None
    for _ in range(50):
        if await worker.drain_once():
            break
        await asyncio.sleep(0.02)
    assert await rig.vector(memory) is not None
    assert len(rig.calls) == 2


async def test_poison_and_hopeless_requests_go_to_the_dead_letter_subject(
    rig: Rig, nats_url: str
) -> None:
    worker = rig.worker(tries=2)
    await worker.open()
    nc = await nats.connect(nats_url)
    dead: list[tuple[bytes, str]] = []

    async def on_dead(msg: Any) -> None:
        dead.append((msg.data, msg.headers.get("Elizamesh-Dead-Reason", "")))

    await nc.subscribe(rig.subjects.embedding_dead, cb=on_dead)
    await subscriptions_registered(nc)
    try:
        js = nc.jetstream()
        await js.publish(
            rig.subjects.embedding_queue("normal"),
            b"{not json",
            stream=rig.subjects.embedding_stream,
        )
        ghost = Memory(id="ghost", entity_id="u", room_id="r", content=Content(text="gone"))
        await rig.queue.put(ghost, "normal")
        await worker.drain_once()
        for _ in range(50):
            if len(dead) == 2:
                break
            await asyncio.sleep(0.02)
    finally:
        await nc.close()
    reasons = sorted(reason for _, reason in dead)
    assert reasons[0].startswith("memory ghost does not exist")
    assert reasons[1].startswith("unreadable request")
    assert await worker.drain_once() == 0  # neither comes back
