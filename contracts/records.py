"""The records an agent keeps: memories, entities, rooms, worlds, agents.

Field names are the elizaOS ones in snake_case. They are plain data: they
cross the wire to the memory service unchanged, and the storage adapter
returns them. Times are milliseconds since the Unix epoch, as in elizaOS.
"""

from __future__ import annotations

import time
import uuid
from enum import StrEnum
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from contracts.content import Content
from contracts.message import Id, new_id

_last_ms = 0


def now_ms() -> int:
    """Return the current time in milliseconds since the Unix epoch, never the same twice.

    Within a process each call returns more than the last (a millisecond
    later when the clock has not moved), so records made one after another
    keep that order when sorted by time: a reply stored in the millisecond of
    the message it answers would otherwise sort before it, and a room's
    recent messages would come back in either order.
    """
    global _last_ms  # noqa: PLW0603 - one clock per process, on purpose
    now = time.time_ns() // 1_000_000
    _last_ms = now if now > _last_ms else _last_ms + 1
    return _last_ms


Millis = Annotated[int, Meta(ge=0, description="Milliseconds since the Unix epoch (UTC).")]
JsonMap = Annotated[dict[str, Any], Meta(description="Free-form JSON object.")]


class Record(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Base of every stored record.

    An id may be given as a ``uuid.UUID``: it is kept as its canonical text
    (msgspec does not check constructor arguments, so this is the one place
    that sees them all). Everything else is checked where the record is
    stored, by the same rules that read it back.
    """

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if isinstance(value, uuid.UUID):
                setattr(self, name, str(value))


class Memory(Record, kw_only=True):
    """One remembered thing: a message, a fact, a document fragment..."""

    id: Id = msgspec.field(default_factory=new_id)
    entity_id: Annotated[Id, Meta(description="Who the memory is from or about.")]
    agent_id: Annotated[Id | None, Meta(description="The agent that owns it.")] = None
    room_id: Annotated[Id, Meta(description="Where it happened.")]
    world_id: Id | None = None
    content: Content
    embedding: Annotated[
        list[float] | None, Meta(description="Vector of the content, once computed.")
    ] = None
    created_at: Millis = msgspec.field(default_factory=now_ms)
    unique: Annotated[bool, Meta(description="False marks a near-duplicate.")] = True
    similarity: Annotated[
        float | None, Meta(description="Cosine similarity, set by vector search.")
    ] = None
    metadata: JsonMap = msgspec.field(default_factory=dict)


class Entity(Record, kw_only=True):
    """A person or agent the agent knows, under one or more names."""

    id: Id = msgspec.field(default_factory=new_id)
    names: list[str] = msgspec.field(default_factory=list)
    agent_id: Id | None = None
    metadata: JsonMap = msgspec.field(default_factory=dict)


class ChannelType(StrEnum):
    """The kind of place a room is (decides, among others, whether the agent always answers)."""

    SELF = "SELF"
    DM = "DM"
    GROUP = "GROUP"
    VOICE_DM = "VOICE_DM"
    VOICE_GROUP = "VOICE_GROUP"
    FEED = "FEED"
    THREAD = "THREAD"
    WORLD = "WORLD"
    FORUM = "FORUM"
    API = "API"


class Room(Record, kw_only=True):
    """A place where messages are exchanged: a channel, a DM, a thread."""

    id: Id = msgspec.field(default_factory=new_id)
    name: str | None = None
    agent_id: Id | None = None
    source: str = "unknown"
    type: ChannelType = ChannelType.DM
    channel_id: str | None = None
    message_server_id: str | None = None
    world_id: Id | None = None
    metadata: JsonMap = msgspec.field(default_factory=dict)


class World(Record, kw_only=True):
    """A server or workspace grouping rooms; holds ownership, roles and settings."""

    id: Id = msgspec.field(default_factory=new_id)
    name: str | None = None
    agent_id: Id | None = None
    message_server_id: str | None = None
    metadata: JsonMap = msgspec.field(default_factory=dict)


class ParticipantState(StrEnum):
    """How the agent takes part in a room besides the default."""

    FOLLOWED = "FOLLOWED"
    MUTED = "MUTED"


class Relationship(Record, kw_only=True):
    """A link between two entities, as seen by one agent (tags such as 'friend')."""

    id: Id = msgspec.field(default_factory=new_id)
    source_entity_id: Id
    target_entity_id: Id
    agent_id: Id | None = None
    tags: list[str] = msgspec.field(default_factory=list)
    metadata: JsonMap = msgspec.field(default_factory=dict)
    created_at: Millis = msgspec.field(default_factory=now_ms)


class Log(Record, kw_only=True):
    """One audit row: a model call, an action, a run event..."""

    id: Id = msgspec.field(default_factory=new_id)
    entity_id: Id
    room_id: Id | None = None
    type: Annotated[str, Meta(description="What is logged, e.g. 'useModel:TEXT_LARGE'.")]
    body: JsonMap = msgspec.field(default_factory=dict)
    created_at: Millis = msgspec.field(default_factory=now_ms)


class Component(Record, kw_only=True):
    """A typed piece of data attached to an entity (contact details, preferences, ...)."""

    id: Id = msgspec.field(default_factory=new_id)
    entity_id: Id
    agent_id: Id | None = None
    room_id: Id | None = None
    world_id: Id | None = None
    source_entity_id: Id | None = None
    type: Annotated[str, Meta(min_length=1, max_length=128, description="What the data is.")]
    data: JsonMap = msgspec.field(default_factory=dict)
    created_at: Millis = msgspec.field(default_factory=now_ms)


class Task(Record, kw_only=True):
    """Work for the agent to do later or repeatedly (tags 'queue', 'repeat')."""

    id: Id = msgspec.field(default_factory=new_id)
    name: Annotated[str, Meta(min_length=1, max_length=255)]
    description: str = ""
    room_id: Id | None = None
    world_id: Id | None = None
    entity_id: Id | None = None
    agent_id: Id | None = None
    tags: list[str] = msgspec.field(default_factory=list)
    metadata: JsonMap = msgspec.field(default_factory=dict)
    created_at: Millis = msgspec.field(default_factory=now_ms)
    updated_at: Millis = msgspec.field(default_factory=now_ms)


class Agent(Record, kw_only=True):
    """An agent as stored: its id, name and character document."""

    id: Id
    name: str
    username: str | None = None
    enabled: bool = True
    character: JsonMap = msgspec.field(default_factory=dict)
    created_at: Millis = msgspec.field(default_factory=now_ms)
    updated_at: Millis = msgspec.field(default_factory=now_ms)
