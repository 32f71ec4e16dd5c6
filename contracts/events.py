"""Lifecycle events of agents, published on the events stream (``<ns>.event.<agent>.<type>``)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

from contracts.agent import Content, HandleMessageResult
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
    """Ask which agents the stack has (stored through the memory service)."""


class AgentInfo(msgspec.Struct, kw_only=True, frozen=True):
    """One agent of the stack."""

    id: Id
    name: str
    enabled: Annotated[bool, Meta(description="Hosted by the runtime (false: stopped).")] = True


class AgentList(Message, kw_only=True, frozen=True, tag="agents.listed.v1"):
    """The agents of the stack."""

    agents: list[AgentInfo]


class RunChunk(Message, kw_only=True, frozen=True, tag="run.chunk.v1"):
    """A piece of the reply being written (``<ns>.run.<run_id>.chunk``), in order."""

    run_id: Id
    message_id: Annotated[Id, Meta(description="The message being answered.")]
    index: Annotated[int, Meta(ge=0, description="0, 1, 2, ...: the order of the chunks.")]
    text: str


class RunResponse(Message, kw_only=True, frozen=True, tag="run.response.v1"):
    """Something the agent said in the run (``<ns>.run.<run_id>.response``)."""

    run_id: Id
    message_id: Id
    content: Content


class RunEnded(Message, kw_only=True, frozen=True, tag="run.ended.v1"):
    """The run is over (``<ns>.run.<run_id>.completed`` or ``.failed``)."""

    run_id: Id
    message_id: Id
    status: Annotated[str, Meta(description="completed, failed, ignored, timeout, ...")]
    error: str | None = None
    result: Annotated[
        HandleMessageResult | None, Meta(description="The turn's result, when it has one.")
    ] = None


class RunHeartbeat(Message, kw_only=True, frozen=True, tag="run.heartbeat.v1"):
    """The run's turn is alive (``<ns>.run.<run_id>.heartbeat``), sent every ``interval`` seconds.

    A follower waits as long as heartbeats come and gives the run up when a
    few intervals pass without one (the replica running it died).
    """

    run_id: Id
    message_id: Annotated[Id, Meta(description="The message being answered.")]
    interval: Annotated[
        float, Meta(gt=0, description="Seconds until the next heartbeat, while the turn lives.")
    ]
