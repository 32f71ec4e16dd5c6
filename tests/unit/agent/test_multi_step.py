"""Multi-step mode and planned tool calls."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from contracts import Content
from contracts.records import Memory
from shared.agent.message_service import MessageOptions
from shared.agent.planning import PlannedToolCall, ToolContext, execute_planned_tool_call
from shared.agent.runtime import AgentRuntime
from shared.agent.types import Action, ActionError, ActionResult, Callback, HandlerOptions, State
from tests.scripted import ScriptedModel


def step(action: str = "", parameters: str = "", finish: bool = False, providers: str = "") -> str:
    return (
        f"<response><thought>next</thought><providers>{providers}</providers><action>{action}</action>"
        f"<parameters>{parameters}</parameters><isFinish>{str(finish).lower()}</isFinish></response>"
    )


def summary(text: str) -> str:
    return f"<response><thought>done</thought><text>{text}</text></response>"


def weather_action(calls: list[dict[str, Any]]) -> Action:
    async def weather(
        rt: AgentRuntime,
        m: Memory,
        s: State,
        o: HandlerOptions,
        cb: Callback | None,
        r: Sequence[Memory],
    ) -> ActionResult:
        calls.append(dict(o.parameters))
        if o.parameters.get("city") == "Atlantis":
            raise LookupError("no such city")
        return ActionResult(text=f"sunny in {o.parameters['city']}")

    return Action("WEATHER", weather, "Get the weather of a city.")


async def test_multi_step_runs_one_action_per_step_then_summarises(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    calls: list[dict[str, Any]] = []
    runtime.register_action(weather_action(calls))
    model.large.extend(
        [
            step("WEATHER", '{"city": "Paris"}'),
            step("WEATHER", '{"city": "Rome"}', finish=True),
            summary("Sunny in Paris and Rome."),
        ]
    )
    chunks: list[str] = []

    async def on_chunk(chunk: str, _: str | None) -> None:
        chunks.append(chunk)

    assert runtime.message_service is not None
    result = await runtime.message_service.handle_message(
        runtime,
        Memory(entity_id="u", room_id="dm", content=Content(text="weather in Paris and Rome?")),
        options=MessageOptions(use_multi_step=True, on_stream_chunk=on_chunk),
    )
    assert calls == [{"city": "Paris"}, {"city": "Rome"}]
    assert result.mode == "simple"
    assert result.response_content is not None
    assert result.response_content.text == "Sunny in Paris and Rome."
    assert "".join(chunks) == "Sunny in Paris and Rome."
    assert "sunny in Paris" in model.prompts["TEXT_LARGE"][1]  # step 2 sees step 1's result


async def test_multi_step_stops_at_the_iteration_limit(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    calls: list[dict[str, Any]] = []
    runtime.register_action(weather_action(calls))
    model.large.extend([step("WEATHER", '{"city": "Oslo"}')] * 3 + [summary("Cold.")])
    runtime.set_setting("USE_MULTI_STEP", "true")
    runtime.set_setting("MAX_MULTISTEP_ITERATIONS", "3")
    assert runtime.message_service is not None
    result = await runtime.message_service.handle_message(
        runtime, Memory(entity_id="u", room_id="dm", content=Content(text="weather?"))
    )
    assert len(calls) == 3
    assert result.response_content is not None
    assert result.response_content.text == "Cold."


async def test_a_failed_step_is_reported_and_the_run_ends_failed(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    runtime.register_action(weather_action([]))
    model.large.extend([step("WEATHER", "not json", finish=True), summary("Sorry.")])
    assert runtime.message_service is not None
    result = await runtime.message_service.handle_message(
        runtime,
        Memory(entity_id="u", room_id="dm", content=Content(text="weather?")),
        options=MessageOptions(use_multi_step=True),
    )
    assert result.status == "failed"
    assert result.action_results[0].error == "parameters were not a JSON object"
    assert result.did_respond


async def test_a_planned_tool_call_returns_the_result_or_raises_action_error(
    runtime: AgentRuntime,
) -> None:
    runtime.register_action(weather_action([]))
    message = Memory(entity_id="u", room_id="dm", content=Content(text="weather"))
    result = await execute_planned_tool_call(
        runtime,
        {"message": message, "state": None, "active_contexts": ["travel"], "user_roles": ["ADMIN"]},
        {"name": "WEATHER", "params": {"city": "Lima"}},
    )
    assert result.text == "sunny in Lima"
    with pytest.raises(ActionError, match="action WEATHER failed: LookupError: no such city"):
        await execute_planned_tool_call(
            runtime, ToolContext(message=message), PlannedToolCall("WEATHER", {"city": "Atlantis"})
        )
    with pytest.raises(ActionError, match="unknown action 'TELEPORT'"):
        await execute_planned_tool_call(
            runtime, ToolContext(message=message), PlannedToolCall("TELEPORT")
        )
