"""The storage operations: what the agent runtime asks of its memory.

This Protocol is the contract of the memory service. ``SqlAdapter`` implements
it in-process; the memory service serves every operation on
``<ns>.memory.<operation>`` with request and reply messages derived from these
signatures (``contracts.memory``), and ``NatsMemoryClient`` calls them. So the
parameter and return types here are wire types: records, lists, plain values.

Every operation acts for one agent (the adapter's, or the ``agent_id`` of the
request). Names and parameters follow elizaOS's ``IDatabaseAdapter`` in
snake_case.
"""

from __future__ import annotations

from typing import Annotated, Any, Protocol

from msgspec import Meta

from contracts.content import Content
from contracts.message import Id
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

RecentCount = Annotated[
    int, Meta(ge=0, le=1000, description="How many recent messages to read (0 to 1000).")
]

BacklogCount = Annotated[
    int, Meta(ge=1, le=10_000, description="How many memories to return (1 to 10,000).")
]


class StorageOperations(Protocol):
    """Every storage operation, in the order the memory service lists them."""

    # -- agents ---------------------------------------------------------------

    async def create_agent(self, agent: Agent) -> bool:
        """Store ``agent``; False if one with its id exists."""
        ...

    async def get_agent(self, agent_id: str) -> Agent | None:
        """Return the agent, or None."""
        ...

    async def get_agents(self) -> list[Agent]:
        """Return every agent, by name."""
        ...

    async def update_agent(self, agent_id: str, agent: Agent) -> bool:
        """Replace the stored agent's fields; False if there is none."""
        ...

    async def delete_agent(self, agent_id: str) -> bool:
        """Delete the agent and everything it owns; False if there was none."""
        ...

    async def ensure_embedding_dimension(self, dimension: int) -> None:
        """Fix the agent's vector size, or raise ``BadRequest`` if another is fixed."""
        ...

    # -- memories -------------------------------------------------------------

    async def create_memory(self, memory: Memory, table_name: str, unique: bool = True) -> str:
        """Store ``memory`` in ``table_name``; a memory whose id exists is left as it is."""
        ...

    async def create_memories(
        self, memories: list[Memory], table_name: str, unique: bool = True
    ) -> list[str]:
        """Store many memories in one transaction; all or none (ids that exist are kept)."""
        ...

    async def get_memory_by_id(
        self, memory_id: str, *, include_embeddings: bool = False
    ) -> Memory | None:
        """Return the memory (with its vector if ``include_embeddings``), or None."""
        ...

    async def get_memories_by_ids(
        self,
        memory_ids: list[str],
        table_name: str | None = None,
        *,
        include_embeddings: bool = False,
    ) -> list[Memory]:
        """Return the memories that exist among ``memory_ids``, in the order asked.

        Vectors come back only with ``include_embeddings`` (so for every memory read).
        """
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
        include_embeddings: bool = False,
    ) -> list[Memory]:
        """Return the agent's matching memories, newest first."""
        ...

    async def get_memories_by_room_ids(
        self,
        *,
        table_name: str,
        room_ids: list[str],
        limit: int | None = None,
        include_embeddings: bool = False,
    ) -> list[Memory]:
        """Return the memories of several rooms, newest first."""
        ...

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
        ...

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
        ...

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
        ...

    async def set_embeddings(self, memory_ids: list[Id], vectors: list[bytes]) -> int:
        """Store the vectors of many memories at once; return how many were stored.

        ``vectors[i]`` (little-endian float32 bytes) belongs to ``memory_ids[i]``;
        ids unknown or of another agent are skipped. Raises ``BadRequest`` when
        the lists differ in length or a vector is empty or not float32, and
        ``DimensionMismatch`` (a ``BadRequest``) when a size differs from the
        agent's: then nothing is stored.
        """
        ...

    async def get_memories_without_embeddings(self, *, count: BacklogCount = 500) -> list[Memory]:
        """Return up to ``count`` of the agent's memories with text but no vector, newest first.

        What a stop or a crash left without a vector; a runtime queues them at start.
        """
        ...

    async def delete_memory(self, memory_id: str) -> None:
        """Delete one memory and its vector."""
        ...

    async def delete_all_memories(self, room_id: str, table_name: str) -> None:
        """Delete a room's memories of one table, with their vectors."""
        ...

    async def count_memories(
        self, room_id: str, unique: bool = False, table_name: str | None = None
    ) -> int:
        """Count a room's memories (of one table when given)."""
        ...

    # -- entities -------------------------------------------------------------

    async def create_entities(self, entities: list[Entity]) -> bool:
        """Store entities; False (and nothing stored) if any already exists."""
        ...

    async def get_entities_by_ids(self, entity_ids: list[str]) -> list[Entity]:
        """Return the entities that exist among ``entity_ids``."""
        ...

    async def get_entities_by_names(self, names: list[str]) -> list[Entity]:
        """Return the entities known under any of ``names`` (exact, case-insensitive)."""
        ...

    async def search_entities_by_name(self, query: str, limit: int = 10) -> list[Entity]:
        """Return the entities with a name containing ``query`` (case-insensitive)."""
        ...

    async def update_entity(self, entity: Entity) -> None:
        """Replace a stored entity's names and metadata, or raise ``NotFound``."""
        ...

    # -- components -----------------------------------------------------------

    async def create_component(self, component: Component) -> bool:
        """Store a component; False if one with its id exists."""
        ...

    async def get_component(
        self,
        entity_id: str,
        component_type: str,
        world_id: str | None = None,
        source_entity_id: str | None = None,
    ) -> Component | None:
        """Return the entity's component of ``component_type`` (in a world, from a source)."""
        ...

    async def get_components(
        self, entity_id: str, world_id: str | None = None, source_entity_id: str | None = None
    ) -> list[Component]:
        """Return every component of an entity, oldest first."""
        ...

    async def update_component(self, component: Component) -> None:
        """Replace a component's data, or raise ``NotFound``."""
        ...

    async def delete_component(self, component_id: str) -> None:
        """Delete one component."""
        ...

    # -- worlds ---------------------------------------------------------------

    async def create_world(self, world: World) -> str:
        """Store ``world`` and return its id."""
        ...

    async def get_world(self, world_id: str) -> World | None:
        """Return the world, or None."""
        ...

    async def get_all_worlds(self) -> list[World]:
        """Return the agent's worlds."""
        ...

    async def update_world(self, world: World) -> None:
        """Replace a stored world's name and metadata, or raise ``NotFound``."""
        ...

    async def remove_world(self, world_id: str) -> None:
        """Delete a world and its rooms."""
        ...

    # -- rooms ----------------------------------------------------------------

    async def create_rooms(self, rooms: list[Room]) -> list[str]:
        """Store rooms and return their ids."""
        ...

    async def get_rooms_by_ids(self, room_ids: list[str]) -> list[Room]:
        """Return the rooms that exist among ``room_ids``."""
        ...

    async def get_rooms_by_world(self, world_id: str) -> list[Room]:
        """Return a world's rooms."""
        ...

    async def update_room(self, room: Room) -> None:
        """Replace a stored room's fields, or raise ``NotFound``."""
        ...

    async def delete_room(self, room_id: str) -> None:
        """Delete a room, its participants and its memories."""
        ...

    async def get_rooms_for_participant(self, entity_id: str) -> list[str]:
        """Return the ids of the rooms an entity takes part in."""
        ...

    # -- participants ---------------------------------------------------------

    async def add_participants_room(self, entity_ids: list[str], room_id: str) -> bool:
        """Add entities to a room; those already in it are left as they are."""
        ...

    async def remove_participant(self, entity_id: str, room_id: str) -> bool:
        """Take an entity out of a room; False if it was not in it."""
        ...

    async def get_participants_for_room(self, room_id: str) -> list[str]:
        """Return the ids of the entities in a room, in joining order."""
        ...

    async def is_room_participant(self, room_id: str, entity_id: str) -> bool:
        """Say whether an entity takes part in a room."""
        ...

    async def get_participant_user_state(
        self, room_id: str, entity_id: str
    ) -> ParticipantState | None:
        """Return FOLLOWED, MUTED or None."""
        ...

    async def set_participant_user_state(
        self, room_id: str, entity_id: str, state: ParticipantState | None
    ) -> None:
        """Set FOLLOWED, MUTED or None, or raise ``NotFound`` if not a participant."""
        ...

    # -- relationships --------------------------------------------------------

    async def create_relationship(self, relationship: Relationship) -> bool:
        """Store a relationship; False if the pair is already linked for this agent."""
        ...

    async def update_relationship(self, relationship: Relationship) -> None:
        """Replace the tags and metadata of the link between the same two entities."""
        ...

    async def get_relationships(
        self, entity_id: str, tags: list[str] | None = None
    ) -> list[Relationship]:
        """Return the links from or to ``entity_id`` carrying every one of ``tags``."""
        ...

    # -- tasks ----------------------------------------------------------------

    async def create_task(self, task: Task) -> str:
        """Store a task and return its id."""
        ...

    async def get_task(self, task_id: str) -> Task | None:
        """Return the task, or None."""
        ...

    async def get_tasks(
        self,
        room_id: str | None = None,
        tags: list[str] | None = None,
        entity_id: str | None = None,
    ) -> list[Task]:
        """Return the tasks matching every filter given (all ``tags`` present), oldest first."""
        ...

    async def get_tasks_by_name(self, name: str) -> list[Task]:
        """Return the tasks called ``name``, oldest first."""
        ...

    async def update_task(self, task: Task) -> None:
        """Replace a task's fields (``updated_at`` is set now), or raise ``NotFound``."""
        ...

    async def claim_task(self, task_id: str, updated_at: int, claimed_until: int) -> bool:
        """Take the task for one run until ``claimed_until`` (ms since the epoch), atomically.

        True for one caller only: the task must still have ``updated_at`` (as
        read) and be held by nobody (no claim, or one that ended). ``update_task``
        and ``delete_task`` end the claim; False if the task is gone or held.
        """
        ...

    async def delete_task(self, task_id: str) -> None:
        """Delete one task."""
        ...

    # -- logs -----------------------------------------------------------------

    async def log(self, entry: Log) -> None:
        """Append an audit row."""
        ...

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
        ...

    async def delete_log(self, log_id: str) -> None:
        """Delete one audit row."""
        ...

    # -- cache ----------------------------------------------------------------

    async def get_cache(self, key: str) -> Any:
        """Return the cached JSON value, or None when absent or expired."""
        ...

    async def set_cache(self, key: str, value: Any, expires_at: int | None = None) -> bool:
        """Store a JSON value under ``key``, replacing any previous one."""
        ...

    async def delete_cache(self, key: str) -> bool:
        """Delete a cached value; False if there was none."""
        ...

    # -- turns ----------------------------------------------------------------

    async def begin_turn(
        self,
        message: Memory,
        connection: Connection,
        recent_count: RecentCount = 32,
        outcome_key: str | None = None,
        cache_keys: list[str] | None = None,
    ) -> TurnContext:
        """Set up and read what one inbound message's turn needs, in one transaction.

        Creates the sender entity (or adds new names and metadata to it), the
        world (id: ``message.world_id`` or the room id) and the room when
        missing, with the sender and the agent as participants; stores
        ``message`` in 'messages' unless its id exists; then returns the room,
        world, participants, entities, the ``recent_count`` newest messages
        (without vectors), the agent's state in the room, and the cache values
        under ``outcome_key`` and ``cache_keys``. Raises ``NotFound`` if the
        agent does not exist, ``DimensionMismatch`` for a vector of another size.
        """
        ...

    async def commit_turn(self, commit: TurnCommit) -> None:
        """Write what one turn produced in one transaction: all of it, or nothing.

        Raises ``DimensionMismatch`` (a ``BadRequest``) for a vector of another
        size than the agent's, ``Conflict`` for a reference to something missing.
        """
        ...
