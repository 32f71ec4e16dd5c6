"""``RemoteStorageOperations``: every storage operation, as a memory-service request.

Generated from ``contracts.storage.StorageOperations`` by ``python -m shared.storage.codegen``
(``make codegen``): do not edit it by hand.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, cast

from contracts.content import Content
from contracts.memory import OPERATIONS, MemoryOperation
from contracts.records import (
    Agent,
    Component,
    Entity,
    Log,
    Memory,
    ParticipantState,
    Relationship,
    Room,
    Task,
    World,
)
from contracts.turn import Connection, TurnCommit, TurnContext


class RemoteStorageOperations(ABC):
    """Every storage operation, as a request to the memory service."""

    @abstractmethod
    async def call(self, operation: MemoryOperation, arguments: Mapping[str, object]) -> object:
        """Send one operation with its arguments by name, and return its value."""

    async def create_agent(self, agent: Agent) -> bool:
        """Store ``agent``; False if one with its id exists."""
        return cast("bool", await self.call(OPERATIONS["create_agent"], {"agent": agent}))

    async def get_agent(self, agent_id: str) -> Agent | None:
        """Return the agent, or None."""
        return cast(
            "Agent | None", await self.call(OPERATIONS["get_agent"], {"agent_id": agent_id})
        )

    async def get_agents(self) -> list[Agent]:
        """Return every agent, by name."""
        return cast("list[Agent]", await self.call(OPERATIONS["get_agents"], {}))

    async def update_agent(self, agent_id: str, agent: Agent) -> bool:
        """Replace the stored agent's fields; False if there is none."""
        return cast(
            "bool",
            await self.call(OPERATIONS["update_agent"], {"agent_id": agent_id, "agent": agent}),
        )

    async def delete_agent(self, agent_id: str) -> bool:
        """Delete the agent and everything it owns; False if there was none."""
        return cast("bool", await self.call(OPERATIONS["delete_agent"], {"agent_id": agent_id}))

    async def ensure_embedding_dimension(self, dimension: int) -> None:
        """Fix the agent's vector size, or raise ``BadRequest`` if another is fixed."""
        await self.call(OPERATIONS["ensure_embedding_dimension"], {"dimension": dimension})

    async def create_memory(self, memory: Memory, table_name: str, unique: bool = True) -> str:
        """Store ``memory`` in ``table_name``; a memory whose id exists is left as it is."""
        return cast(
            "str",
            await self.call(
                OPERATIONS["create_memory"],
                {"memory": memory, "table_name": table_name, "unique": unique},
            ),
        )

    async def create_memories(
        self, memories: list[Memory], table_name: str, unique: bool = True
    ) -> list[str]:
        """Store many memories in one transaction; all or none (ids that exist are kept)."""
        return cast(
            "list[str]",
            await self.call(
                OPERATIONS["create_memories"],
                {"memories": memories, "table_name": table_name, "unique": unique},
            ),
        )

    async def get_memory_by_id(
        self, memory_id: str, *, include_embeddings: bool = False
    ) -> Memory | None:
        """Return the memory (with its vector if ``include_embeddings``), or None."""
        return cast(
            "Memory | None",
            await self.call(
                OPERATIONS["get_memory_by_id"],
                {"memory_id": memory_id, "include_embeddings": include_embeddings},
            ),
        )

    async def get_memories_by_ids(
        self,
        memory_ids: list[str],
        table_name: str | None = None,
        *,
        include_embeddings: bool = False,
    ) -> list[Memory]:
        """Return the memories that exist among ``memory_ids``, in the order asked."""
        return cast(
            "list[Memory]",
            await self.call(
                OPERATIONS["get_memories_by_ids"],
                {
                    "memory_ids": memory_ids,
                    "table_name": table_name,
                    "include_embeddings": include_embeddings,
                },
            ),
        )

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
        include_embeddings: bool = False,
    ) -> list[Memory]:
        """Return the agent's matching memories, newest first."""
        return cast(
            "list[Memory]",
            await self.call(
                OPERATIONS["get_memories"],
                {
                    "table_name": table_name,
                    "room_id": room_id,
                    "entity_id": entity_id,
                    "world_id": world_id,
                    "count": count,
                    "offset": offset,
                    "unique": unique,
                    "start": start,
                    "end": end,
                    "include_embeddings": include_embeddings,
                },
            ),
        )

    async def get_memories_by_room_ids(
        self,
        *,
        table_name: str,
        room_ids: list[str],
        limit: int | None = None,
        include_embeddings: bool = False,
    ) -> list[Memory]:
        """Return the memories of several rooms, newest first."""
        return cast(
            "list[Memory]",
            await self.call(
                OPERATIONS["get_memories_by_room_ids"],
                {
                    "table_name": table_name,
                    "room_ids": room_ids,
                    "limit": limit,
                    "include_embeddings": include_embeddings,
                },
            ),
        )

    async def search_memories(
        self,
        *,
        table_name: str,
        embedding: list[float],
        match_threshold: float = 0.0,
        count: int = 10,
        unique: bool = False,
        room_id: str | None = None,
        world_id: str | None = None,
        entity_id: str | None = None,
        include_embeddings: bool = False,
    ) -> list[Memory]:
        """Return the ``count`` memories closest to ``embedding`` by exact cosine, best first."""
        return cast(
            "list[Memory]",
            await self.call(
                OPERATIONS["search_memories"],
                {
                    "table_name": table_name,
                    "embedding": embedding,
                    "match_threshold": match_threshold,
                    "count": count,
                    "unique": unique,
                    "room_id": room_id,
                    "world_id": world_id,
                    "entity_id": entity_id,
                    "include_embeddings": include_embeddings,
                },
            ),
        )

    async def search_memories_by_text(
        self,
        *,
        table_name: str,
        query: str,
        count: int = 10,
        room_id: str | None = None,
        include_embeddings: bool = False,
    ) -> list[Memory]:
        """Return memories whose text contains ``query`` (case-insensitive), newest first."""
        return cast(
            "list[Memory]",
            await self.call(
                OPERATIONS["search_memories_by_text"],
                {
                    "table_name": table_name,
                    "query": query,
                    "count": count,
                    "room_id": room_id,
                    "include_embeddings": include_embeddings,
                },
            ),
        )

    async def update_memory(
        self,
        memory_id: str,
        *,
        content: Content | None = None,
        metadata: dict[str, Any] | None = None,
        embedding: list[float] | None = None,
        unique: bool | None = None,
    ) -> bool:
        """Change the given fields (metadata is merged); False if there is no such memory."""
        return cast(
            "bool",
            await self.call(
                OPERATIONS["update_memory"],
                {
                    "memory_id": memory_id,
                    "content": content,
                    "metadata": metadata,
                    "embedding": embedding,
                    "unique": unique,
                },
            ),
        )

    async def set_embeddings(self, memory_ids: list[str], vectors: list[bytes]) -> int:
        """Store the vectors of many memories at once; return how many were stored."""
        return cast(
            "int",
            await self.call(
                OPERATIONS["set_embeddings"], {"memory_ids": memory_ids, "vectors": vectors}
            ),
        )

    async def get_memories_without_embeddings(self, *, count: int = 500) -> list[Memory]:
        """Return up to ``count`` of the agent's memories with text but no vector, newest first."""
        return cast(
            "list[Memory]",
            await self.call(OPERATIONS["get_memories_without_embeddings"], {"count": count}),
        )

    async def delete_memory(self, memory_id: str) -> None:
        """Delete one memory and its vector."""
        await self.call(OPERATIONS["delete_memory"], {"memory_id": memory_id})

    async def delete_all_memories(self, room_id: str, table_name: str) -> None:
        """Delete a room's memories of one table, with their vectors."""
        await self.call(
            OPERATIONS["delete_all_memories"], {"room_id": room_id, "table_name": table_name}
        )

    async def count_memories(
        self, room_id: str, unique: bool = False, table_name: str | None = None
    ) -> int:
        """Count a room's memories (of one table when given)."""
        return cast(
            "int",
            await self.call(
                OPERATIONS["count_memories"],
                {"room_id": room_id, "unique": unique, "table_name": table_name},
            ),
        )

    async def create_entities(self, entities: list[Entity]) -> bool:
        """Store entities; False (and nothing stored) if any already exists."""
        return cast("bool", await self.call(OPERATIONS["create_entities"], {"entities": entities}))

    async def get_entities_by_ids(self, entity_ids: list[str]) -> list[Entity]:
        """Return the entities that exist among ``entity_ids``."""
        return cast(
            "list[Entity]",
            await self.call(OPERATIONS["get_entities_by_ids"], {"entity_ids": entity_ids}),
        )

    async def get_entities_by_names(self, names: list[str]) -> list[Entity]:
        """Return the entities known under any of ``names`` (exact, case-insensitive)."""
        return cast(
            "list[Entity]", await self.call(OPERATIONS["get_entities_by_names"], {"names": names})
        )

    async def search_entities_by_name(self, query: str, limit: int = 10) -> list[Entity]:
        """Return the entities with a name containing ``query`` (case-insensitive)."""
        return cast(
            "list[Entity]",
            await self.call(
                OPERATIONS["search_entities_by_name"], {"query": query, "limit": limit}
            ),
        )

    async def update_entity(self, entity: Entity) -> None:
        """Replace a stored entity's names and metadata, or raise ``NotFound``."""
        await self.call(OPERATIONS["update_entity"], {"entity": entity})

    async def create_component(self, component: Component) -> bool:
        """Store a component; False if one with its id exists."""
        return cast(
            "bool", await self.call(OPERATIONS["create_component"], {"component": component})
        )

    async def get_component(
        self,
        entity_id: str,
        component_type: str,
        world_id: str | None = None,
        source_entity_id: str | None = None,
    ) -> Component | None:
        """Return the entity's component of ``component_type`` (in a world, from a source)."""
        return cast(
            "Component | None",
            await self.call(
                OPERATIONS["get_component"],
                {
                    "entity_id": entity_id,
                    "component_type": component_type,
                    "world_id": world_id,
                    "source_entity_id": source_entity_id,
                },
            ),
        )

    async def get_components(
        self, entity_id: str, world_id: str | None = None, source_entity_id: str | None = None
    ) -> list[Component]:
        """Return every component of an entity, oldest first."""
        return cast(
            "list[Component]",
            await self.call(
                OPERATIONS["get_components"],
                {
                    "entity_id": entity_id,
                    "world_id": world_id,
                    "source_entity_id": source_entity_id,
                },
            ),
        )

    async def update_component(self, component: Component) -> None:
        """Replace a component's data, or raise ``NotFound``."""
        await self.call(OPERATIONS["update_component"], {"component": component})

    async def delete_component(self, component_id: str) -> None:
        """Delete one component."""
        await self.call(OPERATIONS["delete_component"], {"component_id": component_id})

    async def create_world(self, world: World) -> str:
        """Store ``world`` and return its id."""
        return cast("str", await self.call(OPERATIONS["create_world"], {"world": world}))

    async def get_world(self, world_id: str) -> World | None:
        """Return the world, or None."""
        return cast(
            "World | None", await self.call(OPERATIONS["get_world"], {"world_id": world_id})
        )

    async def get_all_worlds(self) -> list[World]:
        """Return the agent's worlds."""
        return cast("list[World]", await self.call(OPERATIONS["get_all_worlds"], {}))

    async def update_world(self, world: World) -> None:
        """Replace a stored world's name and metadata, or raise ``NotFound``."""
        await self.call(OPERATIONS["update_world"], {"world": world})

    async def remove_world(self, world_id: str) -> None:
        """Delete a world and its rooms."""
        await self.call(OPERATIONS["remove_world"], {"world_id": world_id})

    async def create_rooms(self, rooms: list[Room]) -> list[str]:
        """Store rooms and return their ids."""
        return cast("list[str]", await self.call(OPERATIONS["create_rooms"], {"rooms": rooms}))

    async def get_rooms_by_ids(self, room_ids: list[str]) -> list[Room]:
        """Return the rooms that exist among ``room_ids``."""
        return cast(
            "list[Room]", await self.call(OPERATIONS["get_rooms_by_ids"], {"room_ids": room_ids})
        )

    async def get_rooms_by_world(self, world_id: str) -> list[Room]:
        """Return a world's rooms."""
        return cast(
            "list[Room]", await self.call(OPERATIONS["get_rooms_by_world"], {"world_id": world_id})
        )

    async def update_room(self, room: Room) -> None:
        """Replace a stored room's fields, or raise ``NotFound``."""
        await self.call(OPERATIONS["update_room"], {"room": room})

    async def delete_room(self, room_id: str) -> None:
        """Delete a room, its participants and its memories."""
        await self.call(OPERATIONS["delete_room"], {"room_id": room_id})

    async def get_rooms_for_participant(self, entity_id: str) -> list[str]:
        """Return the ids of the rooms an entity takes part in."""
        return cast(
            "list[str]",
            await self.call(OPERATIONS["get_rooms_for_participant"], {"entity_id": entity_id}),
        )

    async def add_participants_room(self, entity_ids: list[str], room_id: str) -> bool:
        """Add entities to a room; those already in it are left as they are."""
        return cast(
            "bool",
            await self.call(
                OPERATIONS["add_participants_room"], {"entity_ids": entity_ids, "room_id": room_id}
            ),
        )

    async def remove_participant(self, entity_id: str, room_id: str) -> bool:
        """Take an entity out of a room; False if it was not in it."""
        return cast(
            "bool",
            await self.call(
                OPERATIONS["remove_participant"], {"entity_id": entity_id, "room_id": room_id}
            ),
        )

    async def get_participants_for_room(self, room_id: str) -> list[str]:
        """Return the ids of the entities in a room, in joining order."""
        return cast(
            "list[str]",
            await self.call(OPERATIONS["get_participants_for_room"], {"room_id": room_id}),
        )

    async def is_room_participant(self, room_id: str, entity_id: str) -> bool:
        """Say whether an entity takes part in a room."""
        return cast(
            "bool",
            await self.call(
                OPERATIONS["is_room_participant"], {"room_id": room_id, "entity_id": entity_id}
            ),
        )

    async def get_participant_user_state(
        self, room_id: str, entity_id: str
    ) -> ParticipantState | None:
        """Return FOLLOWED, MUTED or None."""
        return cast(
            "ParticipantState | None",
            await self.call(
                OPERATIONS["get_participant_user_state"],
                {"room_id": room_id, "entity_id": entity_id},
            ),
        )

    async def set_participant_user_state(
        self, room_id: str, entity_id: str, state: ParticipantState | None
    ) -> None:
        """Set FOLLOWED, MUTED or None, or raise ``NotFound`` if not a participant."""
        await self.call(
            OPERATIONS["set_participant_user_state"],
            {"room_id": room_id, "entity_id": entity_id, "state": state},
        )

    async def create_relationship(self, relationship: Relationship) -> bool:
        """Store a relationship; False if the pair is already linked for this agent."""
        return cast(
            "bool",
            await self.call(OPERATIONS["create_relationship"], {"relationship": relationship}),
        )

    async def update_relationship(self, relationship: Relationship) -> None:
        """Replace the tags and metadata of the link between the same two entities."""
        await self.call(OPERATIONS["update_relationship"], {"relationship": relationship})

    async def get_relationships(
        self, entity_id: str, tags: list[str] | None = None
    ) -> list[Relationship]:
        """Return the links from or to ``entity_id`` carrying every one of ``tags``."""
        return cast(
            "list[Relationship]",
            await self.call(
                OPERATIONS["get_relationships"], {"entity_id": entity_id, "tags": tags}
            ),
        )

    async def create_task(self, task: Task) -> str:
        """Store a task and return its id."""
        return cast("str", await self.call(OPERATIONS["create_task"], {"task": task}))

    async def get_task(self, task_id: str) -> Task | None:
        """Return the task, or None."""
        return cast("Task | None", await self.call(OPERATIONS["get_task"], {"task_id": task_id}))

    async def get_tasks(
        self,
        room_id: str | None = None,
        tags: list[str] | None = None,
        entity_id: str | None = None,
    ) -> list[Task]:
        """Return the tasks matching every filter given (all ``tags`` present), oldest first."""
        return cast(
            "list[Task]",
            await self.call(
                OPERATIONS["get_tasks"], {"room_id": room_id, "tags": tags, "entity_id": entity_id}
            ),
        )

    async def get_tasks_by_name(self, name: str) -> list[Task]:
        """Return the tasks called ``name``, oldest first."""
        return cast("list[Task]", await self.call(OPERATIONS["get_tasks_by_name"], {"name": name}))

    async def update_task(self, task: Task) -> None:
        """Replace a task's fields (``updated_at`` is set now), or raise ``NotFound``."""
        await self.call(OPERATIONS["update_task"], {"task": task})

    async def claim_task(self, task_id: str, updated_at: int, claimed_until: int) -> bool:
        """Take the task for one run until ``claimed_until`` (ms since the epoch), atomically."""
        return cast(
            "bool",
            await self.call(
                OPERATIONS["claim_task"],
                {"task_id": task_id, "updated_at": updated_at, "claimed_until": claimed_until},
            ),
        )

    async def delete_task(self, task_id: str) -> None:
        """Delete one task."""
        await self.call(OPERATIONS["delete_task"], {"task_id": task_id})

    async def log(self, entry: Log) -> None:
        """Append an audit row."""
        await self.call(OPERATIONS["log"], {"entry": entry})

    async def get_logs(
        self,
        *,
        entity_id: str | None = None,
        room_id: str | None = None,
        log_type: str | None = None,
        count: int = 100,
        offset: int = 0,
    ) -> list[Log]:
        """Return matching audit rows, newest first."""
        return cast(
            "list[Log]",
            await self.call(
                OPERATIONS["get_logs"],
                {
                    "entity_id": entity_id,
                    "room_id": room_id,
                    "log_type": log_type,
                    "count": count,
                    "offset": offset,
                },
            ),
        )

    async def delete_log(self, log_id: str) -> None:
        """Delete one audit row."""
        await self.call(OPERATIONS["delete_log"], {"log_id": log_id})

    async def get_cache(self, key: str) -> Any:
        """Return the cached JSON value, or None when absent or expired."""
        return await self.call(OPERATIONS["get_cache"], {"key": key})

    async def set_cache(self, key: str, value: Any, expires_at: int | None = None) -> bool:
        """Store a JSON value under ``key``, replacing any previous one."""
        return cast(
            "bool",
            await self.call(
                OPERATIONS["set_cache"], {"key": key, "value": value, "expires_at": expires_at}
            ),
        )

    async def delete_cache(self, key: str) -> bool:
        """Delete a cached value; False if there was none."""
        return cast("bool", await self.call(OPERATIONS["delete_cache"], {"key": key}))

    async def begin_turn(
        self,
        message: Memory,
        connection: Connection,
        recent_count: int = 32,
        outcome_key: str | None = None,
        cache_keys: list[str] | None = None,
    ) -> TurnContext:
        """Set up and read what one inbound message's turn needs, in one transaction."""
        return cast(
            "TurnContext",
            await self.call(
                OPERATIONS["begin_turn"],
                {
                    "message": message,
                    "connection": connection,
                    "recent_count": recent_count,
                    "outcome_key": outcome_key,
                    "cache_keys": cache_keys,
                },
            ),
        )

    async def commit_turn(self, commit: TurnCommit) -> None:
        """Write what one turn produced in one transaction: all of it, or nothing."""
        await self.call(OPERATIONS["commit_turn"], {"commit": commit})
