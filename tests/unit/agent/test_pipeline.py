"""The message pipeline: deciding, planning, acting, streaming, superseding, storing."""

from __future__ import annotations

import asyncio
from typing import Any

from contracts import Content
from contracts.agent import MentionContext
from contracts.records import ChannelType, Memory, ParticipantState, Room
from shared.agent.message_service import DefaultMessageService, MessageOptions
from shared.agent.runtime import AgentRuntime
from shared.agent.types import Action, ActionResult, Callback, EventType, HandlerOptions, State
from tests.scripted import ScriptedModel, decide, plan
from tests.unit.agent.actions import action_from


def said(text: str, room: str = "dm-1", **content: Any) -> Memory:
    return Memory(entity_id="user-1", room_id=room, content=Content(text=text, **content))


async def handle(runtime: AgentRuntime, message: Memory, **options: Any) -> Any:
    assert runtime.message_service is not None
    return await runtime.message_service.handle_message(
        runtime, message, options=MessageOptions(**options)
    )


async def group_room(runtime: AgentRuntime, room_id: str = "group-1") -> str:
    await runtime.adapter.create_rooms([Room(id=room_id, type=ChannelType.GROUP, source="discord")])
    return room_id


def record(runtime: AgentRuntime, *events: EventType) -> list[tuple[str, dict[str, Any]]]:
    seen: list[tuple[str, dict[str, Any]]] = []
    for event in events:

        async def listener(payload: dict[str, Any], name: str = event) -> None:
            seen.append((name, payload))

        runtime.on(event, listener)
    return seen


async def test_a_dm_is_answered_without_asking_the_model_whether_to(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    result = await handle(runtime, said("hi"))
    assert result.did_respond
    assert model.prompts["TEXT_SMALL"] == []


async def test_in_a_group_the_model_decides_and_ignore_means_silence(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    room = await group_room(runtime)
    model.small.append(decide("IGNORE"))
    result = await handle(runtime, said("people chatting", room))
    assert not result.did_respond
    assert result.status == "ignored"
    assert model.prompts["TEXT_LARGE"] == []
    assert await runtime.adapter.count_memories(room) == 1  # only the user's message


async def test_stop_means_stop_not_respond(runtime: AgentRuntime, model: ScriptedModel) -> None:
    room = await group_room(runtime)
    model.small.append(decide("STOP"))
    result = await handle(runtime, said("please stop", room))
    assert not result.did_respond


async def test_respond_in_a_group_leads_to_a_reply(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    room = await group_room(runtime)
    model.small.append(decide("RESPOND"))
    model.large.append(plan("I can help"))
    result = await handle(runtime, said("can anyone help?", room))
    assert result.response_content.text == "I can help"


async def test_a_mention_is_answered_without_asking(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    room = await group_room(runtime)
    message = said("@Eliza hi", room, mention_context=MentionContext(is_mention=True))
    result = await handle(runtime, message)
    assert result.did_respond
    assert model.prompts["TEXT_SMALL"] == []


async def test_a_muted_room_is_silent_unless_the_agent_is_named(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    room = await group_room(runtime)
    await runtime.adapter.add_participants_room([runtime.agent_id], room)
    await runtime.adapter.set_participant_user_state(room, runtime.agent_id, ParticipantState.MUTED)
    quiet = await handle(runtime, said("anyone?", room))
    assert quiet.status == "muted"
    model.small.append(decide("RESPOND"))
    named = await handle(runtime, said("Eliza, are you there?", room))
    assert named.did_respond


async def test_malformed_plans_are_retried_until_one_parses(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    model.large.extend(["", "<response><thought>no text, no actions</thought>", plan("third time")])
    result = await handle(runtime, said("hi"))
    assert result.response_content.text == "third time"
    assert len(model.prompts["TEXT_LARGE"]) == 3


async def test_actions_run_in_order_and_each_sees_the_results_before_it(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    seen_context: list[list[str]] = []

    async def lookup(*_: object) -> ActionResult:
        return ActionResult(text="Paris", values={"city": "Paris"})

    async def answer(s: State, o: HandlerOptions, cb: Callback | None) -> ActionResult:
        seen_context.append([c.action for c in o.action_context])
        assert cb is not None
        await cb(Content(text=f"The capital is {s.values['city']}"))
        return ActionResult(text="answered")

    runtime.register_action(Action("LOOKUP", lookup, "find the city"))
    runtime.register_action(action_from("ANSWER", answer, "say it"))
    model.large.append(plan("", actions="LOOKUP,ANSWER"))
    result = await handle(runtime, said("capital of France?"))
    assert result.mode == "actions"
    assert [r.action for r in result.action_results] == ["LOOKUP", "ANSWER"]
    assert seen_context == [["LOOKUP"]]
    assert result.response_content.text == "The capital is Paris"
    assert [
        r.action
        for r in runtime.get_action_results(result.response_messages[0].content.in_reply_to)
    ] == [
        "LOOKUP",
        "ANSWER",
    ]


async def test_a_failing_action_is_a_failed_step_and_the_run_ends_failed(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    async def explode(*_: Any) -> ActionResult:
        raise RuntimeError("the API is down")

    after_saw: list[list[tuple[str, bool]]] = []

    async def after(*args: Any) -> ActionResult:
        options: HandlerOptions = args[3]
        after_saw.append([(r.action, r.success) for r in options.action_context])
        return ActionResult()

    runtime.register_action(Action("EXPLODE", explode))
    runtime.register_action(Action("AFTER", after))
    ended = record(runtime, EventType.RUN_ENDED)
    model.large.append(plan("", actions="EXPLODE,AFTER"))
    result = await handle(runtime, said("do it"))
    assert result.status == "failed"
    assert [(r.action, r.success) for r in result.action_results] == [
        ("EXPLODE", False),
        ("AFTER", True),
    ]
    assert "RuntimeError: the API is down" in (result.action_results[0].error or "")
    assert after_saw == [[("EXPLODE", False)]]  # the next step runs, and sees the failure
    assert ended[-1][1]["status"] == "failed"
    assert "the API is down" in ended[-1][1]["error"]
    stored = await runtime.adapter.get_memories(table_name="messages", room_id="dm-1")
    assert any(m.content.metadata.get("action_status") == "failed" for m in stored)


async def test_the_reply_action_writes_its_own_answer(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    model.large.extend(
        [plan("draft", actions="REPLY", providers="FACTS"), plan("the considered answer")]
    )
    result = await handle(runtime, said("tell me something"))
    assert result.mode == "actions"
    assert result.response_content.text == "the considered answer"


async def test_streaming_passes_on_only_the_reply_text_in_order(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    model.large.append(plan("Streaming works fine."))
    chunks: list[tuple[str, str | None]] = []

    async def on_chunk(chunk: str, message_id: str | None) -> None:
        chunks.append((chunk, message_id))

    message = said("stream please")
    result = await handle(runtime, message, on_stream_chunk=on_chunk)
    assert "".join(c for c, _ in chunks) == "Streaming works fine."
    assert len(chunks) > 1
    assert {m for _, m in chunks} == {message.id}
    assert result.response_content.text == "Streaming works fine."


async def test_two_messages_at_once_in_a_room_are_both_answered_one_after_the_other(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    model.gate = asyncio.Event()
    model.large.extend([plan("answer to the first"), plan("answer to the second")])
    first = asyncio.create_task(handle(runtime, said("first")))
    await model.wait_for_prompts("TEXT_LARGE", 1)
    second = asyncio.create_task(handle(runtime, said("second")))
    await asyncio.sleep(0.2)
    assert len(model.prompts["TEXT_LARGE"]) == 1  # the room's second turn waits for the first
    model.gate.set()
    old, new = await first, await second
    assert (old.status, new.status) == ("completed", "completed")
    assert "answer to the first" in model.prompts["TEXT_LARGE"][1]  # it saw the first answer
    stored = await runtime.adapter.get_memories(table_name="messages", room_id="dm-1")
    assert [m.content.text for m in stored if m.entity_id == runtime.agent_id] == [
        "answer to the second",
        "answer to the first",
    ]


async def test_a_message_sent_again_after_the_rooms_next_one_is_planned_on_the_talk_up_to_it(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    # Its first turn stored it and broke off before the model answered (NATS
    # away); it comes again once the room's next message has been answered.
    def away(prompt: str) -> str:
        raise RuntimeError("the model server is away")

    model.large.extend([away, plan("answer to the second"), plan("answer to the first")])
    first = said("QfirstQ hello there")
    failed = None
    try:
        await handle(runtime, first)
    except RuntimeError as exc:
        failed = exc
    assert failed is not None
    assert (await handle(runtime, said("QsecondQ how are you"))).status == "completed"
    again = await handle(runtime, first)
    assert again.status == "completed"
    assert again.response_content.text == "answer to the first"
    prompt = model.prompts["TEXT_LARGE"][-1]
    assert "QfirstQ" in prompt
    assert "QsecondQ" not in prompt  # not asked to answer the second message again
    assert "answer to the second" not in prompt


async def test_with_superseding_on_a_newer_message_takes_over_from_an_older_one(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    service = runtime.message_service
    assert isinstance(service, DefaultMessageService)
    model.gate = asyncio.Event()
    model.large.extend([plan("answer to the first"), plan("answer to the second")])
    message = said("first")
    first = asyncio.create_task(handle(runtime, message, supersede=True))
    await model.wait_for_prompts("TEXT_LARGE", 1)
    second = asyncio.create_task(handle(runtime, said("second"), supersede=True))
    await asyncio.sleep(0.2)
    assert not service.is_latest(runtime, "dm-1", message.id)
    model.gate.set()
    old, new = await first, await second
    assert old.status == "superseded"
    assert not old.did_respond
    assert new.did_respond
    stored = await runtime.adapter.get_memories(table_name="messages", room_id="dm-1")
    assert [m.content.text for m in stored if m.entity_id == runtime.agent_id] == [
        "answer to the second"
    ]


async def test_events_announce_the_turn_with_payloads(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    seen = record(
        runtime,
        EventType.RUN_STARTED,
        EventType.MESSAGE_RECEIVED,
        EventType.MODEL_USED,
        EventType.MESSAGE_SENT,
        EventType.RUN_ENDED,
    )
    message = said("hello")
    result = await handle(runtime, message)
    # Background work (vectors) may announce itself too: the turn's events carry its run.
    names = [name for name, payload in seen if payload.get("run_id") == result.run_id]
    assert names[0] == "RUN_STARTED"
    assert names[-1] == "RUN_ENDED"
    assert {"MESSAGE_RECEIVED", "MODEL_USED", "MESSAGE_SENT"} <= set(names)
    payloads = dict(seen)
    assert payloads["MESSAGE_RECEIVED"]["message"].id == message.id
    assert payloads["MESSAGE_SENT"]["message"].content.text == result.response_content.text
    assert payloads["RUN_ENDED"]["status"] == "completed"
    assert payloads["RUN_ENDED"]["run_id"] == result.run_id
    assert runtime.get_current_run_id() != result.run_id  # the run ended with its turn


async def test_messages_from_the_agent_itself_are_not_answered(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    message = Memory(entity_id=runtime.agent_id, room_id="dm-1", content=Content(text="echo"))
    result = await handle(runtime, message)
    assert result.status == "self"
    assert model.prompts["TEXT_LARGE"] == []


async def test_a_run_past_its_timeout_ends_timeout(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    model.gate = asyncio.Event()  # never set: the model never answers
    ended = record(runtime, EventType.RUN_TIMEOUT, EventType.RUN_ENDED)
    try:
        await handle(runtime, said("slow"), timeout=0.2)
    except TimeoutError:
        pass
    else:
        raise AssertionError("expected a timeout")
    assert [name for name, _ in ended] == ["RUN_TIMEOUT", "RUN_ENDED"]
    assert ended[1][1]["status"] == "timeout"


async def test_follow_and_mute_actions_set_the_agents_room_state(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    room = await group_room(runtime)
    await runtime.adapter.add_participants_room([runtime.agent_id], room)
    mention = MentionContext(is_mention=True)
    model.large.append(plan("", actions="MUTE_ROOM"))
    await handle(runtime, said("Eliza, please be quiet here", room, mention_context=mention))
    state = await runtime.adapter.get_participant_user_state(room, runtime.agent_id)
    assert state is ParticipantState.MUTED
    model.large.append(plan("", actions="UNMUTE_ROOM"))
    await handle(runtime, said("Eliza, you can talk again", room, mention_context=mention))
    assert await runtime.adapter.get_participant_user_state(room, runtime.agent_id) is None
    model.large.append(plan("", actions="FOLLOW_ROOM"))
    await handle(runtime, said("Eliza, follow this channel", room, mention_context=mention))
    state = await runtime.adapter.get_participant_user_state(room, runtime.agent_id)
    assert state is ParticipantState.FOLLOWED


async def test_send_message_goes_through_the_send_handler_of_its_source(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    from shared.agent.runtime import TargetInfo

    delivered: list[tuple[str, str | None, str]] = []

    async def telegram(rt: AgentRuntime, target: TargetInfo, content: Content) -> None:
        delivered.append((target.source, target.room_id, content.text))

    runtime.register_send_handler("telegram", telegram)
    model.large.append(plan("Meeting moved to 3pm", actions="SEND_MESSAGE"))
    message = said("tell the team the meeting moved", source="telegram")
    result = await handle(runtime, message)
    assert [r.success for r in result.action_results] == [True]
    assert delivered == [("telegram", "dm-1", "Meeting moved to 3pm")]


async def test_a_plan_of_none_with_text_answers_with_that_text(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    # elizaOS's NONE: "respond but perform no additional action" (small models pick it).
    model.large.append(plan("Just saying hi.", actions="NONE"))
    result = await handle(runtime, said("hello"))
    assert result.did_respond
    assert result.response_content.text == "Just saying hi."
    assert len(model.prompts["TEXT_LARGE"]) == 1  # no second call to write the reply
