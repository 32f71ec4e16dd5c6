"""The ``DatabaseAdapter`` port: what the agent runtime needs from storage.

One adapter instance speaks for one agent (as in elizaOS); ``for_agent``
gives a view for another agent over the same connection pool. The SQL
implementation serves embedded mode and the memory service alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from contracts.records import (
    Agent,
    Entity,
    Log,
    Memory,
    ParticipantState,
    Relationship,
    Room,
    World,
)


class DatabaseAdapter(Protocol):
    """Storage operations of the elizaOS adapter, in snake_case."""

    agent_id: str

    def for_agent(self, agent_id: str) -> DatabaseAdapter:
        """Return an adapter for ``agent_id`` sharing this one's connections."""
        ...

    async def init(self, *, migrate: bool = True) -> None:
        """Connect, and bring the schema up to date unless ``migrate`` is False."""

    async def close(self) -> None:
        """Release every connection."""

    # agents
    async def create_agent(self, agent: Agent) -> bool:
        """Store ``agent``; False if one with its id exists."""
        ...

    async def get_agent(self, agent_id: str) -> Agent | None:
        """Return the agent, or None."""

    async def get_agents(self) -> list[Agent]:
        """Return every agent."""
        ...

    async def update_agent(self, agent_id: str, agent: Agent) -> bool:
        """Replace the stored agent; False if there is none."""
        ...

    async def delete_agent(self, agent_id: str) -> bool:
        """Delete the agent and everything it owns; False if there was none."""
        ...

    async def ensure_embedding_dimension(self, dimension: int) -> None:
        """Fix this agent's vector size, or raise if another size is already fixed."""

    # memories
    async def create_memory(self, memory: Memory, table_name: str, unique: bool = True) -> str:
        """Store ``memory`` in ``table_name`` and return its id (the existing one if stored)."""
        ...

    async def create_memories(
        self, memories: Sequence[Memory], table_name: str, *, unique: bool = True
    ) -> list[str]:
        """Store many memories at once (one round trip); ids that exist are left as they are."""
        ...

    async def get_memory_by_id(self, memory_id: str) -> Memory | None:
        """Return the memory, or None."""

    async def get_memories_by_ids(
        self, memory_ids: Sequence[str], table_name: str | None = None
    ) -> list[Memory]:
        """Return the memories that exist among ``memory_ids``."""
        ...

    async def get_memories(
        self,
        *,
        table_name: str,
        room_id: str | None = None,
        entity_id: str | None = None,
        world_id: str | None = None,
        count: int | None = None,
        offset: int = 0,
        unique: bool = False,
        start: int | None = None,
        end: int | None = None,
    ) -> list[Memory]:
        """Return matching memories, newest first."""
        ...

    async def get_memories_by_room_ids(
        self, *, table_name: str, room_ids: Sequence[str], limit: int | None = None
    ) -> list[Memory]:
        """Return the memories of several rooms, newest first."""
        ...

    async def search_memories(
        self,
        *,
        table_name: str,
        embedding: Sequence[float],
        match_threshold: float = 0.0,
        count: int = 10,
        unique: bool = False,
        room_id: str | None = None,
        world_id: str | None = None,
        entity_id: str | None = None,
    ) -> list[Memory]:
        """Return the ``count`` memories most similar to ``embedding`` (cosine), best first."""
        ...

    async def update_memory(self, memory_id: str, **changes: Any) -> bool:
        """Change some fields (content, metadata, embedding, ...); False if there is none."""
        ...

    async def delete_memory(self, memory_id: str) -> None:
        """Delete one memory (and its vector)."""

    async def delete_all_memories(self, room_id: str, table_name: str) -> None:
        """Delete a room's memories of one table."""

    async def count_memories(
        self, room_id: str, *, unique: bool = False, table_name: str | None = None
    ) -> int:
        """Count a room's memories."""
        ...

    # entities
    async def create_entities(self, entities: Sequence[Entity]) -> bool:
        """Store entities; False if any already exists (none are stored then)."""
        ...

    async def get_entities_by_ids(self, entity_ids: Sequence[str]) -> list[Entity]:
        """Return the entities that exist among ``entity_ids``."""
        ...

    async def update_entity(self, entity: Entity) -> None:
        """Replace a stored entity's names and metadata."""

    # worlds and rooms
    async def create_world(self, world: World) -> str:
        """Store ``world`` and return its id."""
        ...

    async def get_world(self, world_id: str) -> World | None:
        """Return the world, or None."""

    async def update_world(self, world: World) -> None:
        """Replace a stored world's name and metadata."""

    async def create_rooms(self, rooms: Sequence[Room]) -> list[str]:
        """Store rooms and return their ids."""
        ...

    async def get_rooms_by_ids(self, room_ids: Sequence[str]) -> list[Room]:
        """Return the rooms that exist among ``room_ids``."""
        ...

    async def get_rooms_by_world(self, world_id: str) -> list[Room]:
        """Return a world's rooms."""
        ...

    # participants
    async def add_participants_room(self, entity_ids: Sequence[str], room_id: str) -> bool:
        """Add entities to a room (those already in it are left as they are)."""
        ...

    async def get_participants_for_room(self, room_id: str) -> list[str]:
        """Return the ids of the entities in a room."""
        ...

    async def get_participant_user_state(
        self, room_id: str, entity_id: str
    ) -> ParticipantState | None:
        """Return FOLLOWED, MUTED or None."""

    async def set_participant_user_state(
        self, room_id: str, entity_id: str, state: ParticipantState | None
    ) -> None:
        """Set FOLLOWED, MUTED or None."""

    # relationships
    async def create_relationship(self, relationship: Relationship) -> bool:
        """Store a relationship; False if the pair is already linked."""
        ...

    async def update_relationship(self, relationship: Relationship) -> None:
        """Replace the tags and metadata of the link between the same two entities."""

    async def get_relationships(
        self, entity_id: str, tags: Sequence[str] | None = None
    ) -> list[Relationship]:
        """Return the links from or to ``entity_id`` carrying every one of ``tags``."""
        ...

    # logs
    async def log(self, entry: Log) -> None:
        """Append an audit row."""

    async def get_logs(
        self,
        *,
        entity_id: str | None = None,
        room_id: str | None = None,
        type: str | None = None,
        count: int = 100,
        offset: int = 0,
    ) -> list[Log]:
        """Return matching audit rows, newest first."""
        ...

    async def delete_log(self, log_id: str) -> None:
        """Delete one audit row."""

    # cache
    async def get_cache(self, key: str) -> Any:
        """Return the cached JSON value, or None when absent or expired."""

    async def set_cache(self, key: str, value: Any, *, expires_at: int | None = None) -> bool:
        """Store a JSON value, replacing any previous one."""
        ...

    async def delete_cache(self, key: str) -> bool:
        """Delete a cached value; False if there was none."""
        ...
