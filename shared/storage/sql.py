"""``SqlAdapter``: the ``DatabaseAdapter`` on SQLAlchemy 2 async (SQLite or Postgres).

One short transaction per call (``AsyncSession`` with ``expire_on_commit``
off); rows are turned into the ``contracts.records`` Structs at the edge.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Self, TypeVar

import msgspec
from sqlalchemy import delete, func, select, update
from sqlalchemy import text as sql_text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from contracts import Content
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
    now_ms,
)
from shared.database import create_engine
from shared.errors import Conflict, NotFound
from shared.storage.migrate import upgrade as upgrade_schema
from shared.storage.tables import (
    AgentRow,
    Base,
    CacheRow,
    ComponentRow,
    EmbeddingRow,
    EntityRow,
    LogRow,
    MemoryRow,
    ParticipantRow,
    RelationshipRow,
    RoomRow,
    TaskRow,
    WorldRow,
)
from shared.storage.vectors import check_dimension, from_bytes, to_bytes, top_k


class SqlAdapter:
    """Storage for one agent on a SQL database, shared pool across agents."""

    def __init__(
        self,
        engine: AsyncEngine,
        agent_id: str,
        *,
        sessions: async_sessionmaker[AsyncSession] | None = None,
    ) -> None:
        self.engine = engine
        self.agent_id = agent_id
        self._sessions = sessions or async_sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def from_url(cls, url: str, agent_id: str) -> Self:
        """Return an adapter on a new engine for ``url`` (``DATABASE_URL``)."""
        return cls(create_engine(url), agent_id)

    def for_agent(self, agent_id: str) -> SqlAdapter:
        """Return an adapter for ``agent_id`` over the same engine."""
        return SqlAdapter(self.engine, agent_id, sessions=self._sessions)

    async def init(self, *, migrate: bool = True) -> None:
        """Bring the schema up to date (unless ``migrate`` is False)."""
        if migrate:
            await upgrade_schema(self.engine)

    async def ping(self) -> float:
        """Run ``SELECT 1``; return how long the database took, in milliseconds."""
        started = time.perf_counter()
        async with self._sessions() as session:
            await session.execute(sql_text("SELECT 1"))
        return (time.perf_counter() - started) * 1000

    async def close(self) -> None:
        """Dispose of the engine's connections."""
        await self.engine.dispose()

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncSession]:
        """One transaction; a broken constraint becomes ``Conflict`` (never SQL text)."""
        try:
            async with self._sessions() as session, session.begin():
                yield session
        except IntegrityError as exc:
            raise Conflict(
                "the change conflicts with stored data: a duplicate id, or a reference "
                "to an agent, room or memory that does not exist"
            ) from exc

    # -- agents ---------------------------------------------------------------

    async def create_agent(self, agent: Agent) -> bool:
        """Store ``agent``; False if one with its id exists."""
        try:
            async with self._tx() as s:
                s.add(_row(AgentRow, agent))
        except Conflict:
            return False
        return True

    async def get_agent(self, agent_id: str) -> Agent | None:
        """Return the agent, or None."""
        async with self._tx() as s:
            row = await s.get(AgentRow, agent_id)
            return _record(Agent, row) if row else None

    async def get_agents(self) -> list[Agent]:
        """Return every agent, by name."""
        async with self._tx() as s:
            rows = await s.scalars(select(AgentRow).order_by(AgentRow.name))
            return [_record(Agent, r) for r in rows]

    async def update_agent(self, agent_id: str, agent: Agent) -> bool:
        """Replace the stored agent's fields; False if there is none."""
        async with self._tx() as s:
            done = await s.execute(
                update(AgentRow)
                .where(AgentRow.id == agent_id)
                .values(
                    name=agent.name,
                    username=agent.username,
                    enabled=agent.enabled,
                    character=agent.character,
                    updated_at=now_ms(),
                )
            )
            return bool(done.rowcount)  # type: ignore[attr-defined]

    async def delete_agent(self, agent_id: str) -> bool:
        """Delete the agent and everything it owns; False if there was none."""
        async with self._tx() as s:
            memory_ids = select(MemoryRow.id).where(MemoryRow.agent_id == agent_id)
            await s.execute(delete(EmbeddingRow).where(EmbeddingRow.memory_id.in_(memory_ids)))
            for table in (
                MemoryRow,
                ParticipantRow,
                RoomRow,
                WorldRow,
                EntityRow,
                CacheRow,
                RelationshipRow,
                LogRow,
                ComponentRow,
                TaskRow,
            ):
                await s.execute(delete(table).where(table.agent_id == agent_id))
            done = await s.execute(delete(AgentRow).where(AgentRow.id == agent_id))
            return bool(done.rowcount)  # type: ignore[attr-defined]

    async def ensure_embedding_dimension(self, dimension: int) -> None:
        """Fix this agent's vector size, or raise ``DimensionMismatch`` if another is fixed."""
        async with self._tx() as s:
            await self._fix_dimension(s, [0.0] * dimension)

    async def _fix_dimension(self, s: AsyncSession, vector: Sequence[float]) -> None:
        agent = await s.get(AgentRow, self.agent_id, with_for_update=True)
        if agent is None:
            raise NotFound(f"agent {self.agent_id} does not exist; create it first")
        agent.embedding_dim = check_dimension(agent.embedding_dim, vector)

    # -- memories -------------------------------------------------------------

    async def create_memory(self, memory: Memory, table_name: str, unique: bool = True) -> str:
        """Store ``memory`` in ``table_name``; a memory whose id exists is left as it is."""
        await self.create_memories([memory], table_name, unique=unique)
        return memory.id

    async def create_memories(
        self, memories: Sequence[Memory], table_name: str, unique: bool = True
    ) -> list[str]:
        """Store many memories in one transaction; ids that exist are left as they are.

        Every vector must have the agent's dimension: one that does not fails
        the whole batch with ``DimensionMismatch`` and nothing is stored.
        """
        async with self._tx() as s:
            existing = set(
                await s.scalars(
                    select(MemoryRow.id).where(MemoryRow.id.in_([m.id for m in memories]))
                )
            )
            fresh = [m for m in {m.id: m for m in memories}.values() if m.id not in existing]
            for vector in {len(m.embedding): m.embedding for m in fresh if m.embedding}.values():
                await self._fix_dimension(s, vector)
            s.add_all(
                _row(
                    MemoryRow,
                    m,
                    type=table_name,
                    agent_id=m.agent_id or self.agent_id,
                    unique=m.unique and unique,
                )
                for m in fresh
            )
            await s.flush()
            s.add_all(_embedding_row(m.id, m.embedding) for m in fresh if m.embedding is not None)
        return [m.id for m in memories]

    async def get_memory_by_id(self, memory_id: str) -> Memory | None:
        """Return the memory with its embedding, or None."""
        found = await self.get_memories_by_ids([memory_id])
        return found[0] if found else None

    async def get_memories_by_ids(
        self, memory_ids: Sequence[str], table_name: str | None = None
    ) -> list[Memory]:
        """Return the memories that exist among ``memory_ids``, in the order asked."""
        query = select(MemoryRow).where(MemoryRow.id.in_(memory_ids))
        if table_name is not None:
            query = query.where(MemoryRow.type == table_name)
        found = {m.id: m for m in await self._memories(query)}
        return [found[i] for i in memory_ids if i in found]

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
        """Return this agent's matching memories, newest first."""
        query = self._memory_filter(
            table_name, room_id=room_id, entity_id=entity_id, world_id=world_id, unique=unique
        )
        if start is not None:
            query = query.where(MemoryRow.created_at >= start)
        if end is not None:
            query = query.where(MemoryRow.created_at <= end)
        query = query.order_by(MemoryRow.created_at.desc(), MemoryRow.id).offset(offset)
        if count is not None:
            query = query.limit(count)
        return await self._memories(query)

    async def get_memories_by_room_ids(
        self, *, table_name: str, room_ids: Sequence[str], limit: int | None = None
    ) -> list[Memory]:
        """Return the memories of several rooms, newest first."""
        query = (
            self._memory_filter(table_name)
            .where(MemoryRow.room_id.in_(room_ids))
            .order_by(MemoryRow.created_at.desc(), MemoryRow.id)
        )
        if limit is not None:
            query = query.limit(limit)
        return await self._memories(query)

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
        """Return the ``count`` memories closest to ``embedding`` by exact cosine, best first."""
        async with self._tx() as s:
            agent = await s.get(AgentRow, self.agent_id)
            check_dimension(agent.embedding_dim if agent else None, embedding)
            query = (
                self._memory_filter(
                    table_name,
                    room_id=room_id,
                    entity_id=entity_id,
                    world_id=world_id,
                    unique=unique,
                )
                .join(EmbeddingRow, EmbeddingRow.memory_id == MemoryRow.id)
                .with_only_columns(MemoryRow.id, EmbeddingRow.vector)
                .order_by(MemoryRow.id)
            )
            rows = (await s.execute(query)).all()
        best = top_k(embedding, [r.vector for r in rows], count=count, threshold=match_threshold)
        memories = await self.get_memories_by_ids([rows[i].id for i, _ in best])
        return [
            msgspec.structs.replace(m, similarity=score)
            for m, (_, score) in zip(memories, best, strict=True)
        ]

    async def update_memory(
        self,
        memory_id: str,
        *,
        content: Content | None = None,
        metadata: dict[str, Any] | None = None,
        embedding: Sequence[float] | None = None,
        unique: bool | None = None,
    ) -> bool:
        """Change the given fields (metadata is merged); False if there is no such memory."""
        async with self._tx() as s:
            row = await s.get(MemoryRow, memory_id)
            if row is None or row.agent_id != self.agent_id:
                return False
            if content is not None:
                row.content = msgspec.to_builtins(content)
            if metadata is not None:
                row.metadata_ = {**row.metadata_, **metadata}
            if unique is not None:
                row.unique = unique
            if embedding is not None:
                await self._fix_dimension(s, embedding)
                await s.merge(_embedding_row(memory_id, embedding))
        return True

    async def search_memories_by_text(
        self, *, table_name: str, query: str, count: int = 10, room_id: str | None = None
    ) -> list[Memory]:
        """Return memories whose text contains ``query`` (case-insensitive), newest first."""
        text = func.lower(MemoryRow.content["text"].as_string())
        found = (
            self._memory_filter(table_name, room_id=room_id)
            .where(text.contains(query.lower(), autoescape=True))
            .order_by(MemoryRow.created_at.desc(), MemoryRow.id)
            .limit(count)
        )
        return await self._memories(found)

    async def delete_memory(self, memory_id: str) -> None:
        """Delete one memory and its vector."""
        async with self._tx() as s:
            await s.execute(delete(EmbeddingRow).where(EmbeddingRow.memory_id == memory_id))
            await s.execute(
                delete(MemoryRow).where(
                    MemoryRow.id == memory_id, MemoryRow.agent_id == self.agent_id
                )
            )

    async def delete_all_memories(self, room_id: str, table_name: str) -> None:
        """Delete a room's memories of one table, with their vectors."""
        ids = self._memory_filter(table_name, room_id=room_id).with_only_columns(MemoryRow.id)
        async with self._tx() as s:
            await s.execute(delete(EmbeddingRow).where(EmbeddingRow.memory_id.in_(ids)))
            await s.execute(delete(MemoryRow).where(MemoryRow.id.in_(ids.scalar_subquery())))

    async def count_memories(
        self, room_id: str, unique: bool = False, table_name: str | None = None
    ) -> int:
        """Count a room's memories (of one table when given)."""
        query = (
            select(func.count())
            .select_from(MemoryRow)
            .where(MemoryRow.agent_id == self.agent_id, MemoryRow.room_id == room_id)
        )
        if table_name is not None:
            query = query.where(MemoryRow.type == table_name)
        if unique:
            query = query.where(MemoryRow.unique.is_(True))
        async with self._tx() as s:
            return int((await s.execute(query)).scalar_one())

    def _memory_filter(
        self,
        table_name: str,
        *,
        room_id: str | None = None,
        entity_id: str | None = None,
        world_id: str | None = None,
        unique: bool = False,
    ) -> Any:
        query = select(MemoryRow).where(
            MemoryRow.agent_id == self.agent_id, MemoryRow.type == table_name
        )
        if room_id is not None:
            query = query.where(MemoryRow.room_id == room_id)
        if entity_id is not None:
            query = query.where(MemoryRow.entity_id == entity_id)
        if world_id is not None:
            query = query.where(MemoryRow.world_id == world_id)
        if unique:
            query = query.where(MemoryRow.unique.is_(True))
        return query

    async def _memories(self, query: Any) -> list[Memory]:
        async with self._tx() as s:
            rows = list(await s.scalars(query))
            vectors = {
                e.memory_id: from_bytes(e.vector)
                for e in await s.scalars(
                    select(EmbeddingRow).where(EmbeddingRow.memory_id.in_([r.id for r in rows]))
                )
            }
        return [_record(Memory, r, embedding=vectors.get(r.id)) for r in rows]

    # -- entities -------------------------------------------------------------

    async def create_entities(self, entities: Sequence[Entity]) -> bool:
        """Store entities; False (and nothing stored) if any already exists."""
        try:
            async with self._tx() as s:
                s.add_all(_row(EntityRow, e, agent_id=self.agent_id) for e in entities)
        except Conflict:
            return False
        return True

    async def get_entities_by_ids(self, entity_ids: Sequence[str]) -> list[Entity]:
        """Return the entities that exist among ``entity_ids``."""
        async with self._tx() as s:
            rows = await s.scalars(
                select(EntityRow).where(
                    EntityRow.agent_id == self.agent_id, EntityRow.id.in_(entity_ids)
                )
            )
            return [_record(Entity, r) for r in rows]

    async def get_entities_by_names(self, names: Sequence[str]) -> list[Entity]:
        """Return the entities known under any of ``names`` (exact, case-insensitive)."""
        wanted = {n.casefold() for n in names}
        return [e for e in await self._entities() if wanted & {n.casefold() for n in e.names}]

    async def search_entities_by_name(self, query: str, limit: int = 10) -> list[Entity]:
        """Return the entities with a name containing ``query`` (case-insensitive)."""
        needle = query.casefold()
        found = [e for e in await self._entities() if any(needle in n.casefold() for n in e.names)]
        return found[:limit]

    async def _entities(self) -> list[Entity]:
        # Names live in a JSON list, which SQLite and Postgres search differently;
        # matching in Python keeps one behaviour (fine for thousands of entities).
        async with self._tx() as s:
            rows = await s.scalars(
                select(EntityRow).where(EntityRow.agent_id == self.agent_id).order_by(EntityRow.id)
            )
            return [_record(Entity, r) for r in rows]

    async def update_entity(self, entity: Entity) -> None:
        """Replace a stored entity's names and metadata, or raise ``NotFound``."""
        async with self._tx() as s:
            row = await s.get(EntityRow, (entity.id, self.agent_id))
            if row is None:
                raise NotFound(f"entity {entity.id} does not exist")
            row.names = list(entity.names)
            row.metadata_ = entity.metadata

    # -- components -----------------------------------------------------------

    async def create_component(self, component: Component) -> bool:
        """Store a component; False if one with its id exists."""
        try:
            async with self._tx() as s:
                s.add(_row(ComponentRow, component, agent_id=self.agent_id))
        except Conflict:
            return False
        return True

    async def get_component(
        self,
        entity_id: str,
        component_type: str,
        world_id: str | None = None,
        source_entity_id: str | None = None,
    ) -> Component | None:
        """Return the entity's component of ``component_type`` (in a world, from a source)."""
        found = await self._components(
            entity_id, world_id, source_entity_id, ComponentRow.type == component_type
        )
        return found[0] if found else None

    async def get_components(
        self, entity_id: str, world_id: str | None = None, source_entity_id: str | None = None
    ) -> list[Component]:
        """Return every component of an entity, oldest first."""
        return await self._components(entity_id, world_id, source_entity_id)

    async def _components(
        self,
        entity_id: str,
        world_id: str | None,
        source_entity_id: str | None,
        *conditions: Any,
    ) -> list[Component]:
        query = select(ComponentRow).where(
            ComponentRow.agent_id == self.agent_id, ComponentRow.entity_id == entity_id, *conditions
        )
        if world_id is not None:
            query = query.where(ComponentRow.world_id == world_id)
        if source_entity_id is not None:
            query = query.where(ComponentRow.source_entity_id == source_entity_id)
        async with self._tx() as s:
            rows = await s.scalars(query.order_by(ComponentRow.created_at, ComponentRow.id))
            return [_record(Component, r) for r in rows]

    async def update_component(self, component: Component) -> None:
        """Replace a component's data, or raise ``NotFound``."""
        async with self._tx() as s:
            row = await s.get(ComponentRow, component.id)
            if row is None or row.agent_id != self.agent_id:
                raise NotFound(f"component {component.id} does not exist")
            row.data = component.data

    async def delete_component(self, component_id: str) -> None:
        """Delete one component."""
        async with self._tx() as s:
            await s.execute(
                delete(ComponentRow).where(
                    ComponentRow.id == component_id, ComponentRow.agent_id == self.agent_id
                )
            )

    # -- worlds and rooms -----------------------------------------------------

    async def create_world(self, world: World) -> str:
        """Store ``world`` and return its id."""
        async with self._tx() as s:
            s.add(_row(WorldRow, world, agent_id=self.agent_id))
        return world.id

    async def get_world(self, world_id: str) -> World | None:
        """Return the world, or None."""
        async with self._tx() as s:
            row = await s.get(WorldRow, world_id)
            return _record(World, row) if row else None

    async def get_all_worlds(self) -> list[World]:
        """Return the agent's worlds."""
        async with self._tx() as s:
            rows = await s.scalars(
                select(WorldRow).where(WorldRow.agent_id == self.agent_id).order_by(WorldRow.id)
            )
            return [_record(World, r) for r in rows]

    async def update_world(self, world: World) -> None:
        """Replace a stored world's name and metadata, or raise ``NotFound``."""
        async with self._tx() as s:
            row = await s.get(WorldRow, world.id)
            if row is None:
                raise NotFound(f"world {world.id} does not exist")
            row.name = world.name
            row.message_server_id = world.message_server_id
            row.metadata_ = world.metadata

    async def remove_world(self, world_id: str) -> None:
        """Delete a world and its rooms (with their participants and memories)."""
        rooms = select(RoomRow.id).where(RoomRow.world_id == world_id)
        async with self._tx() as s:
            await self._delete_rooms(s, rooms)
            await s.execute(
                delete(WorldRow).where(WorldRow.id == world_id, WorldRow.agent_id == self.agent_id)
            )

    async def create_rooms(self, rooms: Sequence[Room]) -> list[str]:
        """Store rooms and return their ids."""
        async with self._tx() as s:
            s.add_all(_row(RoomRow, r, agent_id=self.agent_id) for r in rooms)
        return [r.id for r in rooms]

    async def get_rooms_by_ids(self, room_ids: Sequence[str]) -> list[Room]:
        """Return the rooms that exist among ``room_ids``."""
        return await self._rooms(select(RoomRow).where(RoomRow.id.in_(room_ids)))

    async def get_rooms_by_world(self, world_id: str) -> list[Room]:
        """Return a world's rooms."""
        return await self._rooms(select(RoomRow).where(RoomRow.world_id == world_id))

    async def update_room(self, room: Room) -> None:
        """Replace a stored room's fields, or raise ``NotFound``."""
        async with self._tx() as s:
            row = await s.get(RoomRow, room.id)
            if row is None:
                raise NotFound(f"room {room.id} does not exist")
            await s.merge(_row(RoomRow, room, agent_id=row.agent_id))

    async def delete_room(self, room_id: str) -> None:
        """Delete a room, its participants and its memories."""
        async with self._tx() as s:
            await self._delete_rooms(s, select(RoomRow.id).where(RoomRow.id == room_id))

    async def _delete_rooms(self, s: AsyncSession, room_ids: Any) -> None:
        memories = select(MemoryRow.id).where(MemoryRow.room_id.in_(room_ids))
        await s.execute(delete(EmbeddingRow).where(EmbeddingRow.memory_id.in_(memories)))
        await s.execute(delete(MemoryRow).where(MemoryRow.room_id.in_(room_ids)))
        await s.execute(delete(ParticipantRow).where(ParticipantRow.room_id.in_(room_ids)))
        await s.execute(delete(RoomRow).where(RoomRow.id.in_(room_ids)))

    async def get_rooms_for_participant(self, entity_id: str) -> list[str]:
        """Return the ids of the rooms an entity takes part in."""
        async with self._tx() as s:
            return list(
                await s.scalars(
                    select(ParticipantRow.room_id)
                    .where(
                        ParticipantRow.entity_id == entity_id,
                        ParticipantRow.agent_id == self.agent_id,
                    )
                    .order_by(ParticipantRow.id)
                )
            )

    async def _rooms(self, query: Any) -> list[Room]:
        async with self._tx() as s:
            return [_record(Room, r) for r in await s.scalars(query.order_by(RoomRow.id))]

    # -- participants ---------------------------------------------------------

    async def add_participants_room(self, entity_ids: Sequence[str], room_id: str) -> bool:
        """Add entities to a room; those already in it are left as they are."""
        async with self._tx() as s:
            present = set(
                await s.scalars(
                    select(ParticipantRow.entity_id).where(
                        ParticipantRow.room_id == room_id,
                        ParticipantRow.agent_id == self.agent_id,
                    )
                )
            )
            s.add_all(
                ParticipantRow(entity_id=e, room_id=room_id, agent_id=self.agent_id)
                for e in dict.fromkeys(entity_ids)
                if e not in present
            )
        return True

    async def remove_participant(self, entity_id: str, room_id: str) -> bool:
        """Take an entity out of a room; False if it was not in it."""
        async with self._tx() as s:
            done = await s.execute(
                delete(ParticipantRow).where(*self._participant(room_id, entity_id))
            )
            return bool(done.rowcount)  # type: ignore[attr-defined]

    async def is_room_participant(self, room_id: str, entity_id: str) -> bool:
        """Say whether an entity takes part in a room."""
        async with self._tx() as s:
            found = await s.scalar(
                select(ParticipantRow.id).where(*self._participant(room_id, entity_id))
            )
            return found is not None

    def _participant(self, room_id: str, entity_id: str) -> tuple[Any, ...]:
        return (
            ParticipantRow.room_id == room_id,
            ParticipantRow.entity_id == entity_id,
            ParticipantRow.agent_id == self.agent_id,
        )

    async def get_participants_for_room(self, room_id: str) -> list[str]:
        """Return the ids of the entities in a room."""
        async with self._tx() as s:
            return list(
                await s.scalars(
                    select(ParticipantRow.entity_id)
                    .where(
                        ParticipantRow.room_id == room_id,
                        ParticipantRow.agent_id == self.agent_id,
                    )
                    .order_by(ParticipantRow.id)
                )
            )

    async def get_participant_user_state(
        self, room_id: str, entity_id: str
    ) -> ParticipantState | None:
        """Return FOLLOWED, MUTED or None."""
        async with self._tx() as s:
            state = await s.scalar(
                select(ParticipantRow.room_state).where(
                    ParticipantRow.room_id == room_id,
                    ParticipantRow.entity_id == entity_id,
                    ParticipantRow.agent_id == self.agent_id,
                )
            )
        return ParticipantState(state) if state else None

    async def set_participant_user_state(
        self, room_id: str, entity_id: str, state: ParticipantState | None
    ) -> None:
        """Set FOLLOWED, MUTED or None, or raise ``NotFound`` if not a participant."""
        async with self._tx() as s:
            done = await s.execute(
                update(ParticipantRow)
                .where(
                    ParticipantRow.room_id == room_id,
                    ParticipantRow.entity_id == entity_id,
                    ParticipantRow.agent_id == self.agent_id,
                )
                .values(room_state=state.value if state else None)
            )
            if not done.rowcount:  # type: ignore[attr-defined]
                raise NotFound(f"entity {entity_id} is not a participant of room {room_id}")

    # -- relationships --------------------------------------------------------

    async def create_relationship(self, relationship: Relationship) -> bool:
        """Store a relationship; False if the pair is already linked for this agent."""
        try:
            async with self._tx() as s:
                s.add(_row(RelationshipRow, relationship, agent_id=self.agent_id))
        except Conflict:
            return False
        return True

    async def update_relationship(self, relationship: Relationship) -> None:
        """Replace the tags and metadata of the stored link between the same two entities."""
        async with self._tx() as s:
            done = await s.execute(
                update(RelationshipRow)
                .where(
                    RelationshipRow.source_entity_id == relationship.source_entity_id,
                    RelationshipRow.target_entity_id == relationship.target_entity_id,
                    RelationshipRow.agent_id == self.agent_id,
                )
                .values(tags=list(relationship.tags), metadata_=relationship.metadata)
            )
            if not done.rowcount:  # type: ignore[attr-defined]
                raise NotFound("no relationship between these entities")

    async def get_relationships(
        self, entity_id: str, tags: Sequence[str] | None = None
    ) -> list[Relationship]:
        """Return the links from or to ``entity_id`` carrying every one of ``tags``."""
        async with self._tx() as s:
            rows = await s.scalars(
                select(RelationshipRow)
                .where(
                    RelationshipRow.agent_id == self.agent_id,
                    (RelationshipRow.source_entity_id == entity_id)
                    | (RelationshipRow.target_entity_id == entity_id),
                )
                .order_by(RelationshipRow.created_at, RelationshipRow.id)
            )
            wanted = set(tags or ())
            return [_record(Relationship, r) for r in rows if wanted <= set(r.tags)]

    # -- tasks ----------------------------------------------------------------

    async def create_task(self, task: Task) -> str:
        """Store a task and return its id."""
        async with self._tx() as s:
            s.add(_row(TaskRow, task, agent_id=self.agent_id))
        return task.id

    async def get_task(self, task_id: str) -> Task | None:
        """Return the task, or None."""
        found = await self._tasks(TaskRow.id == task_id)
        return found[0] if found else None

    async def get_tasks(
        self,
        room_id: str | None = None,
        tags: Sequence[str] | None = None,
        entity_id: str | None = None,
    ) -> list[Task]:
        """Return the tasks matching every filter given (all ``tags`` present), oldest first."""
        conditions = []
        if room_id is not None:
            conditions.append(TaskRow.room_id == room_id)
        if entity_id is not None:
            conditions.append(TaskRow.entity_id == entity_id)
        wanted = set(tags or ())
        return [t for t in await self._tasks(*conditions) if wanted <= set(t.tags)]

    async def get_tasks_by_name(self, name: str) -> list[Task]:
        """Return the tasks called ``name``, oldest first."""
        return await self._tasks(TaskRow.name == name)

    async def _tasks(self, *conditions: Any) -> list[Task]:
        async with self._tx() as s:
            rows = await s.scalars(
                select(TaskRow)
                .where(TaskRow.agent_id == self.agent_id, *conditions)
                .order_by(TaskRow.created_at, TaskRow.id)
            )
            return [_record(Task, r) for r in rows]

    async def update_task(self, task: Task) -> None:
        """Replace a task's fields (``updated_at`` is set now), or raise ``NotFound``."""
        async with self._tx() as s:
            row = await s.get(TaskRow, task.id)
            if row is None or row.agent_id != self.agent_id:
                raise NotFound(f"task {task.id} does not exist")
            await s.merge(
                _row(
                    TaskRow,
                    task,
                    agent_id=self.agent_id,
                    created_at=row.created_at,
                    updated_at=now_ms(),
                )
            )

    async def delete_task(self, task_id: str) -> None:
        """Delete one task."""
        async with self._tx() as s:
            await s.execute(
                delete(TaskRow).where(TaskRow.id == task_id, TaskRow.agent_id == self.agent_id)
            )

    # -- logs -----------------------------------------------------------------

    async def log(self, entry: Log) -> None:
        """Append an audit row."""
        async with self._tx() as s:
            s.add(_row(LogRow, entry, agent_id=self.agent_id))

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
        query = select(LogRow).where(LogRow.agent_id == self.agent_id)
        if entity_id is not None:
            query = query.where(LogRow.entity_id == entity_id)
        if room_id is not None:
            query = query.where(LogRow.room_id == room_id)
        if log_type is not None:
            query = query.where(LogRow.type == log_type)
        query = query.order_by(LogRow.created_at.desc(), LogRow.id).offset(offset).limit(count)
        async with self._tx() as s:
            return [_record(Log, r) for r in await s.scalars(query)]

    async def delete_log(self, log_id: str) -> None:
        """Delete one audit row."""
        async with self._tx() as s:
            await s.execute(
                delete(LogRow).where(LogRow.id == log_id, LogRow.agent_id == self.agent_id)
            )

    # -- cache ----------------------------------------------------------------

    async def get_cache(self, key: str) -> Any:
        """Return the cached JSON value, or None when absent or expired."""
        async with self._tx() as s:
            row = await s.get(CacheRow, (key, self.agent_id))
            if row is None or (row.expires_at is not None and row.expires_at <= now_ms()):
                return None
            return row.value

    async def set_cache(self, key: str, value: Any, expires_at: int | None = None) -> bool:
        """Store a JSON value under ``key``, replacing any previous one."""
        async with self._tx() as s:
            await s.merge(
                CacheRow(key=key, agent_id=self.agent_id, value=value, expires_at=expires_at)
            )
        return True

    async def delete_cache(self, key: str) -> bool:
        """Delete a cached value; False if there was none."""
        async with self._tx() as s:
            done = await s.execute(
                delete(CacheRow).where(CacheRow.key == key, CacheRow.agent_id == self.agent_id)
            )
            return bool(done.rowcount)  # type: ignore[attr-defined]


# Records and rows share field names, except ``metadata``, which SQLAlchemy's
# declarative base reserves; it is the column attribute ``metadata_``.
_COLUMN_OF = {"metadata": "metadata_"}

RowT = TypeVar("RowT", bound=Base)
RecordT = TypeVar("RecordT", bound=msgspec.Struct)


def _row(row_type: type[RowT], record: msgspec.Struct, **columns: Any) -> RowT:
    """Return a new row holding ``record``'s fields (as JSON-able values) plus ``columns``."""
    mapped = set(row_type.__mapper__.attrs.keys())
    values = msgspec.to_builtins(msgspec.structs.asdict(record))
    fields = {_COLUMN_OF.get(k, k): v for k, v in values.items()}
    return row_type(**{k: v for k, v in {**fields, **columns}.items() if k in mapped})


def _record(record_type: type[RecordT], row: Base, **fields: Any) -> RecordT:
    """Return ``row`` as a validated ``record_type``; ``fields`` add what the row lacks."""
    mapped = set(type(row).__mapper__.attrs.keys())
    values = {
        name: getattr(row, _COLUMN_OF.get(name, name))
        for name in record_type.__struct_fields__
        if _COLUMN_OF.get(name, name) in mapped
    }
    return msgspec.convert({**values, **fields}, record_type)


def _embedding_row(memory_id: str, vector: Sequence[float]) -> EmbeddingRow:
    return EmbeddingRow(memory_id=memory_id, dim=len(vector), vector=to_bytes(vector))
