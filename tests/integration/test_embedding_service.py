"""The embedding worker on a real nats-server, writing through a real memory service."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
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
from shared.embedding import EmbeddingWorker, JetStreamEmbeddingQueue, ensure_embedding_stream
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
        await ensure_embedding_stream(broker, subjects)  # requests may wait for a worker
        queue = JetStreamEmbeddingQueue(broker, subjects, AGENT)
        rig = Rig(broker, subjects, db, queue, models, calls, failures, [])
        yield rig
        for worker in rig.workers:
            await worker.close()
        await broker.config.connection_state.stream.delete_stream(subjects.embedding_stream)
    await storage.close()


async def until(check: Callable[[], Awaitable[bool]], *, timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        for _ in itertools.count():
            if await check():
                return
            await asyncio.sleep(0.02)


async def test_high_priority_drains_first_and_vectors_are_written(rig: Rig) -> None:
    lows = [await rig.stored(f"low {i}", "low") for i in range(3)]
    high = await rig.stored("urgent", "high")
    await rig.worker().open()

    async def all_written() -> bool:
        return all([await rig.vector(m) is not None for m in [high, *lows]])

    await until(all_written)
    # The high one first; the lows in one batch, one model call.
    assert rig.calls == [["urgent"], ["low 0", "low 1", "low 2"]]


async def test_a_failing_model_is_retried_with_backoff_then_succeeds(rig: Rig) -> None:
    rig.failures.append("model down")
    memory = await rig.stored("retry me")
    await rig.worker().open()

    async def written() -> bool:
        return await rig.vector(memory) is not None

    await until(written)
    assert rig.calls == [["retry me"], ["retry me"]]  # failed, nakked with a delay, tried again


async def test_poison_and_hopeless_requests_go_to_the_dead_letter_subject(
    rig: Rig, nats_url: str
) -> None:
    nc = await nats.connect(nats_url)
    dead: list[tuple[bytes, str]] = []

    async def on_dead(msg: Any) -> None:
        dead.append((msg.data, msg.headers.get("Elizamesh-Dead-Reason", "")))

    await nc.subscribe(rig.subjects.embedding_dead, cb=on_dead)
    await subscriptions_registered(nc)
    try:
        await rig.worker(tries=2).open()
        js = nc.jetstream()
        await js.publish(
            rig.subjects.embedding_queue("normal"),
            b"{not json",
            stream=rig.subjects.embedding_stream,
        )
        ghost = Memory(id="ghost", entity_id="u", room_id="r", content=Content(text="gone"))
        await rig.queue.put(ghost, "normal")

        async def both_dead() -> bool:
            return len(dead) == 2

        await until(both_dead)
        info = await js.consumer_info(rig.subjects.embedding_stream, "embedding-normal")
    finally:
        await nc.close()
    reasons = sorted(reason for _, reason in dead)
    assert reasons[0].startswith("memory ghost does not exist")
    assert reasons[1].startswith("unreadable request")
    assert (info.num_pending, info.num_ack_pending) == (0, 0)  # neither comes back


async def test_an_idle_worker_asks_the_server_once_per_long_poll(rig: Rig, nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    pulls: list[str] = []

    async def on_pull(msg: Any) -> None:
        pulls.append(msg.subject)

    await nc.subscribe(f"$JS.API.CONSUMER.MSG.NEXT.{rig.subjects.embedding_stream}.*", cb=on_pull)
    await subscriptions_registered(nc)
    try:
        worker = rig.worker()
        await worker.open()
        await asyncio.sleep(3)  # a window shorter than one long poll (QUEUE_WAIT)
    finally:
        await nc.close()
    # One pull per priority, waiting on the server; a short poll would make dozens.
    assert sorted(s.rsplit(".", 1)[-1] for s in pulls) == [
        "embedding-high",
        "embedding-low",
        "embedding-normal",
    ]
