"""The SQL schema (SQLAlchemy 2 typed models); Alembic migrations create it.

Ids are text (any subject-safe id, UUIDs included) and times are
milliseconds since the epoch, so SQLite and Postgres store the same thing.
Every row an agent owns references ``agents.id`` and is keyed per agent
((id, agent_id); the cache by (key, agent_id)): two agents may use the same
id, and ``delete_agent`` finds every such table from the foreign keys
(``owned_by_agents``).
Vectors are float32 bytes: portable, compact, and read straight into numpy.
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.schema import Column, Table

ID = String(64)
Json = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    """Declarative base of every table."""

    type_annotation_map = {dict[str, object]: Json, list[str]: Json}  # noqa: RUF012 - SQLAlchemy's API


class AgentRow(Base):
    """One agent and its character; ``embedding_dim`` is fixed by the first vector written."""

    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    username: Mapped[str | None] = mapped_column(String(255))
    enabled: Mapped[bool] = mapped_column(default=True)
    character: Mapped[dict[str, object]]
    embedding_dim: Mapped[int | None]
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class MemoryRow(Base):
    """A memory of one agent; ``type`` is the elizaOS table name (messages, facts, ...).

    Keyed by (id, agent_id): two agents given the same message id keep one copy each.
    """

    __tablename__ = "memories"
    __table_args__ = (
        Index("ix_memories_agent_type_room_created", "agent_id", "type", "room_id", "created_at"),
        Index("ix_memories_world", "world_id"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    agent_id: Mapped[str] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True
    )
    entity_id: Mapped[str] = mapped_column(ID)
    room_id: Mapped[str] = mapped_column(ID)
    world_id: Mapped[str | None] = mapped_column(ID)
    content: Mapped[dict[str, object]]
    metadata_: Mapped[dict[str, object]] = mapped_column("metadata")
    unique: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[int] = mapped_column(BigInteger)


class EmbeddingRow(Base):
    """The vector of one memory of one agent, as little-endian float32 bytes."""

    __tablename__ = "embeddings"
    __table_args__ = (
        ForeignKeyConstraint(
            ["memory_id", "agent_id"],
            ["memories.id", "memories.agent_id"],
            name="fk_embeddings_memory",
            ondelete="CASCADE",
        ),
    )

    memory_id: Mapped[str] = mapped_column(ID, primary_key=True)
    agent_id: Mapped[str] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True
    )
    dim: Mapped[int]
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class EntityRow(Base):
    """An entity as one agent knows it."""

    __tablename__ = "entities"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    agent_id: Mapped[str] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True
    )
    names: Mapped[list[str]]
    metadata_: Mapped[dict[str, object]] = mapped_column("metadata")


class WorldRow(Base):
    """A server or workspace, as one agent knows it (two agents may use the same id)."""

    __tablename__ = "worlds"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    agent_id: Mapped[str] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str | None] = mapped_column(String(255))
    message_server_id: Mapped[str | None] = mapped_column(String(255))
    metadata_: Mapped[dict[str, object]] = mapped_column("metadata")


class RoomRow(Base):
    """A channel, DM or thread, as one agent knows it (two agents may use the same id)."""

    __tablename__ = "rooms"
    __table_args__ = (Index("ix_rooms_world", "world_id"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    agent_id: Mapped[str] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str | None] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(32))
    channel_id: Mapped[str | None] = mapped_column(String(255))
    message_server_id: Mapped[str | None] = mapped_column(String(255))
    world_id: Mapped[str | None] = mapped_column(ID)
    metadata_: Mapped[dict[str, object]] = mapped_column("metadata")


class ParticipantRow(Base):
    """An entity taking part in a room, and the agent's FOLLOWED/MUTED state there."""

    __tablename__ = "participants"
    __table_args__ = (
        UniqueConstraint("entity_id", "room_id", "agent_id"),
        ForeignKeyConstraint(
            ["room_id", "agent_id"],
            ["rooms.id", "rooms.agent_id"],
            name="fk_participants_room",
            ondelete="CASCADE",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    entity_id: Mapped[str] = mapped_column(ID)
    room_id: Mapped[str] = mapped_column(ID)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    room_state: Mapped[str | None] = mapped_column(String(16))


class RelationshipRow(Base):
    """A tagged link between two entities; one per (source, target, agent)."""

    __tablename__ = "relationships"
    __table_args__ = (UniqueConstraint("source_entity_id", "target_entity_id", "agent_id"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    source_entity_id: Mapped[str] = mapped_column(ID)
    target_entity_id: Mapped[str] = mapped_column(ID)
    agent_id: Mapped[str] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True
    )
    tags: Mapped[list[str]]
    metadata_: Mapped[dict[str, object]] = mapped_column("metadata")
    created_at: Mapped[int] = mapped_column(BigInteger)


class LogRow(Base):
    """An audit row (model calls, actions, run events) of one agent, keyed by (id, agent_id)."""

    __tablename__ = "logs"
    __table_args__ = (Index("ix_logs_agent_type_created", "agent_id", "type", "created_at"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    agent_id: Mapped[str] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True
    )
    entity_id: Mapped[str] = mapped_column(ID)
    room_id: Mapped[str | None] = mapped_column(ID)
    type: Mapped[str] = mapped_column(String(128))
    body: Mapped[dict[str, object]]
    created_at: Mapped[int] = mapped_column(BigInteger)


class ComponentRow(Base):
    """Typed data attached to an entity, as one agent knows it; keyed by (id, agent_id)."""

    __tablename__ = "components"
    __table_args__ = (Index("ix_components_agent_entity_type", "agent_id", "entity_id", "type"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    agent_id: Mapped[str] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True
    )
    entity_id: Mapped[str] = mapped_column(ID)
    room_id: Mapped[str | None] = mapped_column(ID)
    world_id: Mapped[str | None] = mapped_column(ID)
    source_entity_id: Mapped[str | None] = mapped_column(ID)
    type: Mapped[str] = mapped_column(String(128))
    data: Mapped[dict[str, object]]
    created_at: Mapped[int] = mapped_column(BigInteger)


class TaskRow(Base):
    """Work for an agent to do later or repeatedly; keyed by (id, agent_id).

    ``claimed_until`` (ms since the epoch): a process running the task holds it
    until then, so a task runs once however many processes host the agent.
    """

    __tablename__ = "tasks"
    __table_args__ = (Index("ix_tasks_agent_name", "agent_id", "name"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    agent_id: Mapped[str] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text)
    room_id: Mapped[str | None] = mapped_column(ID)
    world_id: Mapped[str | None] = mapped_column(ID)
    entity_id: Mapped[str | None] = mapped_column(ID)
    tags: Mapped[list[str]]
    metadata_: Mapped[dict[str, object]] = mapped_column("metadata")
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)
    claimed_until: Mapped[int | None] = mapped_column(BigInteger)


class CacheRow(Base):
    """A JSON value per agent and key, with an optional expiry."""

    __tablename__ = "cache"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    agent_id: Mapped[str] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True
    )
    value: Mapped[object] = mapped_column(Json)
    expires_at: Mapped[int | None] = mapped_column(BigInteger)


def owned_by_agents(metadata: MetaData) -> Iterator[tuple[Table, Column[object]]]:
    """Every table of ``metadata`` with a column referencing ``agents.id``, and that column.

    In the order rows can be deleted: a table that references another comes
    before it (vectors before their memories, participants before their rooms).
    """
    for table in reversed(metadata.sorted_tables):
        for key in table.foreign_keys:
            if key.column.table.name == "agents" and key.column.name == "id":
                yield table, key.parent
                break


def unowned_agent_columns(metadata: MetaData) -> list[str]:
    """The ``<table>.agent_id`` columns that do not reference ``agents.id``.

    Deleting an agent deletes the rows of every table ``owned_by_agents``
    finds: a table with an ``agent_id`` but no reference would keep a deleted
    agent's rows, so a test says this list is empty.
    """
    owned = {table.name for table, _ in owned_by_agents(metadata)}
    return sorted(
        f"{table.name}.agent_id"
        for table in metadata.sorted_tables
        if "agent_id" in table.c and table.name not in owned
    )
