"""A first message in a new room, through the runtime service, announces what its turn created.

The memory service's ``begin_turn`` creates the world, the room and the
sender; the events stream then carries ``world.joined``, ``room.joined`` and
``entity.joined`` for that room once, and nothing more for the next message.
"""

from __future__ import annotations

# The stack fixture of that module: storage through the memory service, events on the bus.
from tests.integration.test_runtime_events_over_nats import Stack, stack  # noqa: F401

JOINS = ("world.joined", "room.joined", "entity.joined")


async def test_the_first_message_in_a_new_room_announces_each_join_once_over_nats(
    stack: Stack,  # noqa: F811 - the fixture imported above
) -> None:
    first = await stack.send("hello", "lobby")
    await stack.send("still here", "lobby")

    assert first.status == "completed"
    joins = [e for e in await stack.events() if e.event_type in JOINS]
    assert [e.event_type for e in joins] == list(JOINS)
    world, room, entity = joins
    assert world.data["world_id"] == "lobby"
    assert (room.room_id, entity.room_id) == ("lobby", "lobby")
    assert entity.data["entity_id"] not in (None, stack.runtime.agent_id)
