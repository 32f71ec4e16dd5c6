"""Real chats (issue 15): group rooms, other agents, failed steps, imperfect models.

Each test is one of the failures people running elizaOS agents reported,
with the outcome a user expects.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from contracts import Content
from contracts.agent import MentionContext
from contracts.records import ChannelType, Entity, Memory
from shared.agent.bootstrap import read_reflection
from shared.agent.message_service import MessageOptions
from shared.agent.runtime import AgentRuntime
from shared.agent.types import Action, ActionResult, EvaluatorOutputError, EventType, State
from shared.agent.xml import TextTagStreamer, parse_key_value_xml
from tests.scripted import ScriptedModel, decide, plan

PROSE = "Hello! I'm doing great, thanks for asking. How can I help you today?"
THINKING = (
    "<think>The user greets me. I should answer inside <text> tags, like "
    "<text>draft</text>, and keep it short.</think>"
)


def said(text: str, room: str = "dm-1", entity: str = "user-1", **content: Any) -> Memory:
    return Memory(entity_id=entity, room_id=room, content=Content(text=text, **content))


def in_group(text: str, room: str = "guild-1-channel-7", **content: Any) -> Memory:
    return said(text, room, **{"channel_type": "GROUP", "source": "discord", **content})


def from_agent(text: str, room: str = "bridge-1") -> Memory:
    return said(
        text,
        room,
        entity="agent-bob",
        channel_type="GROUP",
        source="discord",
        metadata={"is_agent": True},
    )


async def handle(runtime: AgentRuntime, message: Memory, **options: Any) -> Any:
    assert runtime.message_service is not None
    return await runtime.message_service.handle_message(
        runtime, message, options=MessageOptions(**options)
    )


async def room_type(runtime: AgentRuntime, room_id: str) -> ChannelType:
    [room] = await runtime.adapter.get_rooms_by_ids([room_id])
    return room.type


# -- group rooms ------------------------------------------------------------------


async def test_small_talk_in_a_new_group_room_asks_should_respond_and_gets_no_answer(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    model.small.append(decide("IGNORE"))
    result = await handle(runtime, in_group("lol same"))
    assert result.status == "ignored"
    assert not result.did_respond
    assert len(model.prompts["TEXT_SMALL"]) == 1
    assert await room_type(runtime, "guild-1-channel-7") is ChannelType.GROUP


async def test_a_room_first_seen_as_a_dm_becomes_a_group_when_the_connector_says_so(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    await handle(runtime, said("hi", "chat-9"))
    assert await room_type(runtime, "chat-9") is ChannelType.DM
    model.small.extend([decide("IGNORE"), decide("IGNORE")])
    result = await handle(runtime, said("lol same", "chat-9", channel_type="group"))
    assert result.status == "ignored"
    assert await room_type(runtime, "chat-9") is ChannelType.GROUP
    # A message that says nothing of the room leaves it a group.
    again = await handle(runtime, said("haha", "chat-9"))
    assert again.status == "ignored"
    assert len(model.prompts["TEXT_SMALL"]) == 2


@pytest.mark.parametrize(
    "text",
    ["Eliza, what do you think?", "what do you think @eliza", "ELIZA: hi"],
)
async def test_in_a_group_the_agent_answers_when_named_without_asking(
    runtime: AgentRuntime, model: ScriptedModel, text: str
) -> None:
    result = await handle(runtime, in_group(text))
    assert result.did_respond
    assert model.prompts["TEXT_SMALL"] == []


async def test_a_name_inside_another_word_is_not_the_agent_being_named(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    model.small.append(decide("IGNORE"))
    result = await handle(runtime, in_group("Elizabeth is here"))
    assert result.status == "ignored"
    assert len(model.prompts["TEXT_SMALL"]) == 1


async def test_in_a_group_a_reply_to_the_agents_message_is_answered_without_asking(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    first = await handle(
        runtime, in_group("hey all", mention_context=MentionContext(is_mention=True))
    )
    [answer] = first.response_messages
    result = await handle(runtime, in_group("ha, true", in_reply_to=answer.id))
    assert result.did_respond
    assert model.prompts["TEXT_SMALL"] == []


# -- other agents -----------------------------------------------------------------


async def test_another_agents_message_is_not_answered_unless_addressed(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    result = await handle(runtime, from_agent("I answer every message!"))
    assert result.status == "ignored"
    assert model.prompts == {"TEXT_LARGE": [], "TEXT_SMALL": []}


async def test_two_agents_bridged_in_one_room_stop_at_the_agent_reply_limit(
    runtime: AgentRuntime,
) -> None:
    answered = [
        (await handle(runtime, from_agent(f"Eliza, and what about {i}?"))).did_respond
        for i in range(12)
    ]
    assert answered == [True] * 3 + [False] * 9
    # A person speaking ends the run: the agents may talk again.
    person = await handle(runtime, said("Eliza, Bob, carry on", "bridge-1", channel_type="GROUP"))
    assert person.did_respond
    assert (await handle(runtime, from_agent("Eliza, one more?"))).did_respond


async def test_the_agent_reply_limit_is_a_setting(runtime: AgentRuntime) -> None:
    runtime.set_setting("AGENT_REPLY_LIMIT", "1")
    answered = [
        (await handle(runtime, from_agent(f"Eliza, {i}?", "bridge-2"))).did_respond
        for i in range(3)
    ]
    assert answered == [True, False, False]


async def test_a_sender_marked_as_a_bot_in_its_entity_metadata_is_an_agent(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    await runtime.adapter.create_entities(
        [Entity(id="bot-7", names=["Bot"], metadata={"discord": {"bot": True}})]
    )
    result = await handle(runtime, said("gm", "guild-2", entity="bot-7", channel_type="GROUP"))
    assert result.status == "ignored"
    assert model.prompts["TEXT_SMALL"] == []


async def test_another_agent_in_a_dm_is_answered_up_to_the_limit(runtime: AgentRuntime) -> None:
    answered = [
        (
            await handle(
                runtime, said("ping", "dm-bob", entity="agent-bob", metadata={"isAgent": True})
            )
        ).did_respond
        for _ in range(5)
    ]
    assert answered == [True, True, True, False, False]


async def test_another_agents_message_answered_late_counts_only_the_answers_before_it(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    # Its first turn stored it and broke off (the model away); three later
    # messages were answered meanwhile. Sent again, it is decided on as the
    # room stood when it came: no answer to an agent before it, so it is
    # answered, not held back by the reply limit the later answers reached.
    def away(prompt: str) -> str:
        raise RuntimeError("the model server is away")

    model.large.append(away)

    def ping(text: str) -> Memory:
        return said(text, "dm-bob-late", entity="agent-bob", metadata={"isAgent": True})

    first = ping("QfirstQ ping")
    with pytest.raises(RuntimeError):
        await handle(runtime, first)
    later = [await handle(runtime, ping("ping")) for _ in range(3)]
    assert [r.did_respond for r in later] == [True, True, True]
    again = await handle(runtime, first)
    assert again.did_respond, again.status
    assert "QfirstQ" in model.prompts["TEXT_LARGE"][-1]


# -- failed steps -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("planned", "error"),
    [
        ("CHECK_BALANCE,REPLY", "validate refused this message"),
        ("SEARCH_WEB,REPLY", "unknown action 'SEARCH_WEB'"),
    ],
)
async def test_a_planned_step_that_cannot_run_is_reported_and_reply_still_answers(
    runtime: AgentRuntime, model: ScriptedModel, planned: str, error: str
) -> None:
    ran: list[str] = []

    async def check_balance(*_: Any) -> ActionResult:
        ran.append("CHECK_BALANCE")
        return ActionResult(text="balance: 3")

    async def only_in_wallet_rooms(rt: AgentRuntime, message: Memory, state: State | None) -> bool:
        return message.room_id.startswith("wallet-")

    runtime.register_action(
        Action("CHECK_BALANCE", check_balance, "Check a balance", validate=only_in_wallet_rooms)
    )
    model.large.extend([plan("Let me see.", actions=planned), plan("I could not check it.")])
    result = await handle(runtime, said("what's my balance?", "general-1"))
    assert result.did_respond
    assert result.response_content.text == "I could not check it."
    assert result.status == "failed"
    assert error in (result.error or "")
    assert [(r.action, r.success) for r in result.action_results][-1] == ("REPLY", True)
    assert ran == []
    assert "failed" in model.prompts["TEXT_LARGE"][1]  # REPLY was told the step failed


# -- imperfect models -------------------------------------------------------------


async def test_plain_prose_from_a_small_model_becomes_the_reply_after_one_retry(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    model.default = PROSE
    chunks: list[str] = []

    async def on_chunk(chunk: str, _id: str | None) -> None:
        chunks.append(chunk)

    result = await handle(runtime, said("hi, how are you?"), on_stream_chunk=on_chunk)
    assert result.status == "completed"
    assert result.response_content.text == PROSE
    assert len(model.prompts["TEXT_LARGE"]) == 2
    assert "".join(chunks) == PROSE


async def test_a_fenced_xml_answer_is_read_at_the_first_try(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    model.default = f"Sure! Here is my response:\n\n```xml\n{plan('Hey! Good to see you.')}\n```"
    result = await handle(runtime, said("hi"))
    assert result.response_content.text == "Hey! Good to see you."
    assert len(model.prompts["TEXT_LARGE"]) == 1


async def test_the_reply_action_sends_plain_prose_as_the_reply(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    model.large.extend([plan("draft", providers="FACTS"), PROSE])
    result = await handle(runtime, said("tell me something"))
    assert result.status == "completed"
    assert result.response_content.text == PROSE


@pytest.mark.parametrize("plan_providers", ["", "FACTS"])
async def test_reasoning_never_reaches_the_stream_the_stored_reply_or_the_callback(
    runtime: AgentRuntime, model: ScriptedModel, plan_providers: str
) -> None:
    model.chunk_size = 3
    model.default = THINKING + plan("The real answer.")
    model.large.append(THINKING + plan("The real answer.", providers=plan_providers))
    chunks: list[str] = []
    called: list[Content] = []

    async def on_chunk(chunk: str, _id: str | None) -> None:
        chunks.append(chunk)

    async def callback(content: Content) -> list[Memory]:
        called.append(content)
        return []

    assert runtime.message_service is not None
    result = await runtime.message_service.handle_message(
        runtime, said("hello"), callback, MessageOptions(on_stream_chunk=on_chunk)
    )
    assert "".join(chunks) == "The real answer."
    assert [c.text for c in called] == ["The real answer."]
    stored = await runtime.adapter.get_memories(table_name="messages", room_id="dm-1")
    replies = [m.content for m in stored if m.entity_id == runtime.agent_id and m.content.text]
    replies = [c for c in replies if c.metadata.get("type") != "action_result"]
    assert [c.text for c in replies] == ["The real answer."]
    assert all("think" not in (c.thought or "") for c in replies)
    assert result.response_content.text == "The real answer."


async def test_prose_after_reasoning_becomes_the_reply_without_the_reasoning(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    model.default = THINKING + "\n" + PROSE
    result = await handle(runtime, said("hi"))
    assert result.response_content.text == PROSE


# -- evaluators -------------------------------------------------------------------

FENCED_REFLECTION = """Here is what I learned:
```json
{"thought": "new facts", "facts": [{"claim": "user-1 lives in Lisbon", "type": "fact"},
 "user-1 likes tea"], "relationships": [{"sourceEntityId": "user-1",
 "targetEntityId": "user-2", "tags": ["friend"]}]}
```"""


def test_reflection_reads_xml_json_in_a_fence_and_bare_json() -> None:
    facts, links = read_reflection(FENCED_REFLECTION)
    assert [f["claim"] for f in facts] == ["user-1 lives in Lisbon", "user-1 likes tea"]
    assert links[0]["tags"] == "friend"
    assert read_reflection('{"facts": [], "relationships": []}') == ([], [])
    xml = "<response><thought>t</thought><facts><fact><claim>a</claim></fact></facts></response>"
    assert [f["claim"] for f in read_reflection(xml)[0]] == ["a"]
    with pytest.raises(EvaluatorOutputError):
        read_reflection("I learned nothing new today, sorry.")


async def test_reflection_in_a_fenced_json_block_stores_its_facts(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    runtime.set_setting("CONVERSATION_LENGTH", "4")
    model.small.append(FENCED_REFLECTION)
    await handle(runtime, said("I live in Lisbon and I like tea"))
    facts = await runtime.adapter.get_memories(table_name="facts", count=10)
    assert sorted(f.content.text for f in facts) == ["user-1 likes tea", "user-1 lives in Lisbon"]


async def test_an_unreadable_reflection_is_evaluator_completed_failed_and_a_log_line(
    runtime: AgentRuntime, model: ScriptedModel, caplog: pytest.LogCaptureFixture
) -> None:
    runtime.set_setting("CONVERSATION_LENGTH", "4")
    completed: list[dict[str, Any]] = []

    async def listener(payload: dict[str, Any]) -> None:
        completed.append(payload)

    runtime.on(EventType.EVALUATOR_COMPLETED, listener)
    model.small.append("I learned nothing new today, sorry.")
    with caplog.at_level(logging.WARNING):
        result = await handle(runtime, said("hello there"))
    assert result.did_respond  # the turn's outcome stands
    [event] = [e for e in completed if e["evaluator"] == "REFLECTION"]
    assert event["status"] == "failed"
    assert "no reflection" in event["error"]
    assert any("REFLECTION" in r.getMessage() for r in caplog.records)
    assert await runtime.adapter.get_memories(table_name="facts", count=10) == []


def test_streamed_text_is_unescaped_like_the_stored_reply_even_when_an_entity_is_cut() -> None:
    streamer = TextTagStreamer()
    chunks = ["<response><text>1 &l", "t; 2 &amp", "; 3 &#x", "3E; done", "</text></response>"]
    streamed = "".join(streamer.feed(c) for c in chunks)
    assert streamed == "1 < 2 & 3 > done"
    assert streamed == (parse_key_value_xml("".join(chunks)) or {}).get("text")
