"""The embedding work queue: memories waiting for a vector (``<ns>.embedding.queue.<priority>``)."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta

from contracts.content import Text
from contracts.message import Event, Id

Priority = Literal["high", "normal", "low"]
PRIORITIES: tuple[Priority, ...] = ("high", "normal", "low")
"""Drained in this order: high first."""


class EmbeddingRequested(Event, kw_only=True, frozen=True, tag="embedding.requested.v1"):
    """A stored memory needs the vector of its text; the embedding service writes it."""

    agent_id: Annotated[Id, Meta(description="The agent that owns the memory.")]
    memory_id: Annotated[Id, Meta(description="The memory to update.")]
    text: Text
    room_id: Annotated[
        str | None, Meta(description="The memory's room, for the events that report on it.")
    ] = None
    run_id: Annotated[
        str | None, Meta(description="The run (turn) that stored the memory, if any.")
    ] = None
