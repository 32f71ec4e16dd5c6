"""What one agent turn reads and writes, each in one storage call.

A turn begins with ``begin_turn``: it makes sure the sender, the world and the
room exist (``Connection`` says how to create what is missing), stores the
inbound message, and reads back everything the turn needs (``TurnContext``).
It ends with ``commit_turn``: what it produced (``TurnCommit``) is written in
one transaction. Times are milliseconds since the Unix epoch.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

from contracts.records import (
    Agent,
    ChannelType,
    Entity,
    Log,
    Memory,
    ParticipantState,
    Record,
    Relationship,
    Room,
    Task,
    World,
)

__all__ = ["CacheEntry", "Connection", "TurnCommit", "TurnContext"]


class Connection(Record, kw_only=True):
    """Where a message came from, as the connector knows it: used to create what is missing."""

    entity_names: Annotated[
        list[str], Meta(description="Names of the sender; new ones are added to a known sender.")
    ] = msgspec.field(default_factory=list)
    source: Annotated[
        str, Meta(description="The platform, e.g. 'discord'; keys the sender's metadata.")
    ] = "unknown"
    room_type: Annotated[
        ChannelType, Meta(description="The kind of room, for a room that does not exist yet.")
    ] = ChannelType.DM
    room_name: Annotated[
        str | None, Meta(description="The room's name, for a new room (default: its id).")
    ] = None
    world_name: Annotated[
        str | None, Meta(description="The world's name, for a new world (default: its id).")
    ] = None
    channel_id: Annotated[
        str | None, Meta(description="The platform's id of the channel, for a new room.")
    ] = None
    message_server_id: Annotated[
        str | None, Meta(description="The platform's id of the server, for a new room and world.")
    ] = None
    entity_metadata: Annotated[
        dict[str, Any],
        Meta(description="What the platform says about the sender, merged under ``source``."),
    ] = msgspec.field(default_factory=dict)


class TurnContext(Record, kw_only=True):
    """What one turn reads, loaded at once by ``begin_turn``."""

    agent: Annotated[Agent | None, Meta(description="The agent as stored.")] = None
    room: Annotated[Room, Meta(description="The room of the inbound message.")]
    world: Annotated[World | None, Meta(description="The room's world, if it has one.")] = None
    participants: Annotated[
        list[str], Meta(description="Ids of the room's participants, in joining order.")
    ] = msgspec.field(default_factory=list)
    entities: Annotated[
        list[Entity],
        Meta(description="The participants and the authors of the recent messages that exist."),
    ] = msgspec.field(default_factory=list)
    recent_messages: Annotated[
        list[Memory],
        Meta(
            description="The room's latest messages, newest first, the inbound one included; "
            "without vectors."
        ),
    ] = msgspec.field(default_factory=list)
    participant_state: Annotated[
        ParticipantState | None,
        Meta(description="The agent's own state in the room: FOLLOWED, MUTED or none."),
    ] = None
    message_stored: Annotated[
        bool,
        Meta(description="False when a memory with the inbound message's id existed already."),
    ] = True
    outcome: Annotated[
        Any, Meta(description="The value cached under ``outcome_key``, unless absent or expired.")
    ] = None
    cache: Annotated[
        dict[str, Any],
        Meta(description="The values of the asked ``cache_keys`` that exist and have not expired."),
    ] = msgspec.field(default_factory=dict)
    tasks: Annotated[
        list[Task], Meta(description="The room's tasks (e.g. awaiting a choice), oldest first.")
    ] = msgspec.field(default_factory=list)
    world_created: Annotated[
        bool, Meta(description="True when this call stored the room's world (it was missing).")
    ] = False
    room_created: Annotated[
        bool, Meta(description="True when this call stored the room (it was missing).")
    ] = False
    participants_added: Annotated[
        list[str],
        Meta(
            description="Ids this call added to the room's participants (the sender, the agent), "
            "in that order; empty when both were in the room."
        ),
    ] = msgspec.field(default_factory=list)


class CacheEntry(Record, kw_only=True):
    """One cache value to set."""

    key: Annotated[str, Meta(min_length=1, max_length=255, description="The cache key.")]
    value: Annotated[Any, Meta(description="Any JSON value; replaces the key's previous one.")]
    expires_at: Annotated[
        Annotated[int, Meta(ge=0)] | None,
        Meta(description="When the value expires, in ms since the epoch; None: never."),
    ] = None


class TurnCommit(Record, kw_only=True):
    """What one turn wrote, committed at once by ``commit_turn`` (all or nothing)."""

    memories: Annotated[
        list[Memory],
        Meta(description="Memories for table 'messages'; ids that exist are left as they are."),
    ] = msgspec.field(default_factory=list)
    facts: Annotated[
        list[Memory],
        Meta(description="Memories for table 'facts'; ids that exist are left as they are."),
    ] = msgspec.field(default_factory=list)
    logs: Annotated[list[Log], Meta(description="Audit rows to append.")] = msgspec.field(
        default_factory=list
    )
    cache: Annotated[list[CacheEntry], Meta(description="Cache values to set, replacing.")] = (
        msgspec.field(default_factory=list)
    )
    relationships: Annotated[
        list[Relationship],
        Meta(
            description="Links to create, or whose tags and metadata replace those of the "
            "existing link between the same source and target."
        ),
    ] = msgspec.field(default_factory=list)
