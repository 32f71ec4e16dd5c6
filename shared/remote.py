"""Providers served by other processes, as ordinary ``Provider`` objects of a runtime."""

from __future__ import annotations

from typing import TYPE_CHECKING

from faststream.nats import NatsBroker

from contracts import Subjects
from contracts.providers import GetProvider, ProviderOutput
from contracts.records import Memory
from shared.agent.types import Provider, ProviderResult, State
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
