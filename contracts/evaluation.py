"""The evaluation queue: ended turns waiting for the agent's evaluators."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from contracts.message import Id, Message
from contracts.records import Memory
from contracts.turn import TurnContext


class EvaluateTurn(Message, kw_only=True, frozen=True, tag="agent.turn.evaluate.v1"):
    """Run the agent's evaluators (REFLECTION, ...) for one ended turn.

    Carries everything the evaluators read, so evaluating costs no storage
    reads: the message, what the agent said, and the context the turn loaded.
    """

    agent_id: Annotated[Id, Meta(description="The agent whose evaluators run.")]
    run_id: Annotated[Id, Meta(description="The run of the turn being evaluated.")]
    message: Annotated[Memory, Meta(description="The inbound message of the turn.")]
    responses: Annotated[
        list[Memory], Meta(description="What the agent said in the turn, in order.")
    ] = msgspec.field(default_factory=list)
    did_respond: Annotated[bool, Meta(description="Whether the agent answered.")] = False
    context: Annotated[
        TurnContext | None,
        Meta(description="What the turn read (room, people, recent messages), with its replies."),
    ] = None
