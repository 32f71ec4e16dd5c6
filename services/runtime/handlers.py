"""Subscribers of the runtime service: decode, hand to the agent host, encode."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from faststream.nats import NatsMessage

from contracts import HandleMessage, HandleMessageResult, agent_id_of
from contracts.events import AgentList, ListAgents
from shared.hosting import AgentHost


def message_handler(
    host: AgentHost,
) -> Callable[[HandleMessage, NatsMessage], Awaitable[HandleMessageResult]]:
    """Return the subscriber of ``<ns>.agent.*.message.handle``."""

    async def handle_message(request: HandleMessage, message: NatsMessage) -> HandleMessageResult:
        """Handle one inbound message for the agent named in the subject and return its reply."""
        return await host.handle(agent_id_of(message.raw_message.subject), request)

    return handle_message


def list_handler(host: AgentHost) -> Callable[[ListAgents], Awaitable[AgentList]]:
    """Return the subscriber of ``<ns>.agents.list``."""

    async def list_agents(request: ListAgents) -> AgentList:
        """Return the agents this runtime replica hosts."""
        del request
        return AgentList(agents=host.list())

    return list_agents
