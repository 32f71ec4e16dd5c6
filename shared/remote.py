"""Providers and actions served by other processes, as ordinary parts of a runtime."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from faststream.nats import NatsBroker

from contracts import Content, Subjects
from contracts.providers import ActionOutput, GetProvider, InvokeAction, ProviderOutput
from contracts.records import Memory
from shared.agent.types import (
    Action,
    ActionResult,
    Callback,
    HandlerOptions,
    Provider,
    ProviderResult,
    State,
)
from shared.bus import request

if TYPE_CHECKING:
    from shared.agent.runtime import AgentRuntime


def remote_provider(
    broker: NatsBroker, subjects: Subjects, name: str, *, timeout: float = 2.0
) -> Provider:
    """Return a provider that asks ``<ns>.provider.<name>.get``, waiting at most ``timeout`` s.

    The runtime runs providers in parallel and records one that fails (here:
    ``Unavailable`` when slow or absent) in ``state.data["provider_errors"]``;
    the turn goes on without it.
    """

    async def get(runtime: AgentRuntime, message: Memory, state: State) -> ProviderResult:
        del state
        asked = GetProvider(
            agent_id=runtime.agent_id, agent_name=runtime.character.name, message=message
        )
        output = await request(
            broker, subjects.provider_get(name), asked, ProviderOutput, timeout=timeout
        )
        return ProviderResult(text=output.text, values=output.values, data=output.data)

    return Provider(name=name, get=get, description=f"remote provider {name}")


def remote_action(
    broker: NatsBroker, subjects: Subjects, name: str, *, timeout: float = 30.0
) -> Action:
    """Return an action run by ``<ns>.action.<name>.invoke``; its ``text`` goes to the user.

    Like any action, a failure (the service says so, answers too late, or is
    absent) is a failed step of the turn, never a lost message.
    """

    async def invoke(
        runtime: AgentRuntime,
        message: Memory,
        state: State,
        options: HandlerOptions,
        callback: Callback | None,
        responses: Sequence[Memory],
    ) -> ActionResult:
        del state, responses
        asked = InvokeAction(
            agent_id=runtime.agent_id,
            agent_name=runtime.character.name,
            message=message,
            parameters=dict(options.parameters),
        )
        output = await request(
            broker, subjects.action_invoke(name), asked, ActionOutput, timeout=timeout
        )
        if output.success and output.text and callback is not None:
            await callback(Content(text=output.text, actions=[name], source=message.content.source))
        return ActionResult(
            success=output.success,
            text=output.text or None,
            values=output.values,
            data=output.data,
            error=output.error,
        )

    return Action(name=name, handler=invoke, description=f"remote action {name}")
