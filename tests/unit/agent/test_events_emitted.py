"""Every declared event type fires where what it names happens, with the ids to correlate it.

The whole ``EventType`` list is walked: each type must be seen after a real
call (a turn, ``ensure_connection``, ``delete_message``, ...). Only the types
that by definition come from connectors and plugins (``CONNECTOR_EVENTS``:
a reaction, an interaction, a generated post, as in elizaOS) are emitted by
the test itself, as a connector would, and what the runtime does with them is
checked.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from contracts import Content
from contracts.records import Entity, Memory, Room, World
from shared.agent.character import Character
from shared.agent.embedding_queue import EmbeddingQueue, RetryPolicy
from shared.agent.message_service import MessageOptions
from shared.agent.runtime import AgentRuntime
from shared.agent.types import (
    Action,
    ActionResult,
    Evaluator,
    EventType,
    ModelType,
    Plugin,
)
from shared.errors import BadRequest, Conflict
from tests.scripted import ScriptedModel, embed, plan

CONNECTOR_EVENTS = frozenset(
    {EventType.REACTION_RECEIVED, EventType.INTERACTION_RECEIVED, EventType.POST_GENERATED}
)
"""Reported by connectors and plugins (elizaOS's Discord, X, ... plugins emit them)."""


WITHOUT_ROOM = frozenset(
    {
        EventType.WORLD_JOINED,
        EventType.WORLD_CONNECTED,
        EventType.WORLD_LEFT,
        EventType.ENTITY_UPDATED,  # an entity is not in one room
        EventType.MODEL_USED,  # a queued vector's model call belongs to no turn
    }
)
"""Events that are not about one room."""

QUEUES: dict[str, EmbeddingQueue] = {}
"""Each test agent's in-process queue (``runtime.embedding_queue`` is typed as any sink)."""


class Recorder:
    """Every event the runtime emits, in order, with its payload."""

    def __init__(self, runtime: AgentRuntime) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []
        for event in EventType:
            runtime.on(event, self._listener(event))

    def _listener(self, event: EventType) -> Callable[[dict[str, Any]], Any]:
        async def listen(payload: dict[str, Any]) -> None:
            self.seen.append((event.value, payload))

        return listen

    def of(self, event: EventType) -> list[dict[str, Any]]:
        return [payload for name, payload in self.seen if name == event.value]

    def names(self) -> set[str]:
        return {name for name, _ in self.seen}


async def embed_unless_poisoned(runtime: AgentRuntime, params: dict[str, Any]) -> list[float]:
    if "unembeddable" in str(params.get("text", "")):
        raise RuntimeError("the embedding model refuses this text")
    vector: list[float] = await embed(runtime, params)
    return vector


async def scored(*args: Any) -> None:
    del args


async def look_up(*args: Any) -> ActionResult:
    del args
    return ActionResult(text="looked up", values={"found": "yes"})


@pytest.fixture
async def agent(tmp_path: Path, model: ScriptedModel) -> AsyncIterator[AgentRuntime]:
    tools = Plugin(
        "tools",
        actions=[Action("LOOKUP", look_up, "Look something up.")],
        evaluators=[Evaluator("SCORE", scored, "Scores every turn.", always_run=True)],
        models={ModelType.TEXT_EMBEDDING: embed_unless_poisoned},
    )
    runtime = AgentRuntime(
        character=Character(name="Eve"),
        plugins=[model.plugin(), tools],
        settings={"DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}", "TASK_TICK_SECONDS": "3600"},
    )
    runtime.embedding_queue = QUEUES[runtime.agent_id] = EmbeddingQueue(
        runtime, retry=RetryPolicy(tries=2, backoff=0.01)
    )
    await runtime.initialize()
    yield runtime
    await runtime.stop()


def says(text: str, room: str = "dm", **content: Any) -> Memory:
    return Memory(entity_id="ann", room_id=room, content=Content(text=text, **content))


async def test_every_declared_event_type_is_emitted_by_the_call_it_names(
    agent: AgentRuntime, model: ScriptedModel
) -> None:
    events = Recorder(agent)
    handle = agent.message_service.handle_message

    # Places and people: joined, updated, left.
    await agent.ensure_connection(
        entity_id="bob", room_id="general", world_id="guild", user_name="bob", source="discord"
    )
    await agent.ensure_connection(
        entity_id="bob", room_id="general", world_id="guild", user_name="Bobby", source="discord"
    )
    await agent.stop()
    await agent.initialize()  # back in a world it knew: WORLD_CONNECTED
    await agent.ensure_world_exists(World(id="guild", name="Guild"))

    # Turns: a reply, an action, a voice room, an evaluator, a model, the vectors.
    await handle(agent, says("hello"))
    model.large.append(plan("", actions="LOOKUP,REPLY"))
    await handle(agent, says("look it up"))
    await handle(agent, says("can you hear me", room="call", channel_type="VOICE_DM"))
    await handle(agent, says("an unembeddable message"))
    model.gate = asyncio.Event()  # the model never answers this one
    with pytest.raises(TimeoutError):
        await handle(agent, says("anyone?"), options=MessageOptions(timeout=0.2))
    model.gate.set()
    await QUEUES[agent.agent_id].drained()

    # Messages and rooms deleted, a control message, the world left.
    [stored, *_] = await agent.get_memories(table_name="messages", room_id="dm")
    await agent.delete_message(stored)
    await agent.clear_channel("dm")
    await agent.send_control_message("general", "disable_input", target="composer")
    await agent.remove_participant("bob", "general")
    await agent.delete_room("general")
    await agent.remove_world("guild")

    by_real_calls = events.names()
    assert {e.value for e in EventType} - CONNECTOR_EVENTS - by_real_calls == set()

    # From connectors: emitted as a connector does.
    await agent.ensure_connection(entity_id="ann", room_id="feed", source="x")
    reaction = Memory(
        entity_id="ann", room_id="feed", content=Content(text='*Added 👍 to: "hello"*')
    )
    await agent.emit_event(EventType.REACTION_RECEIVED, {"message": reaction, "source": "x"})
    await agent.emit_event(EventType.INTERACTION_RECEIVED, {"room_id": "feed", "source": "x"})
    await agent.emit_event(EventType.POST_GENERATED, {"room_id": "feed", "source": "x"})

    assert {e.value for e in EventType} - events.names() == set()
    for name, payload in events.seen:  # every one says whose it is, and where when it can
        assert payload["agent_id"] == agent.agent_id, name
        if name not in WITHOUT_ROOM:
            assert payload.get("room_id"), name
    [failed] = events.of(EventType.EMBEDDING_GENERATION_FAILED)
    assert (failed["room_id"], failed["error"]) == (
        "dm",
        "RuntimeError: the embedding model refuses this text",
    )
    stored_reaction = await agent.get_memories(table_name="messages", room_id="feed")
    assert [m.content.text for m in stored_reaction] == [reaction.content.text]


async def test_connection_events_fire_once_for_what_is_new(agent: AgentRuntime) -> None:
    events = Recorder(agent)
    for _ in range(2):
        await agent.ensure_connection(
            entity_id="bob", room_id="general", world_id="guild", source="discord"
        )
    assert [p["world_id"] for p in events.of(EventType.WORLD_JOINED)] == ["guild"]
    assert [p["room_id"] for p in events.of(EventType.ROOM_JOINED)] == ["general"]
    assert [(p["entity_id"], p["room_id"]) for p in events.of(EventType.ENTITY_JOINED)] == [
        ("bob", "general")
    ]
    assert events.of(EventType.ENTITY_UPDATED) == []
    assert events.of(EventType.WORLD_CONNECTED) == []

    await agent.add_participant("carol", "general")
    await agent.add_participant("carol", "general")
    assert [p["entity_id"] for p in events.of(EventType.ENTITY_JOINED)] == ["bob", "carol"]

    await agent.create_room(Room(id="random", world_id="guild"))  # stored: joined
    await agent.ensure_room_exists(Room(id="random", world_id="guild"))
    with pytest.raises(Conflict):  # no such room: refused, nothing announced
        await agent.add_participant(agent.agent_id, "lobby-to-be")
    assert [p["room_id"] for p in events.of(EventType.ROOM_JOINED)] == ["general", "random"]


async def test_leaving_events_name_what_was_left_and_only_what_existed(
    agent: AgentRuntime,
) -> None:
    await agent.ensure_connection(
        entity_id="bob", room_id="general", world_id="guild", source="discord"
    )
    await agent.create_room(Room(id="random", world_id="guild"))
    await agent.add_participant(agent.agent_id, "random")
    events = Recorder(agent)
    assert await agent.remove_participant("bob", "general")
    assert not await agent.remove_participant("bob", "general")
    assert await agent.remove_participant(agent.agent_id, "random")
    await agent.delete_room("nowhere")
    await agent.remove_world("guild")
    assert [(p["entity_id"], p["room_id"]) for p in events.of(EventType.ENTITY_LEFT)] == [
        ("bob", "general")
    ]
    left = [p["room_id"] for p in events.of(EventType.ROOM_LEFT)]
    assert left[0] == "random"  # the agent taken out of a room
    assert sorted(left[1:]) == ["general", "random"]  # the world's rooms, removed with it
    assert [p["world_id"] for p in events.of(EventType.WORLD_LEFT)] == ["guild"]


async def test_update_entity_announces_the_entity(agent: AgentRuntime) -> None:
    await agent.ensure_connection(entity_id="bob", room_id="general", source="discord")
    events = Recorder(agent)
    await agent.update_entity(Entity(id="bob", names=["bob", "Bobby"]))
    [updated] = events.of(EventType.ENTITY_UPDATED)
    assert updated["entity_id"] == "bob"
    assert updated["entity"].names == ["bob", "Bobby"]


async def test_a_turns_events_carry_its_agent_run_message_and_room(agent: AgentRuntime) -> None:
    events = Recorder(agent)
    result = await agent.message_service.handle_message(agent, says("hello"))
    turn_events = {
        EventType.RUN_STARTED,
        EventType.MESSAGE_RECEIVED,
        EventType.MODEL_USED,
        EventType.RUN_ENDED,
        EventType.EVALUATOR_STARTED,
        EventType.EVALUATOR_COMPLETED,
    }
    payloads = [
        (name, p)
        for name, p in events.seen
        if name in turn_events and p.get("type") != ModelType.TEXT_EMBEDDING  # queued: no turn
    ]
    assert {name for name, _ in payloads} == {e.value for e in turn_events}
    ids = (agent.agent_id, result.run_id, result.message_id, "dm")
    for name, p in payloads:
        assert (p["agent_id"], p["run_id"], p["message_id"], p["room_id"]) == ids, name
    [sent] = events.of(EventType.MESSAGE_SENT)
    assert (sent["message_id"], sent["run_id"], sent["room_id"]) == (
        result.response_messages[0].id,  # the reply's own id
        result.run_id,
        "dm",
    )
    [queued, *_] = events.of(EventType.EMBEDDING_GENERATION_REQUESTED)
    assert (queued["memory_id"], queued["room_id"]) == (result.message_id, "dm")


async def test_voice_rooms_announce_voice_messages_besides_messages(agent: AgentRuntime) -> None:
    events = Recorder(agent)
    handle = agent.message_service.handle_message
    await handle(agent, says("hi", room="phone", channel_type="VOICE_DM"))
    [heard] = events.of(EventType.VOICE_MESSAGE_RECEIVED)
    [spoken] = events.of(EventType.VOICE_MESSAGE_SENT)
    assert heard["message"].content.text == "hi"
    assert spoken["message_id"] == events.of(EventType.MESSAGE_SENT)[0]["message_id"]

    events.seen.clear()  # a group call, not addressed: heard, not answered
    await handle(agent, says("lol same", room="call", channel_type="VOICE_GROUP"))
    assert len(events.of(EventType.VOICE_MESSAGE_RECEIVED)) == 1
    assert events.of(EventType.VOICE_MESSAGE_SENT) == []

    events.seen.clear()
    await handle(agent, says("hi", room="text"))
    assert len(events.of(EventType.MESSAGE_SENT)) == 1
    assert events.of(EventType.VOICE_MESSAGE_RECEIVED) == []
    assert events.of(EventType.VOICE_MESSAGE_SENT) == []


async def test_a_reaction_without_a_message_is_refused_and_stores_nothing(
    agent: AgentRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    await agent.emit_event(EventType.REACTION_RECEIVED, {"emoji": "👍"})
    assert "REACTION_RECEIVED needs a Memory under 'message'" in caplog.text
    assert await agent.count_memories("feed") == 0


async def test_deleting_a_message_that_is_not_stored_announces_nothing(
    agent: AgentRuntime,
) -> None:
    events = Recorder(agent)
    await agent.delete_message("00000000-0000-4000-8000-000000000000")
    assert events.of(EventType.MESSAGE_DELETED) == []
    with pytest.raises(BadRequest, match="message_id"):
        await agent.delete_message("not an id!")
