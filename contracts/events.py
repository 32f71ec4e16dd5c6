"""Lifecycle events of agents, published on the events stream (``<ns>.event.<agent>.<type>``)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

from contracts.message import Event, Id, Message


class AgentEventOccurred(Event, kw_only=True, frozen=True, tag="agent.event.occurred.v1"):
    """Something happened in an agent: a run started or ended, a message was sent, ..."""

    agent_id: Annotated[Id, Meta(description="The agent it happened in.")]
    event_type: Annotated[
        str,
        Meta(description="What happened, dotted and lower case: run.started, message.sent, ..."),
    ]
    run_id: Annotated[str | None, Meta(description="The run (turn) it belongs to.")] = None
    message_id: Annotated[str | None, Meta(description="The message it is about.")] = None
    room_id: Annotated[str | None, Meta(description="The room it happened in.")] = None
    data: Annotated[
        dict[str, Any], Meta(description="Event details: status, error, action, text, ...")
    ] = msgspec.field(default_factory=dict)


class ListAgents(Message, kw_only=True, frozen=True, tag="agents.list.v1"):
    """Ask a runtime replica which agents it hosts."""


class AgentInfo(msgspec.Struct, kw_only=True, frozen=True):
    """One hosted agent."""

    id: Id
    name: str


class AgentList(Message, kw_only=True, frozen=True, tag="agents.listed.v1"):
    """The agents a runtime replica hosts."""

    agents: list[AgentInfo]
