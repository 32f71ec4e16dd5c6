"""Test actions written as only the part of a handler a test looks at."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from contracts.records import Memory
from shared.agent.runtime import AgentRuntime
from shared.agent.types import Action, ActionResult, Callback, HandlerOptions, State

Body = Callable[[State, HandlerOptions, Callback | None], Awaitable[ActionResult]]
"""What an action does with the state, its options and the callback of one call."""


def action_from(name: str, body: Body, description: str = "") -> Action:
    """An ``Action`` called ``name`` whose handler runs ``body`` (the other arguments unused)."""

    async def handler(
        runtime: AgentRuntime,
        message: Memory,
        state: State,
        options: HandlerOptions,
        callback: Callback | None,
        responses: Sequence[Memory],
    ) -> ActionResult:
        del runtime, message, responses
        return await body(state, options, callback)

    return Action(name, handler, description)
