"""Real chats over NATS (issue 15): what a connector says reaches the same decisions.

A connector on NATS has only the ``HandleMessage`` it sends to say what kind
of room a message is in (``content.channel_type``), who is an agent
(``content.metadata.is_agent``), and nothing else; these check that the
runtime service decides as the pipeline does in one process.
"""

from __future__ import annotations

import asyncio

from contracts import Content
from contracts.records import ChannelType
from tests.integration.test_turn_over_nats import Wire, raw, wire  # noqa: F401 - fixtures
from tests.scripted import decide, plan

GROUP = Content(text="lol same", source="discord", channel_type="GROUP")


async def test_small_talk_in_a_group_over_nats_asks_should_respond_and_gets_no_answer(
    wire: Wire,  # noqa: F811 - the fixture
) -> None:
    wire.model.small.append(decide("IGNORE"))
    result = await wire.send("lol same", "guild-1", content=GROUP)
    assert result.status == "ignored"
    assert not result.did_respond
    assert len(wire.model.prompts["TEXT_SMALL"]) == 1
    [room] = await wire.storage.for_agent(wire.runtime.agent_id).get_rooms_by_ids(["guild-1"])
    assert room.type is ChannelType.GROUP


async def test_a_known_dm_room_becomes_a_group_over_nats_when_the_connector_says_so(
    wire: Wire,  # noqa: F811 - the fixture
) -> None:
    assert (await wire.send("hi", "chat-2")).did_respond
    wire.model.small.append(decide("IGNORE"))
    result = await wire.send("lol same", "chat-2", content=GROUP)
    assert result.status == "ignored"
    [room] = await wire.storage.for_agent(wire.runtime.agent_id).get_rooms_by_ids(["chat-2"])
    assert room.type is ChannelType.GROUP


async def test_another_agent_over_nats_is_answered_only_when_addressed_and_up_to_the_limit(
    wire: Wire,  # noqa: F811 - the fixture
) -> None:
    def relayed(text: str) -> Content:
        return Content(text=text, channel_type="GROUP", metadata={"is_agent": True})

    unaddressed = await wire.send("x", "bridge", entity_id="bob", content=relayed("I agree!"))
    assert unaddressed.status == "ignored"
    answered = [
        (
            await wire.send("x", "bridge", entity_id="bob", content=relayed(f"Eliza, {i}?"))
        ).did_respond
        for i in range(6)
    ]
    assert answered == [True, True, True, False, False, False]
    assert wire.model.prompts["TEXT_SMALL"] == []


async def test_two_messages_at_once_in_a_room_over_nats_are_both_answered_in_order(
    wire: Wire,  # noqa: F811 - the fixture
) -> None:
    wire.model.gate = asyncio.Event()
    wire.model.large.extend([plan("answer to the first"), plan("answer to the second")])
    first = asyncio.create_task(wire.send("first", "room-both"))
    await wire.model.wait_for_prompts("TEXT_LARGE", 1)
    second = asyncio.create_task(wire.send("second", "room-both"))
    await asyncio.sleep(0.3)
    assert len(wire.model.prompts["TEXT_LARGE"]) == 1  # the room's second turn waits
    wire.model.gate.set()
    old, new = await first, await second
    assert (old.status, new.status) == ("completed", "completed")
    assert old.response_content.text == "answer to the first"
    assert new.response_content.text == "answer to the second"
    assert "answer to the first" in wire.model.prompts["TEXT_LARGE"][1]
