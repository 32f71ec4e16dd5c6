"""The turn: everything that belongs to one message, and nothing on a long-lived object.

A runtime handles many messages at once (16 turns of one agent in the runtime
service). What belongs to one of them (its run id, its state cache, the
results of its actions, what the agent said, the rows it will write, how it
ended) lives in a ``Turn``, reached through a ``contextvars`` variable: every
task the turn starts (providers, actions, event handlers) sees its own turn,
and two turns never see each other's.

A turn reads its storage once (``begin_turn``: the room, world, people and
recent messages, in one call) and writes once (``commit_turn``: replies,
action results, logs and the outcome, in one transaction).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field

from contracts.agent import RunStatus
from contracts.records import Log, Memory, Relationship
from contracts.turn import CacheEntry, TurnCommit, TurnContext
from shared.agent.edge import fitted
from shared.agent.types import ActionResult, State


@dataclass
class Turn:
    """One message being handled: its run, its state, its results and its writes."""

    run_id: str
    message: Memory
    response_id: str
    context: TurnContext | None = None
    state: State | None = None
    """The state composed for ``message`` so far (the per-message state cache)."""
    action_results: list[ActionResult] = field(default_factory=list)
    sent: list[Memory] = field(default_factory=list)
    """What the agent said, in order (stored at commit)."""
    memories: list[Memory] = field(default_factory=list)
    """Messages to store at commit: replies and action results."""
    facts: list[Memory] = field(default_factory=list)
    relationships: list[Relationship] = field(default_factory=list)
    logs: list[Log] = field(default_factory=list)
    cache: list[CacheEntry] = field(default_factory=list)
    status: RunStatus = "completed"
    error: str | None = None

    def recent_messages(self, room_id: str) -> list[Memory] | None:
        """The room's recent messages as loaded plus this turn's own, newest first.

        None when the turn loaded no context for ``room_id`` (ask storage then).
        """
        if self.context is None or self.context.room.id != room_id:
            return None
        mine = [m for m in reversed(self.memories) if m.room_id == room_id]
        return [*mine, *self.context.recent_messages]

    def commit(self) -> TurnCommit:
        """What this turn wrote, as one storage commit."""
        return TurnCommit(  # what the agent wrote itself is cut to fit, never refused
            memories=[fitted(m) for m in self.memories],
            facts=[fitted(m) for m in self.facts],
            relationships=list(self.relationships),
            logs=list(self.logs),
            cache=list(self.cache),
        )

    def has_writes(self) -> bool:
        """Say whether committing would write anything."""
        return bool(self.memories or self.facts or self.relationships or self.logs or self.cache)


def up_to(memories: Sequence[Memory], message: Memory, agent_id: str) -> list[Memory]:
    """``memories`` (newest first) without the messages stored after ``message`` by others.

    Nor the agent's replies to those; its other replies stay (one to an
    earlier message may be stored after ``message`` arrived). A message
    answered late (its first turn broke off after storing it, and it came
    again behind the room's later messages) is handled as the conversation
    stood when it came: planned, decided on (should-respond, the reply limit
    to other agents) and reflected on without what came after it.
    """
    ids = [m.id for m in memories]
    if message.id not in ids or ids[0] == message.id:
        return list(memories)
    at = ids.index(message.id)
    later = {m.id for m in memories[:at] if m.entity_id != agent_id}
    if not later:
        return list(memories)
    newer = [
        m for m in memories[:at] if m.entity_id == agent_id and m.content.in_reply_to not in later
    ]
    return [*newer, *memories[at:]]


def outcome_key(message: Memory) -> str:
    """The cache key of a message's outcome: per room, since platforms reuse message ids."""
    return f"turn-outcome:{message.room_id}:{message.id}"


def reflection_key(room_id: str) -> str:
    """The cache key REFLECTION keeps its place in a room under."""
    return f"{room_id}-reflection-last-processed"


_CURRENT: ContextVar[Turn | None] = ContextVar("elizamesh_turn", default=None)


def current_turn() -> Turn | None:
    """The turn the calling task belongs to, or None outside any turn."""
    return _CURRENT.get()


@contextlib.contextmanager
def entered(turn: Turn | None) -> Iterator[Turn | None]:
    """Make ``turn`` the current turn of this task (and the tasks it starts) until exit."""
    token = _CURRENT.set(turn)
    try:
        yield turn
    finally:
        _CURRENT.reset(token)
