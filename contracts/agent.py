"""Messages for talking to an agent: handle one inbound message, get the outcome."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from contracts.content import MAX_TEXT_LENGTH, Content, Media, MentionContext, Text
from contracts.error import Error
from contracts.message import Id, Message, new_id
from contracts.records import Memory

__all__ = [
    "MAX_TEXT_LENGTH",
    "ActionOutcome",
    "Content",
    "HandleMessage",
    "HandleMessageReply",
    "HandleMessageResult",
    "Media",
    "MentionContext",
    "RunStatus",
    "Text",
]


class HandleMessage(Message, kw_only=True, frozen=True, tag="agent.message.handle.v1"):
    """Ask the agent named in the subject to handle one inbound message and reply."""

    message_id: Annotated[
        Id, Meta(description="Id of the inbound message; the idempotency key of the turn.")
    ] = msgspec.field(default_factory=new_id)
    entity_id: Annotated[Id, Meta(description="Who sent the message (the user's entity id).")]
    room_id: Annotated[Id, Meta(description="Where it was sent (a channel, DM or thread).")]
    world_id: Annotated[
        Id | None, Meta(description="The server or workspace holding the room, if any.")
    ] = None
    content: Annotated[Content, Meta(description="What the sender said.")]
    run_id: Annotated[
        Id | None,
        Meta(
            description="Publish this turn's chunks, responses and end on <ns>.run.<run_id>.* "
            "(subscribe before sending)."
        ),
    ] = None
    reply_at_once: Annotated[
        bool,
        Meta(description="Reply as soon as the turn is accepted; the outcome follows on the run."),
    ] = False


RunStatus = Literal[
    "completed", "failed", "ignored", "self", "muted", "superseded", "timeout", "accepted"
]
"""How a turn ended: ``completed``; ``failed`` (a step failed, see ``error``); ``ignored``
(the agent chose silence); ``self`` (the agent's own message); ``muted`` (the room is
muted); ``superseded`` (a newer message in the room took over); ``timeout``; ``accepted``
(a ``reply_at_once`` acknowledgement: the outcome follows on the run)."""


class ActionOutcome(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """How one action of a turn went."""

    action: Annotated[str, Meta(description="The action's name, e.g. REPLY.")]
    success: bool = True
    text: Annotated[str | None, Meta(description="What the action produced, if text.")] = None
    error: Annotated[str | None, Meta(description="Why it failed, when it failed.")] = None


class HandleMessageResult(Message, kw_only=True, frozen=True, tag="agent.message.handled.v1"):
    """The outcome of handling one message: the one result type of every wiring.

    ``AgentRuntime.message_service.handle_message``, ``ElizaOS.handle_message``,
    the runtime service's reply, the gateway's HTTP reply and the run's end
    all carry this, with the same ``status``.
    """

    message_id: Annotated[Id, Meta(description="Id of the inbound message that was handled.")]
    agent_id: Annotated[Id, Meta(description="The agent that handled it.")]
    did_respond: Annotated[bool, Meta(description="False when the agent chose not to answer.")]
    response_content: Annotated[
        Content, Meta(description="The agent's last answer; empty when it gave none.")
    ] = msgspec.field(default_factory=Content)
    mode: Annotated[
        Literal["simple", "actions", "none"],
        Meta(description="simple: one model call; actions: actions ran; none: no answer."),
    ] = "none"
    run_id: Annotated[Id | None, Meta(description="The run the turn was published on.")] = None
    accepted: Annotated[
        bool, Meta(description="True for a reply_at_once acknowledgement: the outcome follows.")
    ] = False
    status: Annotated[RunStatus, Meta(description="How the turn ended.")] = "completed"
    error: Annotated[
        str | None, Meta(description="What failed, when status is failed or timeout.")
    ] = None
    response_messages: Annotated[
        list[Memory], Meta(description="Everything the agent said in this turn, as stored.")
    ] = msgspec.field(default_factory=list)
    action_results: Annotated[
        list[ActionOutcome], Meta(description="The actions run, in order, and how each went.")
    ] = msgspec.field(default_factory=list)


HandleMessageReply = HandleMessageResult | Error
"""What ``<ns>.agent.<id>.message.handle`` answers with."""
