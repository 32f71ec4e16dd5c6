"""Running the stack: agents added and stopped over NATS, health, and outbound messages."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from contracts.content import Content
from contracts.message import Event, Id, Message

AgentCommandName = Literal["start", "stop", "delete"]
AGENT_COMMANDS: tuple[AgentCommandName, ...] = ("start", "stop", "delete")


class AddAgent(Message, kw_only=True, frozen=True, tag="agents.add.v1"):
    """Start a new agent from a character document (``<ns>.agents.add``).

    The character is stored through the memory service, so every runtime
    replica can host it; the replica that takes the request starts it at once.
    """

    character: Annotated[
        dict[str, Any], Meta(description="An elizaOS character: name, bio, id, plugins, ...")
    ]
    plugins: Annotated[
        list[str],
        Meta(description="Plugins by name or entry point; default: the runtime's AGENT_PLUGINS."),
    ] = msgspec.field(default_factory=list)


class AgentCommand(Message, kw_only=True, frozen=True, tag="agent.command.v1"):
    """Start, stop or delete an agent (``<ns>.agent.<id>.start|stop|delete``).

    One runtime replica changes the stored agent and tells the others
    (``<ns>.agents.changed``), which start or stop their copy to match.
    """


class AgentChanged(Event, kw_only=True, frozen=True, tag="agent.changed.v1"):
    """An agent was added, started, stopped or deleted: replicas bring their copy in line."""

    agent_id: Id


class AgentStatus(Message, kw_only=True, frozen=True, tag="agent.status.v1"):
    """An agent after a command: whether it is enabled (hosted) or gone."""

    id: Id
    name: str
    enabled: bool
    deleted: bool = False


class CheckAgent(Message, kw_only=True, frozen=True, tag="agent.health.check.v1"):
    """Probe one agent (``<ns>.agent.<id>.health``): storage, and its model if asked."""

    check_model: Annotated[
        bool, Meta(description="Also ask the text model for a one-word answer (costs a call).")
    ] = False


class AgentHealth(Message, kw_only=True, frozen=True, tag="agent.health.v1"):
    """How one agent is doing, measured now by the replica that answered."""

    agent_id: Id
    alive: bool
    responsive: Annotated[bool, Meta(description="Its storage answered a query.")]
    model_ok: Annotated[bool | None, Meta(description="None when the model was not asked.")] = None
    uptime: Annotated[float, Meta(ge=0, description="Seconds since it started here.")] = 0.0
    error: str | None = None
    memory_usage: Annotated[
        int, Meta(ge=0, description="Peak resident memory of the hosting process, in bytes.")
    ] = 0


class CheckHealth(Message, kw_only=True, frozen=True, tag="service.health.check.v1"):
    """Ask every service instance how it is (``<ns>.health``); each one answers."""


class ConsumerHealth(msgspec.Struct, kw_only=True, frozen=True):
    """One subscription or JetStream consumer of a service."""

    name: str
    alive: bool
    pending: Annotated[int, Meta(ge=0, description="Messages waiting (consumer lag).")] = 0
    ack_pending: Annotated[int, Meta(ge=0, description="Delivered, not yet acknowledged.")] = 0


class ServiceHealth(Message, kw_only=True, frozen=True, tag="service.health.v1"):
    """One service instance's real status: connected, its consumers alive, its lag."""

    service: str
    instance: Annotated[str, Meta(description="host:pid of the process that answered.")]
    version: str
    ok: Annotated[bool, Meta(description="Connected and every consumer alive.")]
    consumers: list[ConsumerHealth] = msgspec.field(default_factory=list)
    details: dict[str, Any] = msgspec.field(default_factory=dict)


class OutboundMessage(Message, kw_only=True, frozen=True, tag="outbound.send.v1"):
    """Something an agent sends to a platform (``<ns>.outbound.<source>.send``).

    Published by ``send_message_to_target``; the platform's connector delivers it.
    """

    agent_id: Id
    source: Annotated[str, Meta(description="The platform: discord, webhook, cli, ...")]
    content: Content
    room_id: str | None = None
    channel_id: str | None = None
    server_id: str | None = None
    entity_id: str | None = None
    thread_id: str | None = None
