"""One turn announces the same events in one process and across services, each one correlated.

Embedded: the runtime's own listeners. Distributed: the events stream, fed by
the runtime replica, the embedding worker and the evaluator worker (the
``wire`` rig of ``test_turn_over_nats``: a real nats-server and memory service).
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

from contracts import Content
from contracts.events import AgentEventOccurred
from contracts.records import Memory
from shared.agent.character import Character
from shared.agent.embedding_queue import EmbeddingQueue
from shared.agent.runtime import AgentRuntime
from shared.agent.types import EventType
from shared.events import bus_event_type
from shared.storage.sql import SqlAdapter
from tests.integration.test_turn_over_nats import (  # noqa: F401 - the fixtures used here
    AGENT,
    Wire,
    events_of,
    raw,
    wire,
)
from tests.scripted import ScriptedModel, plan

REPLY = plan("Hello from both wirings")
ROOM = "room-events"


async def embedded_events(tmp_path: Path) -> list[dict[str, Any]]:
    """Every event one turn emits in one process, with the ids it carries."""
    model = ScriptedModel(default=REPLY)
    adapter = SqlAdapter.from_url(f"sqlite:///{tmp_path / 'embedded.db'}", AGENT)
    runtime = AgentRuntime(
        character=Character(name="Eliza", id=AGENT, bio=["A helpful agent."]),
        plugins=[model.plugin(embeddings=True)],
        adapter=adapter,
        settings={"TASK_TICK_SECONDS": "3600"},
    )
    await runtime.initialize()
    fired: list[dict[str, Any]] = []
    for event in EventType:

        async def record(payload: dict[str, Any], event: EventType = event) -> None:
            fired.append({**payload, "event": bus_event_type(event)})

        runtime.on(event, record)
    try:
        await runtime.message_service.handle_message(
            runtime, Memory(entity_id=f"user-{ROOM}", room_id=ROOM, content=Content(text="hi"))
        )
        queue = runtime.embedding_queue
        assert isinstance(queue, EmbeddingQueue)
        await queue.drained()
    finally:
        await runtime.stop()
        await adapter.close()
    return fired


async def test_one_turn_announces_the_same_events_in_both_wirings(
    wire: Wire,  # noqa: F811 - the fixture imported above
    raw: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    embedded = await embedded_events(tmp_path)

    wire.model.default = REPLY
    result = await wire.send("hi", ROOM)
    assert result.status == "completed"
    await wire.queues_drained()
    distributed: list[AgentEventOccurred] = [
        e for e in await events_of(raw, wire.subjects) if e.agent_id == AGENT
    ]

    assert collections.Counter(e.event_type for e in distributed) == collections.Counter(
        e["event"] for e in embedded
    )
    turn_events = [e for e in distributed if e.run_id == result.run_id]
    assert {e.room_id for e in turn_events} == {ROOM}
    completed = [e for e in distributed if e.event_type == "embedding.generation_completed"]
    assert completed
    assert all(e.room_id == ROOM and e.data.get("memory_id") for e in completed)
