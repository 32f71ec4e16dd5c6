"""State a turn cannot do without, and values that flow from one step to the next."""

from __future__ import annotations

from typing import Any

import pytest

from contracts import Content
from contracts.records import Memory
from shared.agent.message_service import MessageOptions
from shared.agent.runtime import AgentRuntime
from shared.agent.types import (
    Action,
    ActionResult,
    EventType,
    Provider,
    ProviderResult,
    State,
    StateError,
)
from tests.scripted import ScriptedModel, plan
from tests.unit.agent.actions import action_from


def said(text: str = "go") -> Memory:
    return Memory(entity_id="user-1", room_id="room-1", content=Content(text=text))


async def wallet(runtime: AgentRuntime, message: Memory, state: State) -> ProviderResult:
    del runtime, message, state
    raise ConnectionError("the wallet service is down")


async def weather(runtime: AgentRuntime, message: Memory, state: State) -> ProviderResult:
    del runtime, message, state
    return ProviderResult(text="Sunny.", values={"sky": "sunny"})


# -- StateError -------------------------------------------------------------------


async def test_a_required_provider_that_is_not_registered_is_a_state_error_naming_it(
    runtime: AgentRuntime,
) -> None:
    with pytest.raises(StateError, match="no provider 'WALLET' is registered") as raised:
        await runtime.compose_state(said(), required=["WALLET"])
    assert raised.value.provider == "WALLET"
    assert raised.value.details == {"provider": "WALLET"}


async def test_a_required_provider_that_fails_is_a_state_error_naming_it(
    runtime: AgentRuntime,
) -> None:
    runtime.register_provider(Provider("WALLET", wallet, dynamic=True))
    runtime.register_provider(Provider("WEATHER", weather, dynamic=True))
    with pytest.raises(StateError, match="'WALLET' failed: ConnectionError") as raised:
        await runtime.compose_state(said(), ["WEATHER"], required=["WALLET"])
    assert raised.value.provider == "WALLET"
    assert isinstance(raised.value.__cause__, ConnectionError)

    # Not required, the same failure is left out and reported; the state is composed.
    state = await runtime.compose_state(said(), ["WEATHER", "WALLET"], only_include=True)
    assert state.values["sky"] == "sunny"
    errors = state.data["provider_errors"]
    assert isinstance(errors, dict)
    assert "ConnectionError" in errors["WALLET"]


async def test_a_provider_marked_required_stops_the_turn_with_a_state_error(
    runtime: AgentRuntime,
) -> None:
    runtime.register_provider(Provider("WALLET", wallet, required=True))
    ended: list[dict[str, Any]] = []

    async def on_end(payload: dict[str, Any]) -> None:
        ended.append(payload)

    runtime.on(EventType.RUN_ENDED, on_end)
    with pytest.raises(StateError) as raised:
        await runtime.message_service.handle_message(runtime, said("my balance?"))
    assert raised.value.provider == "WALLET"
    [end] = ended
    assert end["status"] == "failed"
    assert end["error"].startswith("StateError: compose_state: the required provider 'WALLET'")


async def test_an_unknown_provider_the_planner_names_is_skipped_not_an_error(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    model.large.append(plan("Here you go.", providers="NO_SUCH_PROVIDER"))
    result = await runtime.message_service.handle_message(runtime, said("hi"))
    assert (result.status, result.error, result.did_respond) == ("completed", None, True)


# -- values from one step to the next ---------------------------------------------


def step(action: str, finish: bool = False) -> str:
    return (
        f"<response><thought>t</thought><providers></providers><action>{action}</action>"
        f"<parameters>{{}}</parameters><isFinish>{str(finish).lower()}</isFinish></response>"
    )


def search_then_write(seen: dict[str, Any]) -> list[Action]:
    async def search(*_: object) -> ActionResult:
        return ActionResult(text="found", values={"city": "Paris"})

    async def write(s: State, *_: object) -> ActionResult:
        seen["city"] = s.values.get("city")
        return ActionResult(text="written")

    return [Action("SEARCH", search), action_from("WRITE", write)]


async def test_in_multi_step_mode_an_actions_values_reach_the_next_steps_state(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    seen: dict[str, Any] = {}
    for action in search_then_write(seen):
        runtime.register_action(action)
    model.large.extend(
        [
            step("SEARCH"),
            step("WRITE", finish=True),
            "<response><thought>d</thought><text>Written about Paris.</text></response>",
        ]
    )
    result = await runtime.message_service.handle_message(
        runtime, said(), options=MessageOptions(use_multi_step=True)
    )
    assert result.status == "completed"
    assert seen["city"] == "Paris"


async def test_in_chained_mode_an_actions_values_reach_the_next_action_too(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    seen: dict[str, Any] = {}
    for action in search_then_write(seen):
        runtime.register_action(action)
    model.large.append(plan("", actions="SEARCH,WRITE"))
    await runtime.message_service.handle_message(runtime, said())
    assert seen["city"] == "Paris"
