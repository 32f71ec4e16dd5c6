"""A first message in a room nobody set up announces what its turn created.

``begin_turn`` creates the world, the room and the sender in the turn's one
storage call; the pipeline then emits WORLD_JOINED, ROOM_JOINED and
ENTITY_JOINED as ``ensure_connection`` would, once, and a later message in
the same room emits none of them.
"""

from __future__ import annotations

from typing import Any

from contracts import Content
from contracts.records import Memory
from shared.agent.runtime import AgentRuntime
from shared.agent.types import EventType

JOINS = (EventType.WORLD_JOINED, EventType.ROOM_JOINED, EventType.ENTITY_JOINED)


def recorded(runtime: AgentRuntime) -> list[tuple[EventType, dict[str, Any]]]:
    seen: list[tuple[EventType, dict[str, Any]]] = []
    for event in (*JOINS, EventType.WORLD_CONNECTED):

        async def listen(payload: dict[str, Any], event: EventType = event) -> None:
            seen.append((event, payload))

        runtime.on(event, listen)
    return seen


def says(text: str, room: str, entity: str = "ann", **content: Any) -> Memory:
    return Memory(entity_id=entity, room_id=room, content=Content(text=text, **content))


async def test_a_first_message_in_a_new_room_emits_each_join_once(runtime: AgentRuntime) -> None:
    seen = recorded(runtime)

    await runtime.message_service.handle_message(runtime, says("hi", "fresh", source="discord"))

    assert [event for event, _ in seen] == list(JOINS)
    world, room, entity = (payload for _, payload in seen)
    assert (world["world_id"], world["source"]) == ("fresh", "discord")
    assert (room["room_id"], room["world_id"]) == ("fresh", "fresh")
    sender = runtime.inbound_message(says("hi", "fresh")).entity_id
    assert (entity["entity_id"], entity["room_id"]) == (sender, "fresh")


async def test_a_second_message_in_the_same_room_emits_no_join(runtime: AgentRuntime) -> None:
    await runtime.message_service.handle_message(runtime, says("hi", "fresh"))
    seen = recorded(runtime)

    await runtime.message_service.handle_message(runtime, says("again", "fresh"))

    assert seen == []


async def test_a_newcomer_in_a_known_room_emits_only_entity_joined(
    runtime: AgentRuntime,
) -> None:
    await runtime.message_service.handle_message(runtime, says("hi", "fresh"))
    seen = recorded(runtime)

    await runtime.message_service.handle_message(runtime, says("me too", "fresh", entity="bob"))

    assert [event for event, _ in seen] == [EventType.ENTITY_JOINED]
    bob = runtime.inbound_message(says("x", "fresh", entity="bob")).entity_id
    assert seen[0][1]["entity_id"] == bob


async def test_a_room_set_up_by_ensure_connection_is_not_announced_again_by_its_first_turn(
    runtime: AgentRuntime,
) -> None:
    message = runtime.inbound_message(says("hi", "general"))
    await runtime.ensure_connection(
        entity_id=message.entity_id, room_id=message.room_id, source="discord"
    )
    seen = recorded(runtime)

    await runtime.message_service.handle_message(runtime, says("hi", "general"))

    assert seen == []
