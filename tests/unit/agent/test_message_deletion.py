"""Deleting a message, clearing a channel, and control messages, with elizaOS's meaning."""

from __future__ import annotations

from typing import Any

import pytest

from contracts import Content
from contracts.message import create_unique_uuid
from contracts.records import Memory
from shared.agent.runtime import AgentRuntime
from shared.agent.types import EventType
from shared.errors import BadRequest


def listen(runtime: AgentRuntime, event: EventType) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []

    async def record(payload: dict[str, Any]) -> None:
        seen.append(payload)

    runtime.on(event, record)
    return seen


def from_telegram(text: str, message_id: str = "17") -> Memory:
    """A message as a connector knows it: the platform's ids, not the agent's."""
    return Memory(
        id=message_id, entity_id="tg user 1", room_id="tg chat 42", content=Content(text=text)
    )


async def test_delete_message_deletes_the_message_the_connector_names_and_announces_it(
    runtime: AgentRuntime,
) -> None:
    await runtime.message_service.handle_message(runtime, from_telegram("oops, wrong chat"))
    deleted = listen(runtime, EventType.MESSAGE_DELETED)
    room_id = create_unique_uuid(runtime.agent_id, "tg chat 42")
    stored_id = create_unique_uuid(runtime.agent_id, f"{room_id}:17")
    assert await runtime.get_memory_by_id(stored_id) is not None

    await runtime.message_service.delete_message(runtime, from_telegram("oops, wrong chat"))

    assert await runtime.get_memory_by_id(stored_id) is None
    [event] = deleted
    assert (event["message_id"], event["room_id"]) == (stored_id, room_id)
    assert event["message"].content.text == "oops, wrong chat"
    reply = await runtime.get_memories(table_name="messages", room_id=room_id)
    assert [m.content.in_reply_to for m in reply] == [stored_id]  # the answer stays


async def test_deleting_a_fact_is_not_a_deleted_message(runtime: AgentRuntime) -> None:
    fact_id = await runtime.create_fact("Ann likes tea", room_id="room-1")
    deleted = listen(runtime, EventType.MESSAGE_DELETED)
    await runtime.delete_memory(fact_id)
    assert await runtime.get_memory_by_id(fact_id) is None
    assert deleted == []


async def test_clear_channel_deletes_the_rooms_messages_only_and_says_how_many(
    runtime: AgentRuntime,
) -> None:
    handle = runtime.message_service.handle_message
    await handle(runtime, from_telegram("one", "1"))
    await handle(runtime, from_telegram("two", "2"))
    await handle(runtime, Memory(entity_id="ann", room_id="other", content=Content(text="hi")))
    room_id = create_unique_uuid(runtime.agent_id, "tg chat 42")
    await runtime.create_fact("Ann likes tea", room_id=room_id)
    in_room = await runtime.count_memories(room_id, table_name="messages")
    assert in_room >= 4  # two messages, two replies
    cleared = listen(runtime, EventType.CHANNEL_CLEARED)

    deleted = await runtime.message_service.clear_channel(runtime, "tg chat 42", "-100042")

    assert deleted == in_room
    assert await runtime.count_memories(room_id, table_name="messages") == 0
    assert await runtime.count_memories(room_id, table_name="facts") == 1
    assert await runtime.count_memories("other", table_name="messages") >= 2
    [event] = cleared
    assert (event["room_id"], event["channel_id"], event["deleted"]) == (
        room_id,
        "-100042",
        in_room,
    )


async def test_a_control_message_reaches_listeners_with_the_room_and_action(
    runtime: AgentRuntime,
) -> None:
    controls = listen(runtime, EventType.CONTROL_MESSAGE)
    await runtime.send_control_message("room-1", "disable_input", target="composer")
    await runtime.send_control_message("room-1", "enable_input")
    assert [c["message"] for c in controls] == [
        {
            "type": "control",
            "payload": {"action": "disable_input", "target": "composer"},
            "room_id": "room-1",
        },
        {
            "type": "control",
            "payload": {"action": "enable_input", "target": None},
            "room_id": "room-1",
        },
    ]
    assert {(c["room_id"], c["agent_id"], c["source"]) for c in controls} == {
        ("room-1", runtime.agent_id, "agent")
    }


async def test_a_control_message_with_an_unknown_action_is_refused_naming_the_field(
    runtime: AgentRuntime,
) -> None:
    controls = listen(runtime, EventType.CONTROL_MESSAGE)
    with pytest.raises(BadRequest, match="action must be one of") as raised:
        await runtime.send_control_message("room-1", "self_destruct")
    assert raised.value.details == {"field": "action"}
    with pytest.raises(BadRequest) as bad_room:
        await runtime.send_control_message("\x00", "enable_input")
    assert bad_room.value.details["field"] == "room_id"
    assert controls == []
