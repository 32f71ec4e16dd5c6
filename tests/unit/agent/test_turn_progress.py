"""An interrupted turn continues from its recorded plan: the model is asked once per message."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from contracts import Content
from contracts.records import Memory
from shared.agent.message_service import progress_key
from shared.agent.runtime import AgentRuntime
from shared.agent.types import Action, ActionResult, Callback, HandlerOptions, State
from tests.scripted import ScriptedModel, plan


def said(text: str, room: str) -> Memory:
    return Memory(
        id="5a1f0b0e-0000-4000-8000-00000000000a",
        entity_id=f"user-{room}",
        room_id=room,
        content=Content(text=text),
    )


async def replies(runtime: AgentRuntime, room: str) -> list[Memory]:
    stored = await runtime.get_memories(table_name="messages", room_id=room)
    return [m for m in stored if m.entity_id == runtime.agent_id]


async def test_a_plain_reply_cut_off_after_planning_is_sent_again_without_a_second_model_call(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    model.default = plan("the one answer")
    message = said("hello", "r-cut")

    async def broken_transport(content: Content) -> list[Memory]:
        del content
        raise ConnectionError("the caller went away")

    with pytest.raises(ConnectionError):
        await runtime.message_service.handle_message(runtime, message, broken_transport)
    assert len(model.prompts["TEXT_LARGE"]) == 1
    first = await replies(runtime, "r-cut")
    again = await runtime.message_service.handle_message(runtime, message)
    assert again.status == "completed"
    assert again.response_content.text == "the one answer"
    assert len(model.prompts["TEXT_LARGE"]) == 1  # the recorded plan, not a new call
    # The reply written when the turn broke off is the one sent now: one reply, one id.
    assert [m.id for m in await replies(runtime, "r-cut")] == [m.id for m in first]
    assert len(first) == 1


async def test_a_turn_killed_while_its_action_runs_continues_from_the_plan_recorded_before(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    runs: list[str] = []

    async def slow_lookup(
        runtime: AgentRuntime,
        message: Memory,
        state: State,
        options: HandlerOptions,
        callback: Callback | None,
        responses: Any,
    ) -> ActionResult:
        del runtime, state, options, responses
        runs.append(message.id)
        started.set()
        await release.wait()
        if callback is not None:
            await callback(Content(text="looked it up"))
        return ActionResult(text="found")

    runtime.register_action(Action("LOOKUP", slow_lookup, "Look something up."))
    model.default = plan("", actions="LOOKUP")
    message = said("look it up", "r-killed")
    killed = asyncio.create_task(runtime.message_service.handle_message(runtime, message))
    await asyncio.wait_for(started.wait(), timeout=10)
    killed.cancel()  # what kill -9 leaves: nothing after the plan's record
    with pytest.raises(asyncio.CancelledError):
        await killed
    recorded = await runtime.get_cache(progress_key(runtime.inbound_message(message)))
    assert recorded is not None
    assert recorded["plan"]["actions"] == ["LOOKUP"]
    release.set()
    result = await runtime.message_service.handle_message(runtime, message)
    assert result.status == "completed"
    assert result.response_content.text == "looked it up"
    assert len(model.prompts["TEXT_LARGE"]) == 1
    assert len(runs) == 2  # the action runs again: actions say themselves if they are idempotent
