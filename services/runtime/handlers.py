"""Subscribers of the runtime service: decode, hand to the agent host, encode."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec
from faststream.nats import NatsMessage

from contracts import HandleMessage, HandleMessageResult, agent_id_of
from contracts.control import (
    AddAgent,
    AgentChanged,
    AgentCommand,
    AgentHealth,
    AgentStatus,
    CheckAgent,
)
from contracts.events import AgentList, ListAgents
from shared.bus import current_subject
from shared.hosting import AgentHost
from shared.rooms import agreed_id


class _MessageId(msgspec.Struct):
    message_id: str | None = None


_MESSAGE_ID = msgspec.json.Decoder(_MessageId)
"""Whether the caller named the message (the body is valid: FastStream decoded it)."""


def message_handler(
    host: AgentHost,
) -> Callable[[HandleMessage], Awaitable[HandleMessageResult | None]]:
    """Return the subscriber of ``<ns>.agent.*.message.handle``.

    Every replica receives every message (no queue group, see
    ``shared.rooms``). It only queues the message (in arrival order, behind
    its room's earlier messages) and returns: the replica that owns the room
    replies when the turn ends, so a message that waits for its room holds no
    worker of the subscription.
    """

    async def handle_message(request: HandleMessage) -> HandleMessageResult | None:
        """Handle one inbound message for the agent named in the subject and reply its outcome."""
        message: NatsMessage = host.broker.context.get_local("message")
        raw = message.raw_message
        agent_id = agent_id_of(raw.subject)
        if _MESSAGE_ID.decode(raw.data).message_id is None:
            # Every replica decodes it (shared.rooms): they must give it one id.
            # The reply inbox tells two sends of the same words apart.
            request = msgspec.structs.replace(
                request, message_id=agreed_id("message", raw.reply, raw.data)
            )
        if request.reply_at_once:
            # An unknown agent is an error reply now, not a run that never
            # ends; an agent already running here returns without waiting,
            # so arrival order holds.
            await host.runtime_for(agent_id)
        accepted = host.accept(
            agent_id,
            request,
            reply_to=message.reply_to,
            headers=message.headers,
            correlation_id=message.correlation_id,
        )
        if accepted is None:
            message.reply_to = ""  # FastStream replies to nobody: the turn will
        return accepted

    return handle_message


def list_handler(host: AgentHost) -> Callable[[ListAgents], Awaitable[AgentList]]:
    """Return the subscriber of ``<ns>.agents.list``."""

    async def list_agents(request: ListAgents) -> AgentList:
        """Return every stored agent, enabled or stopped."""
        del request
        return AgentList(agents=await host.list())

    return list_agents


def add_handler(host: AgentHost) -> Callable[[AddAgent], Awaitable[AgentStatus]]:
    """Return the subscriber of ``<ns>.agents.add``."""

    async def add_agent(request: AddAgent) -> AgentStatus:
        """Store and start the agent of the character in the request."""
        return await host.create(request)

    return add_agent


def command_handler(
    host: AgentHost, command: str
) -> Callable[[AgentCommand], Awaitable[AgentStatus]]:
    """Return the subscriber of ``<ns>.agent.*.<command>`` (start, stop or delete)."""

    async def run_agent_command(request: AgentCommand) -> AgentStatus:
        """Apply the command to the agent named in the subject, here and everywhere."""
        del request
        return await host.command(agent_id_of(current_subject(host.broker)), command)

    return run_agent_command


def health_handler(
    host: AgentHost,
) -> Callable[[CheckAgent], Awaitable[AgentHealth]]:
    """Return the subscriber of ``<ns>.agent.*.health``."""

    async def check_agent(request: CheckAgent) -> AgentHealth:
        """Probe the agent named in the subject."""
        agent_id = agent_id_of(current_subject(host.broker))
        return await host.probe(agent_id, check_model=request.check_model)

    return check_agent


def changed_handler(host: AgentHost) -> Callable[[AgentChanged], Awaitable[None]]:
    """Return the subscriber of ``<ns>.agents.changed`` (every replica, no queue group)."""

    async def agent_changed(event: AgentChanged) -> None:
        """Start or stop this replica's copy of the agent to match the stored one."""
        await host.reconcile(event.agent_id)

    return agent_changed
