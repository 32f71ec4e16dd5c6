"""An echo responder on the agent subject, for tests of the bus and the gateway alone."""

from __future__ import annotations

from faststream.nats import NatsBroker, NatsMessage

from contracts import Content, HandleMessage, HandleMessageResult, agent_id_of
from shared.bus import create_broker
from shared.config import Settings


def echo_broker(settings: Settings) -> NatsBroker:
    """A broker answering ``<ns>.agent.<id>.message.handle`` with the text it got."""
    broker = create_broker(settings.nats_url, name="echo")

    @broker.subscriber(settings.subjects.message_handle_template, queue="runtime")
    async def echo(request: HandleMessage, message: NatsMessage) -> HandleMessageResult:
        return HandleMessageResult(
            message_id=request.message_id,
            agent_id=agent_id_of(message.raw_message.subject),
            did_respond=True,
            response_content=Content(
                text=request.content.text, actions=["REPLY"], in_reply_to=request.message_id
            ),
            mode="simple",
        )

    return broker
