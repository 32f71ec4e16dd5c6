"""Subscribers of the runtime service: decode, hand to the agent host, encode."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec
from nats.aio.msg import Msg

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
from shared.bus import current_subject, decode_as
from shared.hosting import AgentHost
from shared.raw_requests import CORRELATION_HEADER, RequestHandler
from shared.rooms import agreed_id


class _MessageId(msgspec.Struct):
    message_id: str | None = None


_MESSAGE_ID = msgspec.json.Decoder(_MessageId)
"""Whether the caller named the message (read once the body decoded as a HandleMessage)."""

_HANDLE = msgspec.json.Decoder(HandleMessage)


def message_handler(host: AgentHost) -> RequestHandler:
    """Return the handler of ``<ns>.agent.*.message.handle`` (a raw nats-py subscription).

    Every replica receives every message (no queue group, see
    ``shared.rooms``). It only queues the message (in arrival order, behind
    its room's earlier messages) and returns: the replica that owns the room
    replies when the turn ends, so a message that waits for its room holds no
    worker of the subscription. Raw nats-py, not FastStream: every replica
    decodes every message, and FastStream's per-message cost was a sixth of
    the runtime's CPU.

    Raises (answered as ``Error`` replies):
        BadRequest: the body is not a ``HandleMessage`` (the field named), or
            the subject names no valid agent id.
        NotFound: ``reply_at_once`` for an agent that is not stored.
    """

    async def handle_message(msg: Msg) -> HandleMessageResult | None:
        """Queue one inbound message for the agent named in the subject; None: the turn replies."""
        request = decode_as(_HANDLE, msg.data)
        agent_id = agent_id_of(msg.subject)
        if _MESSAGE_ID.decode(msg.data).message_id is None:
            # Every replica decodes it (shared.rooms): they must give it one id.
            # The reply inbox tells two sends of the same words apart.
            request = msgspec.structs.replace(
                request, message_id=agreed_id("message", msg.reply, msg.data)
            )
        if request.reply_at_once:
            # An unknown agent is an error reply now, not a run that never
            # ends; an agent already running here returns without waiting,
            # so arrival order holds.
            await host.runtime_for(agent_id)
        headers = msg.headers or {}
        return host.accept(
            agent_id,
            request,
            reply_to=msg.reply,
            headers=headers,
            correlation_id=headers.get(CORRELATION_HEADER, ""),
        )

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
