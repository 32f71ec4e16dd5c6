"""The distributed embedding backlog: a memory queued by several replicas is embedded once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import pytest
from faststream.nats import NatsBroker

from contracts import Content, Subjects
from contracts.embedding import Priority
from contracts.records import Memory
from shared.bus import create_broker
from shared.embedding import JetStreamEmbeddingQueue, ensure_embedding_stream

AGENT = "backlog-agent"


@pytest.fixture
async def brokers(nats_url: str, subjects: Subjects) -> AsyncIterator[list[NatsBroker]]:
    first, second = (
        create_broker(nats_url, name="replica-1"),
        create_broker(nats_url, name="replica-2"),
    )
    async with first, second:
        await first.start()
        await second.start()
        await ensure_embedding_stream(first, subjects)
        try:
            yield [first, second]
        finally:
            await first.config.connection_state.stream.delete_stream(subjects.embedding_stream)


async def test_a_backlog_queued_by_two_replicas_is_queued_once_and_a_changed_text_again(
    brokers: list[NatsBroker], subjects: Subjects
) -> None:
    memories = [
        Memory(id=f"m{n}", entity_id="u", room_id="r", content=Content(text=f"text {n}"))
        for n in range(3)
    ]
    queues = [JetStreamEmbeddingQueue(b, subjects, AGENT) for b in brokers]
    priorities: tuple[Priority, ...] = ("low", "normal")
    for queue, priority in zip(queues, priorities, strict=True):
        for memory in memories:
            await queue.put(memory, priority)
    js = brokers[0].config.connection_state.stream
    assert (await js.stream_info(subjects.embedding_stream)).state.messages == 3

    edited = msgspec.structs.replace(memories[0], content=Content(text="text 0, edited"))
    await queues[1].put(edited, "low")
    assert (await js.stream_info(subjects.embedding_stream)).state.messages == 4
