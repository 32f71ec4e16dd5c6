"""Running a planned tool call: one named action with parameters, outside the chat flow.

``execute_planned_tool_call`` is how a planner (multi-step mode, or your own)
runs an action: unlike ``process_actions`` it raises, so the planner can
react: ``ActionError`` when the action is unknown, refuses or fails;
``StateError`` when the state for it could not be composed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Required, TypedDict

from contracts.records import Memory
from shared.agent.types import ActionError, ActionResult, Callback, State, StateError

if TYPE_CHECKING:
    from shared.agent.runtime import AgentRuntime


@dataclass(frozen=True)
class ToolContext:
    """What the call is about: the message, the state so far, and who asks."""

    message: Memory
    state: State | None = None
    active_contexts: Sequence[str] = ()
    user_roles: Sequence[str] = ()


@dataclass(frozen=True)
class PlannedToolCall:
    """The action to run and its parameters."""

    name: str
    params: Mapping[str, object] = field(default_factory=dict)


class ToolContextFields(TypedDict, total=False):
    """A ``ToolContext`` given as a dict (elizaOS callers pass plain objects)."""

    message: Required[Memory]
    state: State | None
    active_contexts: Sequence[str]
    user_roles: Sequence[str]


class PlannedToolCallFields(TypedDict, total=False):
    """A ``PlannedToolCall`` given as a dict."""

    name: Required[str]
    params: Mapping[str, object]


async def execute_planned_tool_call(
    runtime: AgentRuntime,
    context: ToolContext | ToolContextFields,
    call: PlannedToolCall | PlannedToolCallFields,
    callback: Callback | None = None,
) -> ActionResult:
    """Run ``call`` for ``context`` and return its result, or raise why it could not run."""
    context = context if isinstance(context, ToolContext) else ToolContext(**context)
    call = call if isinstance(call, PlannedToolCall) else PlannedToolCall(**call)
    if runtime.find_action(call.name) is None:
        raise ActionError(f"unknown action {call.name!r}", details={"action": call.name})
    state = context.state
    if state is None:
        try:
            state = await runtime.compose_state(
                context.message, ["RECENT_MESSAGES", "ACTION_STATE"]
            )
        except Exception as exc:
            raise StateError(f"could not compose state for {call.name}: {exc}") from exc
    state.data["active_contexts"] = list(context.active_contexts)
    state.data["user_roles"] = list(context.user_roles)
    result = await runtime.run_action(
        call.name, message=context.message, state=state, parameters=call.params, callback=callback
    )
    if not result.success:
        raise ActionError(
            f"action {call.name} failed: {result.error}", details={"action": call.name}
        )
    return result
