"""Subscribers of the runtime service: decode, call the use case, encode.

Until the agent pipeline lands, a turn is an echo: it proves the path from a
connector through NATS to the runtime and back, with typed errors.
"""

from __future__ import annotations

from faststream.nats import NatsMessage

from contracts import Content, HandleMessage, HandleMessageResult, agent_id_of


async def handle_message(request: HandleMessage, message: NatsMessage) -> HandleMessageResult:
    """Handle one inbound message for the agent named in the subject and return its reply."""
    agent_id = agent_id_of(message.raw_message.subject)
    reply = Content(
        text=request.content.text,
        actions=["REPLY"],
        source=request.content.source,
        in_reply_to=request.message_id,
    )
    return HandleMessageResult(
        message_id=request.message_id,
        agent_id=agent_id,
        did_respond=True,
        response_content=reply,
        mode="simple",
    )
