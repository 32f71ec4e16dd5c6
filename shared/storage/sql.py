"""``SqlAdapter``: the ``DatabaseAdapter`` on SQLAlchemy 2 async (SQLite or Postgres).

One short transaction per call (``AsyncSession`` with ``expire_on_commit``
off); rows are turned into the ``contracts.records`` Structs at the edge. A
turn's read and write (``begin_turn``, ``commit_turn``), and the writes made on
every turn, run on SQLAlchemy Core over one connection: the ORM's unit of work
was most of a turn's CPU. On SQLite, the statements built once in this module
run straight through the driver (``_Tx``): SQLAlchemy's ``execute`` was then
most of what was left.
Vectors are read only when a call asks for them (``include_embeddings``).
"Create if absent" is ``INSERT ... ON CONFLICT DO NOTHING`` (Postgres and
SQLite alike), so two replicas creating the same row never fail a transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any, Self, TypeVar

import msgspec
from sqlalchemy import (
    ColumnElement,
    Executable,
    Label,
    RowMapping,
    Select,
    bindparam,
    delete,
    func,
    select,
    update,
)
from sqlalchemy import text as sql_text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult, Dialect, Result
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.schema import Table
from sqlalchemy.util.typing import TupleAny

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
from contracts.turn import Connection, TurnCommit, TurnContext
from shared.database import create_engine
from shared.errors import BadRequest, Conflict, NotFound
from shared.sqlite_inline import InlineConnection, Prepared
from shared.sqlite_inline import transaction as inline_transaction
from shared.storage.migrate import check as check_schema
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
    owned_by_agents,
)
from shared.storage.validation import at_the_edge, check_id
from shared.storage.vectors import (
    check_dimension,
    check_size,
    dimensions_of,
    from_bytes,
    to_bytes,
    top_k,
)

_MESSAGES = "messages"
_FACTS = "facts"
_KEY_LENGTH = 255
"""The longest cache key (the column's size)."""
_TABLE_LENGTH = 64
"""The longest memory table name (the column's size)."""

_AGENTS = Base.metadata.tables["agents"]
_CACHE = Base.metadata.tables["cache"]
_EMBEDDINGS = Base.metadata.tables["embeddings"]
_ENTITIES = Base.metadata.tables["entities"]
_LOGS = Base.metadata.tables["logs"]
_MEMORIES = Base.metadata.tables["memories"]
_PARTICIPANTS = Base.metadata.tables["participants"]
_RELATIONSHIPS = Base.metadata.tables["relationships"]
_ROOMS = Base.metadata.tables["rooms"]
_TASKS = Base.metadata.tables["tasks"]
_WORLDS = Base.metadata.tables["worlds"]

_Columns = RowMapping | Mapping[str, object]
"""A row by column key: a Core row's mapping, or a part of one (``_part``)."""


def _labelled(table: Table) -> list[Label[object]]:
    """``table``'s columns, each labelled ``<table>_<column>`` so that a join keeps both ids."""
    return [column.label(f"{table.name}_{column.key}") for column in table.c]


def _part(row: _Columns, table: Table) -> dict[str, object] | None:
    """``table``'s columns of a joined row (by column key), or None when the join found none."""
    values = {column.key: row[f"{table.name}_{column.key}"] for column in table.c}
    return values if values["id"] is not None else None


_Statement = Select[*TupleAny] | UpdateBase
_StatementT = TypeVar("_StatementT", bound=_Statement)
_BUILT_ONCE: dict[int, _Statement] = {}
"""The statements built once (by id; held here, so an id is never reused): ``_Tx`` prepares them."""


def _once(statement: _StatementT) -> _StatementT:
    """Return ``statement``, noted as built once: on SQLite it runs prepared (``_Tx``)."""
    _BUILT_ONCE[id(statement)] = statement
    return statement


# The statements of a turn, built once; ``agent_id`` and the rest are bound per call.
_AGENT = _once(select(_AGENTS).where(_AGENTS.c.id == bindparam("agent_id")))
_MEMBERS = _once(
    select(_PARTICIPANTS.c.entity_id, _PARTICIPANTS.c.room_state, *_labelled(_ENTITIES))
    .outerjoin(
        _ENTITIES,
        (_ENTITIES.c.id == _PARTICIPANTS.c.entity_id)
        & (_ENTITIES.c.agent_id == _PARTICIPANTS.c.agent_id),
    )
    .where(
        _PARTICIPANTS.c.room_id == bindparam("room_id"),
        _PARTICIPANTS.c.agent_id == bindparam("agent_id"),
    )
    .order_by(_PARTICIPANTS.c.id)
)
_ENTITIES_BY_IDS = _once(
    select(_ENTITIES).where(
        _ENTITIES.c.agent_id == bindparam("agent_id"),
        _ENTITIES.c.id.in_(bindparam("ids", expanding=True)),
    )
)
_RENAME_ENTITY = _once(
    update(_ENTITIES)
    # Not the columns' names: in an UPDATE those would be the values to SET.
    .where(_ENTITIES.c.id == bindparam("the_id"), _ENTITIES.c.agent_id == bindparam("the_agent"))
    .values(names=bindparam("new_names"), metadata=bindparam("new_metadata"))
)
_ROOM_AND_WORLD = _once(
    select(*_labelled(_ROOMS), *_labelled(_WORLDS))
    .outerjoin(
        _WORLDS,
        (_WORLDS.c.id == _ROOMS.c.world_id) & (_WORLDS.c.agent_id == _ROOMS.c.agent_id),
    )
    .where(_ROOMS.c.id == bindparam("room_id"), _ROOMS.c.agent_id == bindparam("agent_id"))
)
_RECENT_MESSAGES = _once(
    select(_MEMORIES)
    .where(
        _MEMORIES.c.agent_id == bindparam("agent_id"),
        _MEMORIES.c.type == _MESSAGES,
        _MEMORIES.c.room_id == bindparam("room_id"),
    )
    .order_by(_MEMORIES.c.created_at.desc(), _MEMORIES.c.id)
    .limit(bindparam("count"))
)
_CACHED = _once(
    select(_CACHE.c.key, _CACHE.c.value, _CACHE.c.expires_at).where(
        _CACHE.c.agent_id == bindparam("agent_id"),
        _CACHE.c.key.in_(bindparam("keys", expanding=True)),
    )
)
_ROOM_TASKS = _once(
    select(_TASKS)
    .where(_TASKS.c.agent_id == bindparam("agent_id"), _TASKS.c.room_id == bindparam("room_id"))
    .order_by(_TASKS.c.created_at, _TASKS.c.id)
)
_DIMENSION = _once(select(_AGENTS.c.embedding_dim).where(_AGENTS.c.id == bindparam("agent_id")))
_DIMENSION_LOCKED = _once(_DIMENSION.with_for_update())
_FIX_DIMENSION = _once(
    update(_AGENTS)
    .where(_AGENTS.c.id == bindparam("agent_id"))
    .values(embedding_dim=bindparam("dim"))
)
_OWNED_MEMORIES = _once(
    select(_MEMORIES.c.id).where(
        _MEMORIES.c.id.in_(bindparam("ids", expanding=True)),
        _MEMORIES.c.agent_id == bindparam("agent_id"),
    )
)
_VECTORS = _once(
    select(_EMBEDDINGS.c.memory_id, _EMBEDDINGS.c.vector).where(
        _EMBEDDINGS.c.agent_id == bindparam("agent_id"),
        _EMBEDDINGS.c.memory_id.in_(bindparam("ids", expanding=True)),
    )
)
_CACHE_VALUE = _once(
    select(_CACHE.c.value, _CACHE.c.expires_at).where(
        _CACHE.c.agent_id == bindparam("agent_id"), _CACHE.c.key == bindparam("key")
    )
)
_LOG = _once(_LOGS.insert())


@cache
def _memories_query(
    *,
    room: bool,
    entity: bool,
    world: bool,
    unique: bool,
    start: bool,
    end: bool,
    count: bool,
) -> Select[*TupleAny]:
    """``get_memories``'s query with the filters given, newest first, built once for each set.

    Parameters: ``agent_id``, ``table_name``, ``offset``, and ``room_id``,
    ``entity_id``, ``world_id``, ``start``, ``end``, ``count`` for those given.
    """
    query = select(_MEMORIES).where(
        _MEMORIES.c.agent_id == bindparam("agent_id"), _MEMORIES.c.type == bindparam("table_name")
    )
    given = {"room_id": room, "entity_id": entity, "world_id": world}
    for column, wanted in given.items():
        if wanted:
            query = query.where(_MEMORIES.c[column] == bindparam(column))
    if unique:
        query = query.where(_MEMORIES.c.unique.is_(True))
    if start:
        query = query.where(_MEMORIES.c.created_at >= bindparam("start"))
    if end:
        query = query.where(_MEMORIES.c.created_at <= bindparam("end"))
    query = query.order_by(_MEMORIES.c.created_at.desc(), _MEMORIES.c.id)
    query = query.offset(bindparam("offset"))
    return _once(query.limit(bindparam("count")) if count else query)


@dataclass(frozen=True)
class _Writes:
    """The INSERTs of every turn, built once per dialect (the upserts are the dialect's own)."""

    memories: Executable
    """New memories (ids that exist are skipped), returning the ids inserted."""
    embeddings: Executable
    """The vectors of new memories."""
    vectors: Executable
    """Vectors, replacing a memory's previous one."""
    logs: Executable
    """Audit rows; an id that exists is kept."""
    cache: Executable
    """Cache values, replacing those under the same key."""
    relationships: Executable
    """Links, replacing the tags and metadata of the one between the same two entities."""
    participants: Executable
    """Participants; one that exists is kept."""
    entities: Executable
    """An entity unless its id exists, returning its id when inserted."""
    worlds: Executable
    """A world unless its id exists, returning its id when inserted."""
    rooms: Executable
    """A room unless its id exists, returning its id when inserted."""


@cache
def _writes(dialect: str) -> _Writes:
    """The turn's INSERTs for ``dialect`` (an engine's ``dialect.name``)."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    values, link, vector = insert(_CACHE), insert(_RELATIONSHIPS), insert(_EMBEDDINGS)
    return _Writes(
        memories=_once(insert(_MEMORIES).on_conflict_do_nothing().returning(_MEMORIES.c.id)),
        embeddings=_once(vector),
        vectors=_once(
            vector.on_conflict_do_update(
                index_elements=[_EMBEDDINGS.c.memory_id, _EMBEDDINGS.c.agent_id],
                set_={"dim": vector.excluded.dim, "vector": vector.excluded.vector},
            )
        ),
        logs=_once(insert(_LOGS).on_conflict_do_nothing()),
        cache=_once(
            values.on_conflict_do_update(
                index_elements=[_CACHE.c.key, _CACHE.c.agent_id],
                set_={"value": values.excluded.value, "expires_at": values.excluded.expires_at},
            )
        ),
        relationships=_once(
            link.on_conflict_do_update(
                index_elements=[
                    _RELATIONSHIPS.c.source_entity_id,
                    _RELATIONSHIPS.c.target_entity_id,
                    _RELATIONSHIPS.c.agent_id,
                ],
                set_={"tags": link.excluded.tags, "metadata": link.excluded["metadata"]},
            )
        ),
        participants=_once(insert(_PARTICIPANTS).on_conflict_do_nothing()),
        entities=_once(insert(_ENTITIES).on_conflict_do_nothing().returning(_ENTITIES.c.id)),
        worlds=_once(insert(_WORLDS).on_conflict_do_nothing().returning(_WORLDS.c.id)),
        rooms=_once(insert(_ROOMS).on_conflict_do_nothing().returning(_ROOMS.c.id)),
    )


class _Tx:
    """The statements of one transaction: through SQLAlchemy Core on ``connection``.

    Or, on SQLite, straight through ``driver`` (``shared.sqlite_inline``): a
    statement built once (``_once``) is prepared once, any other each time
    it runs (``SqlAdapter._connection(core=True)`` runs those through Core,
    which caches their compiled form by their shape).
    """

    def __init__(
        self,
        dialect: Dialect,
        prepared: dict[int, Prepared],
        *,
        connection: AsyncConnection | None = None,
        driver: InlineConnection | None = None,
    ) -> None:
        self._dialect = dialect
        self._prepared = prepared
        self._connection = connection
        self._driver = driver

    async def rows(
        self,
        statement: Executable,
        params: Mapping[str, object] | Sequence[Mapping[str, object]] | None = None,
    ) -> Sequence[Mapping[Any, Any]]:
        """Run ``statement`` (with each of ``params`` if a list); return the rows by column key."""
        if self._driver is None:
            return (await self._core().execute(statement, params)).mappings().all()
        prepared = self._prepare(statement)
        if params is None or isinstance(params, Mapping):
            return await prepared.rows(self._driver, params or {})
        return [row for one in params for row in await prepared.rows(self._driver, one)]

    async def run(
        self,
        statement: Executable,
        params: Mapping[str, object] | Sequence[Mapping[str, object]] | None = None,
    ) -> None:
        """Run ``statement`` (once per item if ``params`` is a list), for what it writes."""
        if self._driver is None:
            await self._core().execute(statement, params)
            return
        prepared = self._prepare(statement)
        if params is None or isinstance(params, Mapping):
            await prepared.rows(self._driver, params or {})
        else:
            await prepared.run_many(self._driver, params)

    def _core(self) -> AsyncConnection:
        if self._connection is None:
            raise TypeError("a transaction has a Core connection or a driver's")
        return self._connection

    def _prepare(self, statement: Executable) -> Prepared:
        key = id(statement)
        if (prepared := self._prepared.get(key)) is not None:
            return prepared
        if not isinstance(statement, Select | UpdateBase):
            raise TypeError(f"not a SELECT, INSERT, UPDATE or DELETE: {type(statement).__name__}")
        prepared = Prepared(statement, self._dialect)
        if _BUILT_ONCE.get(key) is statement:
            self._prepared[key] = prepared
        return prepared


def _observed(engine: AsyncEngine) -> bool:
    """Whether anything listens to the engine's transactions or statements.

    Tracing, or a test counting them: a transaction straight through the
    driver would not tell them.
    """
    dispatch = engine.sync_engine.dispatch
    return bool(
        dispatch.before_cursor_execute
        or dispatch.after_cursor_execute
        or dispatch.begin
        or dispatch.commit
        or dispatch.rollback
    )


class SqlAdapter:
    """Storage for one agent on a SQL database, shared pool across agents."""

    def __init__(
        self,
        engine: AsyncEngine,
        agent_id: str,
        *,
        sessions: async_sessionmaker[AsyncSession] | None = None,
        write_lock: asyncio.Lock | None = None,
        prepared: dict[int, Prepared] | None = None,
    ) -> None:
        self.engine = engine
        self.agent_id = check_id(agent_id, "agent_id")
        self._sessions = sessions or async_sessionmaker(engine, expire_on_commit=False)
        # SQLite has one writer at a time: this process's writers queue here, in
        # order, instead of each holding a connection while SQLite's busy handler
        # sleeps and retries (the busy timeout still covers other processes).
        if write_lock is None and engine.dialect.name == "sqlite":
            write_lock = asyncio.Lock()
        self._write_lock = write_lock
        self._writes = _writes(engine.dialect.name)
        self._inline = engine.dialect.name == "sqlite"
        # The statements prepared for the engine's SQLite connections, by id (_Tx).
        self._prepared: dict[int, Prepared] = {} if prepared is None else prepared

    @classmethod
    def from_url(cls, url: str, agent_id: str, *, pool_size: int | None = None) -> Self:
        """Return an adapter on a new engine for ``url`` (``DATABASE_URL``).

        ``pool_size``: connections kept open, at least the number of calls that
        run at once (the engine's default when None).
        """
        return cls(create_engine(url, pool_size=pool_size), agent_id)

    def for_agent(self, agent_id: str) -> SqlAdapter:
        """Return an adapter for ``agent_id`` over the same engine."""
        return SqlAdapter(
            self.engine,
            agent_id,
            sessions=self._sessions,
            write_lock=self._write_lock,
            prepared=self._prepared,
        )

    async def init(self, *, migrate: bool = True) -> None:
        """Bring the schema up to date, or with ``migrate=False`` check that it is.

        Raises:
            SchemaNotMigratedError: ``migrate=False`` and the schema is not the newest.
        """
        if migrate:
            await upgrade_schema(self.engine)
        else:
            await check_schema(self.engine)

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
    async def _tx(self, *, write: bool = True) -> AsyncIterator[AsyncSession]:
        """One transaction; a broken constraint becomes ``Conflict`` (never SQL text).

        ``write=False`` for a transaction that only reads: it never waits for
        SQLite's writers (WAL lets readers run beside one writer).
        """
        lock = self._write_lock if write else None
        try:
            async with (
                lock or contextlib.nullcontext(),
                self._sessions() as session,
                session.begin(),
            ):
                yield session
        except IntegrityError as exc:
            raise _conflict() from exc

    @asynccontextmanager
    async def _connection(self, *, write: bool = True, core: bool = False) -> AsyncIterator[_Tx]:
        """One transaction without the ORM, as ``_tx`` (the lock, ``Conflict``).

        On SQLite, its statements go straight through the driver (``_Tx``)
        unless ``core`` (statements built per call) or something listens to
        the engine's statements (tracing, a test counting them): then
        SQLAlchemy runs every one.
        """
        lock = self._write_lock if write else None
        dialect = self.engine.dialect
        try:
            async with lock or contextlib.nullcontext():
                if self._inline and not core and not _observed(self.engine):
                    async with inline_transaction(self.engine) as driver:
                        yield _Tx(dialect, self._prepared, driver=driver)
                else:
                    async with self.engine.begin() as connection:
                        yield _Tx(dialect, self._prepared, connection=connection)
        except IntegrityError as exc:
            raise _conflict() from exc

    # -- agents ---------------------------------------------------------------

    @at_the_edge
    async def create_agent(self, agent: Agent) -> bool:
        """Store ``agent``; False if one with its id exists."""
        try:
            async with self._tx() as s:
                s.add(_row(AgentRow, agent))
        except Conflict:
            return False
        return True

    @at_the_edge
    async def get_agent(self, agent_id: str) -> Agent | None:
        """Return the agent, or None."""
        async with self._tx(write=False) as s:
            row = await s.get(AgentRow, agent_id)
            return _record(Agent, row) if row else None

    @at_the_edge
    async def get_agents(self) -> list[Agent]:
        """Return every agent, by name."""
        async with self._tx(write=False) as s:
            rows = await s.scalars(select(AgentRow).order_by(AgentRow.name))
            return [_record(Agent, r) for r in rows]

    @at_the_edge
    async def update_agent(self, agent_id: str, agent: Agent) -> bool:
        """Replace the stored agent's fields; False if there is none."""
        _check_sizes(AgentRow, {"name": agent.name, "username": agent.username})
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
            return _changed(done)

    @at_the_edge
    async def delete_agent(self, agent_id: str) -> bool:
        """Delete the agent and everything it owns; False if there was none."""
        async with self._tx() as s:
            # Every table that references the agent, read from the schema (so a new
            # table cannot be forgotten), rows that reference others' rows first.
            for table, owner in owned_by_agents(Base.metadata):
                await s.execute(delete(table).where(owner == agent_id))
            done = await s.execute(delete(AgentRow).where(AgentRow.id == agent_id))
            return _changed(done)

    @at_the_edge
    async def ensure_embedding_dimension(self, dimension: int) -> None:
        """Fix this agent's vector size, or raise ``DimensionMismatch`` if another is fixed."""
        async with self._connection() as c:
            await self._fix_dimension(c, [dimension])

    async def _fix_dimension(self, c: _Tx, sizes: Iterable[int]) -> None:
        """Fix the agent's vector size to the first of ``sizes``; each must match it."""
        agent = {"agent_id": self.agent_id}
        found = await c.rows(_DIMENSION, agent)
        if not found:
            raise NotFound(f"agent {self.agent_id} does not exist; create it first")
        fixed = found[0]["embedding_dim"]
        if fixed is None:
            # Once fixed, the size never changes; fixing it takes the row lock so
            # that two first writers cannot fix two sizes.
            locked = await c.rows(_DIMENSION_LOCKED, agent)
            fixed = locked[0]["embedding_dim"] if locked else None
        dimension = fixed if isinstance(fixed, int) else None
        for size in sizes:
            dimension = check_size(dimension, size)
        if fixed is None and dimension is not None:
            await c.run(_FIX_DIMENSION, {**agent, "dim": dimension})

    # -- memories -------------------------------------------------------------

    @at_the_edge
    async def create_memory(self, memory: Memory, table_name: str, unique: bool = True) -> str:
        """Store ``memory`` in ``table_name``; a memory whose id exists is left as it is."""
        await self.create_memories([memory], table_name, unique=unique)
        return memory.id

    @at_the_edge
    async def create_memories(
        self, memories: Sequence[Memory], table_name: str, unique: bool = True
    ) -> list[str]:
        """Store many memories in one transaction; ids that exist are left as they are.

        Every vector must have the agent's dimension: one that does not fails
        the whole batch with ``DimensionMismatch`` and nothing is stored.
        """
        async with self._connection() as c:
            await self._store_memories(c, [(m, table_name) for m in memories], unique=unique)
        return [m.id for m in memories]

    async def _store_memories(
        self, c: _Tx, memories: Sequence[tuple[Memory, str]], *, unique: bool = True
    ) -> set[str]:
        """Insert the memories (each with its table) whose ids are new; return the ids inserted.

        The vectors of the inserted ones are checked against the agent's
        dimension (``DimensionMismatch``) and stored with them.
        """
        by_id = {m.id: (m, table) for m, table in memories}
        if not by_id:
            return set()
        for _, table in by_id.values():
            if not 0 < len(table) <= _TABLE_LENGTH:
                raise BadRequest(
                    f"table_name must have 1 to {_TABLE_LENGTH} characters; got {len(table)}",
                    details={"field": "table_name", "rule": f"length 1 to {_TABLE_LENGTH}"},
                )
        rows = [
            _values(
                MemoryRow,
                m,
                type=table,
                # A memory belongs to the agent whose adapter stores it, whatever it says.
                agent_id=self.agent_id,
                unique=m.unique and unique,
            )
            for m, table in by_id.values()
        ]
        inserted = {str(row["id"]) for row in await c.rows(self._writes.memories, rows)}
        vectors = {
            i: m.embedding
            for i, (m, _) in by_id.items()
            if i in inserted and m.embedding is not None
        }
        if vectors:
            await self._fix_dimension(c, dict.fromkeys(len(v) for v in vectors.values()))
            await c.run(
                self._writes.embeddings,
                [
                    {
                        "memory_id": i,
                        "agent_id": self.agent_id,
                        "dim": len(v),
                        "vector": to_bytes(v),
                    }
                    for i, v in vectors.items()
                ],
            )
        return inserted

    @at_the_edge
    async def get_memory_by_id(
        self, memory_id: str, *, include_embeddings: bool = False
    ) -> Memory | None:
        """Return the memory (with its vector if ``include_embeddings``), or None."""
        found = await self.get_memories_by_ids([memory_id], include_embeddings=include_embeddings)
        return found[0] if found else None

    @at_the_edge
    async def get_memories_by_ids(
        self,
        memory_ids: Sequence[str],
        table_name: str | None = None,
        *,
        include_embeddings: bool = False,
    ) -> list[Memory]:
        """Return the memories that exist among ``memory_ids``, in the order asked."""
        query = select(_MEMORIES).where(
            _MEMORIES.c.agent_id == self.agent_id, _MEMORIES.c.id.in_(memory_ids)
        )
        if table_name is not None:
            query = query.where(MemoryRow.type == table_name)
        found = {m.id: m for m in await self._memories(query, include_embeddings)}
        return [found[i] for i in memory_ids if i in found]

    @at_the_edge
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
        """Return this agent's matching memories, newest first."""
        given = {
            "room_id": room_id,
            "entity_id": entity_id,
            "world_id": world_id,
            "start": start,
            "end": end,
            "count": count,
        }
        query = _memories_query(
            room=room_id is not None,
            entity=entity_id is not None,
            world=world_id is not None,
            unique=unique,
            start=start is not None,
            end=end is not None,
            count=count is not None,
        )
        params = {
            "agent_id": self.agent_id,
            "table_name": table_name,
            "offset": offset,
            **{name: value for name, value in given.items() if value is not None},
        }
        return await self._memories(query, include_embeddings, params)

    @at_the_edge
    async def get_memories_by_room_ids(
        self,
        *,
        table_name: str,
        room_ids: Sequence[str],
        limit: int | None = None,
        include_embeddings: bool = False,
    ) -> list[Memory]:
        """Return the memories of several rooms, newest first."""
        query = (
            self._memory_filter(table_name)
            .where(MemoryRow.room_id.in_(room_ids))
            .order_by(MemoryRow.created_at.desc(), MemoryRow.id)
        )
        if limit is not None:
            query = query.limit(limit)
        return await self._memories(query, include_embeddings)

    @at_the_edge
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
        include_embeddings: bool = False,
    ) -> list[Memory]:
        """Return the ``count`` memories closest to ``embedding`` by exact cosine, best first."""
        async with self._tx(write=False) as s:
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
                .join(EmbeddingRow, _embedding_of_memory())
                .with_only_columns(MemoryRow.id, EmbeddingRow.vector)
                .order_by(MemoryRow.id)
            )
            rows = (await s.execute(query)).all()
            best = top_k(
                embedding, [r.vector for r in rows], count=count, threshold=match_threshold
            )
            ids = [rows[i].id for i, _ in best]
            found = (
                {
                    r.id: r
                    for r in await s.scalars(
                        select(MemoryRow).where(
                            MemoryRow.agent_id == self.agent_id, MemoryRow.id.in_(ids)
                        )
                    )
                }
                if ids
                else {}
            )
        return [
            _record(
                Memory,
                found[rows[i].id],
                similarity=score,
                embedding=from_bytes(rows[i].vector) if include_embeddings else None,
            )
            for i, score in best
            if rows[i].id in found  # unless deleted between the two reads
        ]

    @at_the_edge
    async def update_memory(
        self,
        memory_id: str,
        *,
        content: Content | None = None,
        metadata: dict[str, object] | None = None,
        embedding: Sequence[float] | None = None,
        unique: bool | None = None,
    ) -> bool:
        """Change the given fields (metadata is merged); False if there is no such memory."""
        async with self._tx() as s:
            row = await s.get(MemoryRow, (memory_id, self.agent_id))
            if row is None:
                return False
            if content is not None:
                row.content = msgspec.to_builtins(content)
            if metadata is not None:
                row.metadata_ = {**row.metadata_, **metadata}
            if unique is not None:
                row.unique = unique
            if embedding is not None:
                await self._fix_dimension(
                    _Tx(self.engine.dialect, self._prepared, connection=await s.connection()),
                    [len(embedding)],
                )
                await s.merge(_embedding_row(memory_id, self.agent_id, embedding))
        return True

    @at_the_edge
    async def set_embeddings(self, memory_ids: Sequence[str], vectors: Sequence[bytes]) -> int:
        """Store the vectors of many memories in one transaction; return how many were stored.

        ``vectors[i]`` (little-endian float32 bytes, ``vectors.to_bytes``) belongs
        to ``memory_ids[i]``; a vector replaces the memory's previous one; ids
        unknown or of another agent are skipped (a repeated id: its last vector).

        Raises:
            BadRequest: the lists differ in length, or a vector is empty or not
                float32 (nothing stored).
            DimensionMismatch: a vector's size is not the agent's (fixed by the
                first vector ever stored); its details name both sizes, and
                nothing is stored.
        """
        if len(memory_ids) != len(vectors):
            raise BadRequest(
                f"memory_ids and vectors must have the same length; got {len(memory_ids)} "
                f"memory_ids and {len(vectors)} vectors",
                details={"memory_ids": str(len(memory_ids)), "vectors": str(len(vectors))},
            )
        batch = dict(zip(memory_ids, vectors, strict=True))
        sizes = {memory_id: dimensions_of(blob) for memory_id, blob in batch.items()}
        if not batch:
            return 0
        async with self._connection() as c:
            found = await c.rows(_OWNED_MEMORIES, {"ids": list(batch), "agent_id": self.agent_id})
            owned = {row["id"] for row in found}
            if not owned:
                return 0
            await self._fix_dimension(c, dict.fromkeys(sizes[i] for i in batch if i in owned))
            await c.run(
                self._writes.vectors,
                [
                    {"memory_id": i, "agent_id": self.agent_id, "dim": sizes[i], "vector": blob}
                    for i, blob in batch.items()
                    if i in owned
                ],
            )
        return len(owned)

    @at_the_edge
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
        text = func.lower(MemoryRow.content["text"].as_string())
        found = (
            self._memory_filter(table_name, room_id=room_id)
            .where(text.contains(query.lower(), autoescape=True))
            .order_by(MemoryRow.created_at.desc(), MemoryRow.id)
            .limit(count)
        )
        return await self._memories(found, include_embeddings)

    @at_the_edge
    async def get_memories_without_embeddings(self, *, count: int = 500) -> list[Memory]:
        """Return up to ``count`` of this agent's memories with text but no vector, newest first."""
        text = MemoryRow.content["text"].as_string()
        query = (
            select(_MEMORIES)
            .outerjoin(EmbeddingRow, _embedding_of_memory())
            .where(
                MemoryRow.agent_id == self.agent_id,
                EmbeddingRow.memory_id.is_(None),
                text.is_not(None),
                text != "",
            )
            .order_by(MemoryRow.created_at.desc(), MemoryRow.id)
            .limit(count)
        )
        return await self._memories(query, include_embeddings=False)

    @at_the_edge
    async def delete_memory(self, memory_id: str) -> None:
        """Delete one memory and its vector."""
        async with self._tx() as s:
            await s.execute(
                delete(EmbeddingRow).where(
                    EmbeddingRow.agent_id == self.agent_id, EmbeddingRow.memory_id == memory_id
                )
            )
            await s.execute(
                delete(MemoryRow).where(
                    MemoryRow.agent_id == self.agent_id, MemoryRow.id == memory_id
                )
            )

    @at_the_edge
    async def delete_all_memories(self, room_id: str, table_name: str) -> None:
        """Delete a room's memories of one table, with their vectors."""
        ids = self._memory_filter(table_name, room_id=room_id).with_only_columns(MemoryRow.id)
        async with self._tx() as s:
            await s.execute(
                delete(EmbeddingRow).where(
                    EmbeddingRow.agent_id == self.agent_id, EmbeddingRow.memory_id.in_(ids)
                )
            )
            await s.execute(
                delete(MemoryRow).where(
                    MemoryRow.agent_id == self.agent_id, MemoryRow.id.in_(ids.scalar_subquery())
                )
            )

    @at_the_edge
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
        async with self._tx(write=False) as s:
            return int((await s.execute(query)).scalar_one())

    def _memory_filter(
        self,
        table_name: str,
        *,
        room_id: str | None = None,
        entity_id: str | None = None,
        world_id: str | None = None,
        unique: bool = False,
    ) -> Select[*TupleAny]:
        query = select(_MEMORIES).where(
            _MEMORIES.c.agent_id == self.agent_id, _MEMORIES.c.type == table_name
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

    async def _memories(
        self,
        query: Select[*TupleAny],
        include_embeddings: bool,
        params: Mapping[str, object] | None = None,
    ) -> list[Memory]:
        """The memories ``query`` (a Core select of the memories table, with ``params``) finds."""
        async with self._connection(write=False, core=id(query) not in _BUILT_ONCE) as c:
            rows = await c.rows(query, params)
            vectors: dict[object, list[float]] = {}
            if include_embeddings and rows:
                found = await c.rows(
                    _VECTORS, {"agent_id": self.agent_id, "ids": [r["id"] for r in rows]}
                )
                vectors = {e["memory_id"]: from_bytes(e["vector"]) for e in found}
        return [_from_row(Memory, r, embedding=vectors.get(r["id"])) for r in rows]

    # -- entities -------------------------------------------------------------

    @at_the_edge
    async def create_entities(self, entities: Sequence[Entity]) -> bool:
        """Store entities; False (and nothing stored) if any already exists."""
        try:
            async with self._tx() as s:
                s.add_all(_row(EntityRow, e, agent_id=self.agent_id) for e in entities)
        except Conflict:
            return False
        return True

    @at_the_edge
    async def get_entities_by_ids(self, entity_ids: Sequence[str]) -> list[Entity]:
        """Return the entities that exist among ``entity_ids``."""
        async with self._tx(write=False) as s:
            rows = await s.scalars(
                select(EntityRow).where(
                    EntityRow.agent_id == self.agent_id, EntityRow.id.in_(entity_ids)
                )
            )
            return [_record(Entity, r) for r in rows]

    @at_the_edge
    async def get_entities_by_names(self, names: Sequence[str]) -> list[Entity]:
        """Return the entities known under any of ``names`` (exact, case-insensitive)."""
        wanted = {n.casefold() for n in names}
        return [e for e in await self._entities() if wanted & {n.casefold() for n in e.names}]

    @at_the_edge
    async def search_entities_by_name(self, query: str, limit: int = 10) -> list[Entity]:
        """Return the entities with a name containing ``query`` (case-insensitive)."""
        needle = query.casefold()
        found = [e for e in await self._entities() if any(needle in n.casefold() for n in e.names)]
        return found[:limit]

    async def _entities(self) -> list[Entity]:
        # Names live in a JSON list, which SQLite and Postgres search differently;
        # matching in Python keeps one behaviour (fine for thousands of entities).
        async with self._tx(write=False) as s:
            rows = await s.scalars(
                select(EntityRow).where(EntityRow.agent_id == self.agent_id).order_by(EntityRow.id)
            )
            return [_record(Entity, r) for r in rows]

    @at_the_edge
    async def update_entity(self, entity: Entity) -> None:
        """Replace a stored entity's names and metadata, or raise ``NotFound``."""
        async with self._tx() as s:
            row = await s.get(EntityRow, (entity.id, self.agent_id))
            if row is None:
                raise NotFound(f"entity {entity.id} does not exist")
            row.names = list(entity.names)
            row.metadata_ = entity.metadata

    # -- components -----------------------------------------------------------

    @at_the_edge
    async def create_component(self, component: Component) -> bool:
        """Store a component; False if one with its id exists."""
        try:
            async with self._tx() as s:
                s.add(_row(ComponentRow, component, agent_id=self.agent_id))
        except Conflict:
            return False
        return True

    @at_the_edge
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

    @at_the_edge
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
        *conditions: ColumnElement[bool],
    ) -> list[Component]:
        query = select(ComponentRow).where(
            ComponentRow.agent_id == self.agent_id, ComponentRow.entity_id == entity_id, *conditions
        )
        if world_id is not None:
            query = query.where(ComponentRow.world_id == world_id)
        if source_entity_id is not None:
            query = query.where(ComponentRow.source_entity_id == source_entity_id)
        async with self._tx(write=False) as s:
            rows = await s.scalars(query.order_by(ComponentRow.created_at, ComponentRow.id))
            return [_record(Component, r) for r in rows]

    @at_the_edge
    async def update_component(self, component: Component) -> None:
        """Replace a component's data, or raise ``NotFound``."""
        async with self._tx() as s:
            row = await s.get(ComponentRow, (component.id, self.agent_id))
            if row is None:
                raise NotFound(f"component {component.id} does not exist")
            row.data = component.data

    @at_the_edge
    async def delete_component(self, component_id: str) -> None:
        """Delete one component."""
        async with self._tx() as s:
            await s.execute(
                delete(ComponentRow).where(
                    ComponentRow.id == component_id, ComponentRow.agent_id == self.agent_id
                )
            )

    # -- worlds and rooms -----------------------------------------------------

    @at_the_edge
    async def create_world(self, world: World) -> str:
        """Store ``world`` and return its id."""
        async with self._tx() as s:
            s.add(_row(WorldRow, world, agent_id=self.agent_id))
        return world.id

    @at_the_edge
    async def get_world(self, world_id: str) -> World | None:
        """Return the world, or None."""
        async with self._tx(write=False) as s:
            row = await s.get(WorldRow, (world_id, self.agent_id))
            return _record(World, row) if row else None

    @at_the_edge
    async def get_all_worlds(self) -> list[World]:
        """Return the agent's worlds."""
        async with self._tx(write=False) as s:
            rows = await s.scalars(
                select(WorldRow).where(WorldRow.agent_id == self.agent_id).order_by(WorldRow.id)
            )
            return [_record(World, r) for r in rows]

    @at_the_edge
    async def update_world(self, world: World) -> None:
        """Replace a stored world's name and metadata, or raise ``NotFound``."""
        async with self._tx() as s:
            row = await s.get(WorldRow, (world.id, self.agent_id))
            if row is None:
                raise NotFound(f"world {world.id} does not exist")
            _values(WorldRow, world)  # refuses a text longer than its column
            row.name = world.name
            row.message_server_id = world.message_server_id
            row.metadata_ = world.metadata

    @at_the_edge
    async def remove_world(self, world_id: str) -> None:
        """Delete a world and its rooms (with their participants and memories)."""
        rooms = select(RoomRow.id).where(
            RoomRow.world_id == world_id, RoomRow.agent_id == self.agent_id
        )
        async with self._tx() as s:
            await self._delete_rooms(s, rooms)
            await s.execute(
                delete(WorldRow).where(WorldRow.id == world_id, WorldRow.agent_id == self.agent_id)
            )

    @at_the_edge
    async def create_rooms(self, rooms: Sequence[Room]) -> list[str]:
        """Store rooms and return their ids."""
        async with self._tx() as s:
            s.add_all(_row(RoomRow, r, agent_id=self.agent_id) for r in rooms)
        return [r.id for r in rooms]

    @at_the_edge
    async def get_rooms_by_ids(self, room_ids: Sequence[str]) -> list[Room]:
        """Return the rooms that exist among ``room_ids``."""
        return await self._rooms(
            select(RoomRow).where(RoomRow.agent_id == self.agent_id, RoomRow.id.in_(room_ids))
        )

    @at_the_edge
    async def get_rooms_by_world(self, world_id: str) -> list[Room]:
        """Return a world's rooms."""
        return await self._rooms(
            select(RoomRow).where(RoomRow.agent_id == self.agent_id, RoomRow.world_id == world_id)
        )

    @at_the_edge
    async def update_room(self, room: Room) -> None:
        """Replace a stored room's fields, or raise ``NotFound``."""
        async with self._tx() as s:
            row = await s.get(RoomRow, (room.id, self.agent_id))
            if row is None:
                raise NotFound(f"room {room.id} does not exist")
            await s.merge(_row(RoomRow, room, agent_id=self.agent_id))

    @at_the_edge
    async def delete_room(self, room_id: str) -> None:
        """Delete a room, its participants and its memories."""
        async with self._tx() as s:
            await self._delete_rooms(
                s,
                select(RoomRow.id).where(RoomRow.id == room_id, RoomRow.agent_id == self.agent_id),
            )

    async def _delete_rooms(self, s: AsyncSession, room_ids: Select[str]) -> None:
        """Delete this agent's rooms among ``room_ids`` with its participants and memories there."""
        mine = MemoryRow.agent_id == self.agent_id
        memories = select(MemoryRow.id).where(mine, MemoryRow.room_id.in_(room_ids))
        await s.execute(
            delete(EmbeddingRow).where(
                EmbeddingRow.agent_id == self.agent_id, EmbeddingRow.memory_id.in_(memories)
            )
        )
        await s.execute(delete(MemoryRow).where(mine, MemoryRow.room_id.in_(room_ids)))
        await s.execute(
            delete(ParticipantRow).where(
                ParticipantRow.agent_id == self.agent_id, ParticipantRow.room_id.in_(room_ids)
            )
        )
        await s.execute(
            delete(RoomRow).where(RoomRow.agent_id == self.agent_id, RoomRow.id.in_(room_ids))
        )

    @at_the_edge
    async def get_rooms_for_participant(self, entity_id: str) -> list[str]:
        """Return the ids of the rooms an entity takes part in."""
        async with self._tx(write=False) as s:
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

    async def _rooms(self, query: Select[RoomRow]) -> list[Room]:
        async with self._tx(write=False) as s:
            return [_record(Room, r) for r in await s.scalars(query.order_by(RoomRow.id))]

    # -- participants ---------------------------------------------------------

    @at_the_edge
    async def add_participants_room(self, entity_ids: Sequence[str], room_id: str) -> bool:
        """Add entities to a room; those already in it are left as they are."""
        room_id = check_id(room_id, "room_id")
        entity_ids = [check_id(e, "entity_ids") for e in entity_ids]
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

    @at_the_edge
    async def remove_participant(self, entity_id: str, room_id: str) -> bool:
        """Take an entity out of a room; False if it was not in it."""
        async with self._tx() as s:
            done = await s.execute(
                delete(ParticipantRow).where(*self._participant(room_id, entity_id))
            )
            return _changed(done)

    @at_the_edge
    async def is_room_participant(self, room_id: str, entity_id: str) -> bool:
        """Say whether an entity takes part in a room."""
        async with self._tx(write=False) as s:
            found = await s.scalar(
                select(ParticipantRow.id).where(*self._participant(room_id, entity_id))
            )
            return found is not None

    def _participant(self, room_id: str, entity_id: str) -> tuple[ColumnElement[bool], ...]:
        return (
            ParticipantRow.room_id == room_id,
            ParticipantRow.entity_id == entity_id,
            ParticipantRow.agent_id == self.agent_id,
        )

    @at_the_edge
    async def get_participants_for_room(self, room_id: str) -> list[str]:
        """Return the ids of the entities in a room."""
        async with self._tx(write=False) as s:
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

    @at_the_edge
    async def get_participant_user_state(
        self, room_id: str, entity_id: str
    ) -> ParticipantState | None:
        """Return FOLLOWED, MUTED or None."""
        async with self._tx(write=False) as s:
            state = await s.scalar(
                select(ParticipantRow.room_state).where(
                    ParticipantRow.room_id == room_id,
                    ParticipantRow.entity_id == entity_id,
                    ParticipantRow.agent_id == self.agent_id,
                )
            )
        return ParticipantState(state) if state else None

    @at_the_edge
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
            if not _changed(done):
                raise NotFound(f"entity {entity_id} is not a participant of room {room_id}")

    # -- relationships --------------------------------------------------------

    @at_the_edge
    async def create_relationship(self, relationship: Relationship) -> bool:
        """Store a relationship; False if the pair is already linked for this agent."""
        try:
            async with self._tx() as s:
                s.add(_row(RelationshipRow, relationship, agent_id=self.agent_id))
        except Conflict:
            return False
        return True

    @at_the_edge
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
            if not _changed(done):
                raise NotFound("no relationship between these entities")

    @at_the_edge
    async def get_relationships(
        self, entity_id: str, tags: Sequence[str] | None = None
    ) -> list[Relationship]:
        """Return the links from or to ``entity_id`` carrying every one of ``tags``."""
        async with self._tx(write=False) as s:
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

    @at_the_edge
    async def create_task(self, task: Task) -> str:
        """Store a task and return its id."""
        async with self._tx() as s:
            s.add(_row(TaskRow, task, agent_id=self.agent_id))
        return task.id

    @at_the_edge
    async def get_task(self, task_id: str) -> Task | None:
        """Return the task, or None."""
        found = await self._tasks(TaskRow.id == task_id)
        return found[0] if found else None

    @at_the_edge
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

    @at_the_edge
    async def get_tasks_by_name(self, name: str) -> list[Task]:
        """Return the tasks called ``name``, oldest first."""
        return await self._tasks(TaskRow.name == name)

    async def _tasks(self, *conditions: ColumnElement[bool]) -> list[Task]:
        async with self._tx(write=False) as s:
            rows = await s.scalars(
                select(TaskRow)
                .where(TaskRow.agent_id == self.agent_id, *conditions)
                .order_by(TaskRow.created_at, TaskRow.id)
            )
            return [_record(Task, r) for r in rows]

    @at_the_edge
    async def update_task(self, task: Task) -> None:
        """Replace a task's fields (``updated_at`` is set now), or raise ``NotFound``."""
        async with self._tx() as s:
            row = await s.get(TaskRow, (task.id, self.agent_id))
            if row is None:
                raise NotFound(f"task {task.id} does not exist")
            await s.merge(
                _row(
                    TaskRow,
                    task,
                    agent_id=self.agent_id,
                    created_at=row.created_at,
                    updated_at=now_ms(),
                    claimed_until=None,  # a task written anew is free to run again
                )
            )

    @at_the_edge
    async def claim_task(self, task_id: str, updated_at: int, claimed_until: int) -> bool:
        """Take the task for one run, until ``claimed_until`` (ms); False if another has it.

        Atomic (one conditional UPDATE): the claim holds only if the task is
        still as read (its ``updated_at``) and nobody holds it now, so of the
        processes hosting the agent, one runs it. ``update_task`` and
        ``delete_task`` end the claim; a process that dies holding it loses it
        at ``claimed_until``.
        """
        now = now_ms()
        async with self._tx() as s:
            done = await s.execute(
                update(TaskRow)
                .where(
                    TaskRow.id == task_id,
                    TaskRow.agent_id == self.agent_id,
                    TaskRow.updated_at == updated_at,
                    TaskRow.claimed_until.is_(None) | (TaskRow.claimed_until <= now),
                )
                .values(claimed_until=claimed_until)
            )
            return _changed(done)

    @at_the_edge
    async def delete_task(self, task_id: str) -> None:
        """Delete one task."""
        async with self._tx() as s:
            await s.execute(
                delete(TaskRow).where(TaskRow.id == task_id, TaskRow.agent_id == self.agent_id)
            )

    # -- logs -----------------------------------------------------------------

    @at_the_edge
    async def log(self, entry: Log) -> None:
        """Append an audit row."""
        async with self._connection() as c:
            await c.run(_LOG, _values(LogRow, entry, agent_id=self.agent_id))

    @at_the_edge
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
        async with self._tx(write=False) as s:
            return [_record(Log, r) for r in await s.scalars(query)]

    @at_the_edge
    async def delete_log(self, log_id: str) -> None:
        """Delete one audit row."""
        async with self._tx() as s:
            await s.execute(
                delete(LogRow).where(LogRow.id == log_id, LogRow.agent_id == self.agent_id)
            )

    # -- cache ----------------------------------------------------------------

    @at_the_edge
    async def get_cache(self, key: str) -> object:
        """Return the cached JSON value, or None when absent or expired."""
        async with self._connection(write=False) as c:
            found = await c.rows(_CACHE_VALUE, {"agent_id": self.agent_id, "key": key})
        if not found:
            return None
        expires_at = found[0]["expires_at"]
        if isinstance(expires_at, int) and expires_at <= now_ms():
            return None
        return found[0]["value"]

    @at_the_edge
    async def set_cache(self, key: str, value: object, expires_at: int | None = None) -> bool:
        """Store a JSON value under ``key``, replacing any previous one."""
        if not 0 < len(key) <= _KEY_LENGTH:
            raise BadRequest(
                f"key must have 1 to {_KEY_LENGTH} characters; got {len(key)}",
                details={"field": "key", "rule": f"length 1 to {_KEY_LENGTH}"},
            )
        async with self._connection() as c:
            await c.run(
                self._writes.cache,
                {"key": key, "agent_id": self.agent_id, "value": value, "expires_at": expires_at},
            )
        return True

    @at_the_edge
    async def delete_cache(self, key: str) -> bool:
        """Delete a cached value; False if there was none."""
        async with self._tx() as s:
            done = await s.execute(
                delete(CacheRow).where(CacheRow.key == key, CacheRow.agent_id == self.agent_id)
            )
            return _changed(done)

    # -- turns ----------------------------------------------------------------

    @at_the_edge
    async def begin_turn(
        self,
        message: Memory,
        connection: Connection,
        recent_count: int = 32,
        outcome_key: str | None = None,
        cache_keys: Sequence[str] | None = None,
    ) -> TurnContext:
        """Set up and read what the turn of ``message`` needs, in one transaction.

        Creates what is missing, as ``connection`` describes it: the sender
        entity (a known one gets the new names, and ``entity_metadata`` merged
        under ``source``), the world (id: ``message.world_id`` or the room id),
        the room, and the sender and the agent as participants. Stores
        ``message`` in 'messages' unless its id exists (``message_stored``
        False then). Reads the room and its world, the participants and their
        entities, the ``recent_count`` newest messages of the room (without
        vectors; their authors' entities too), the agent's state in the room,
        the room's tasks, and the cache values under ``outcome_key`` and
        ``cache_keys``.

        Raises:
            NotFound: the agent does not exist.
            DimensionMismatch: ``message`` carries a vector of another size than
                the agent's (nothing is written).
        """
        room_id, sender = message.room_id, message.entity_id
        keys = [*([outcome_key] if outcome_key is not None else []), *(cache_keys or ())]
        bound = {"agent_id": self.agent_id, "room_id": room_id}
        async with self._connection() as c:
            agents = await c.rows(_AGENT, bound)
            if not agents:
                raise NotFound(f"agent {self.agent_id} does not exist; create it first")
            members = await c.rows(_MEMBERS, bound)
            participants = [m["entity_id"] for m in members]
            state = next(
                (m["room_state"] for m in members if m["entity_id"] == self.agent_id), None
            )
            known = {e["id"]: e for m in members if (e := _part(m, _ENTITIES)) is not None}
            entities = {i: _from_row(Entity, row) for i, row in known.items()}
            entities[sender] = await self._ensure_sender(c, sender, connection, known.get(sender))
            room, world, world_created, room_created = await self._ensure_room(
                c, message, connection
            )
            if missing := [
                e for e in dict.fromkeys([sender, self.agent_id]) if e not in participants
            ]:
                await c.run(
                    self._writes.participants,
                    [
                        {"entity_id": e, "room_id": room_id, "agent_id": self.agent_id}
                        for e in missing
                    ],
                )
                participants += missing
            stored = await self._store_memories(c, [(message, _MESSAGES)])
            recent = [
                _from_row(Memory, row)
                for row in await c.rows(_RECENT_MESSAGES, {**bound, "count": recent_count})
            ]
            wanted = list(dict.fromkeys([*participants, *(m.entity_id for m in recent)]))
            if lacking := [i for i in wanted if i not in entities]:
                found = await c.rows(_ENTITIES_BY_IDS, {**bound, "ids": lacking})
                entities.update((row["id"], _from_row(Entity, row)) for row in found)
            cached = await self._cached(c, keys) if keys else {}
            tasks = await c.rows(_ROOM_TASKS, bound)
            return TurnContext(
                agent=_from_row(Agent, agents[0]),
                room=_from_row(Room, room),
                world=_from_row(World, world) if world is not None else None,
                participants=participants,
                entities=[entities[i] for i in wanted if i in entities],
                recent_messages=recent,
                participant_state=ParticipantState(state) if state else None,
                message_stored=message.id in stored,
                outcome=cached.get(outcome_key) if outcome_key is not None else None,
                cache={k: cached[k] for k in cache_keys or () if k in cached},
                tasks=[_from_row(Task, row) for row in tasks],
                world_created=world_created,
                room_created=room_created,
                participants_added=missing,
            )

    async def _ensure_sender(
        self,
        c: _Tx,
        entity_id: str,
        connection: Connection,
        row: _Columns | None,
    ) -> Entity:
        """Create the sender, or add the connection's new names and metadata to it."""
        bound = {"agent_id": self.agent_id, "ids": [entity_id]}
        if row is None:
            row = next(iter(await c.rows(_ENTITIES_BY_IDS, bound)), None)
        if row is None:
            entity = Entity(
                id=entity_id,
                names=list(connection.entity_names) or [entity_id],
                agent_id=self.agent_id,
                metadata={connection.source: dict(connection.entity_metadata)},
            )
            if await c.rows(self._writes.entities, _values(EntityRow, entity)):
                return entity
            # A replica was first.
            row = next(iter(await c.rows(_ENTITIES_BY_IDS, bound)), None)
            if row is None:
                raise Conflict(f"entity {entity_id} was deleted while being created; retry")
        stored = _from_row(Entity, row)
        names = list(dict.fromkeys([*stored.names, *connection.entity_names]))
        metadata = stored.metadata
        if connection.entity_metadata:
            platform = metadata.get(connection.source)
            merged = {
                **(platform if isinstance(platform, dict) else {}),
                **connection.entity_metadata,
            }
            metadata = {**metadata, connection.source: merged}
        if names != stored.names or metadata != stored.metadata:
            await c.run(
                _RENAME_ENTITY,
                {
                    "the_id": entity_id,
                    "the_agent": self.agent_id,
                    "new_names": names,
                    "new_metadata": metadata,
                },
            )
        return msgspec.structs.replace(stored, names=names, metadata=metadata)

    async def _ensure_room(
        self, c: _Tx, message: Memory, connection: Connection
    ) -> tuple[dict[str, object], dict[str, object] | None, bool, bool]:
        """Create the message's world and room if missing.

        Returns the room, its world, and whether this call stored the world
        and the room (the turn announces what it stored: WORLD_JOINED, ROOM_JOINED).
        """
        world_id = message.world_id or message.room_id
        place = await self._room_and_world(c, message.room_id)
        if place is not None and place[1] is not None and place[1]["id"] == world_id:
            return (*place, False, False)
        world = World(
            id=world_id,
            name=connection.world_name or world_id,
            message_server_id=connection.message_server_id,
        )
        world_created = bool(
            await c.rows(self._writes.worlds, _values(WorldRow, world, agent_id=self.agent_id))
        )
        room_created = False
        if place is None:
            room = Room(
                id=message.room_id,
                name=connection.room_name or message.room_id,
                source=connection.source,
                type=connection.room_type,
                channel_id=connection.channel_id,
                message_server_id=connection.message_server_id,
                world_id=world_id,
            )
            room_created = bool(
                await c.rows(self._writes.rooms, _values(RoomRow, room, agent_id=self.agent_id))
            )
        place = await self._room_and_world(c, message.room_id)
        if place is None:
            raise Conflict(f"room {message.room_id} was deleted while being created; retry")
        # No row from RETURNING: the row existed (or a replica stored it first).
        return (*place, world_created, room_created)

    async def _room_and_world(
        self, c: _Tx, room_id: str
    ) -> tuple[dict[str, object], dict[str, object] | None] | None:
        found = await c.rows(_ROOM_AND_WORLD, {"agent_id": self.agent_id, "room_id": room_id})
        room = _part(found[0], _ROOMS) if found else None
        return (room, _part(found[0], _WORLDS)) if found and room is not None else None

    async def _cached(self, c: _Tx, keys: Sequence[str]) -> dict[str, object]:
        """Return the values under ``keys`` that exist and have not expired."""
        now = now_ms()
        rows = await c.rows(_CACHED, {"agent_id": self.agent_id, "keys": list(keys)})
        return {
            r["key"]: r["value"] for r in rows if r["expires_at"] is None or r["expires_at"] > now
        }

    @at_the_edge
    async def commit_turn(self, commit: TurnCommit) -> None:
        """Write what one turn produced in one transaction: all of it, or nothing.

        Memories go to 'messages' and facts to 'facts' as ``create_memories``
        stores them (ids that exist are left as they are); logs are appended
        (a log id that exists is kept); cache entries replace the keys' values;
        a relationship is created, or replaces the tags and metadata of the
        link between the same source and target.

        Raises:
            DimensionMismatch: a vector of another size than the agent's.
            Conflict: a memory of an agent that does not exist.
        """
        async with self._connection() as c:
            await self._store_memories(
                c,
                [
                    *((m, _MESSAGES) for m in commit.memories),
                    *((m, _FACTS) for m in commit.facts),
                ],
            )
            if commit.logs:
                await c.run(
                    self._writes.logs,
                    [_values(LogRow, entry, agent_id=self.agent_id) for entry in commit.logs],
                )
            if commit.cache:
                await c.run(
                    self._writes.cache,
                    [
                        {
                            "key": e.key,
                            "agent_id": self.agent_id,
                            "value": e.value,
                            "expires_at": e.expires_at,
                        }
                        for e in {e.key: e for e in commit.cache}.values()
                    ],
                )
            if commit.relationships:
                links = {(r.source_entity_id, r.target_entity_id): r for r in commit.relationships}
                await c.run(
                    self._writes.relationships,
                    [_values(RelationshipRow, r, agent_id=self.agent_id) for r in links.values()],
                )


# Records and rows share field names, except ``metadata``, which SQLAlchemy's
# declarative base reserves; it is the column attribute ``metadata_``.
_COLUMN_OF = {"metadata": "metadata_"}

RowT = TypeVar("RowT", bound=Base)
RecordT = TypeVar("RecordT", bound=msgspec.Struct)


def _row(row_type: type[RowT], record: msgspec.Struct, **columns: object) -> RowT:
    """Return a new row holding ``record``'s fields (as JSON-able values) plus ``columns``."""
    mapped = set(row_type.__mapper__.attrs.keys())
    values = msgspec.to_builtins(msgspec.structs.asdict(record))
    fields = {_COLUMN_OF.get(k, k): v for k, v in values.items()}
    kept = {k: v for k, v in {**fields, **columns}.items() if k in mapped}
    _check_sizes(row_type, kept)
    return row_type(**kept)


def _record(record_type: type[RecordT], row: Base, **fields: object) -> RecordT:
    """Return ``row`` as a validated ``record_type``; ``fields`` add what the row lacks."""
    mapped = set(type(row).__mapper__.attrs.keys())
    values = {
        name: getattr(row, _COLUMN_OF.get(name, name))
        for name in record_type.__struct_fields__
        if _COLUMN_OF.get(name, name) in mapped
    }
    return msgspec.convert({**values, **fields}, record_type)


def _from_row(record_type: type[RecordT], row: _Columns, **fields: object) -> RecordT:
    """Return a Core row (by column key) as a validated ``record_type``; ``fields`` add to it."""
    values = {name: row[name] for name in record_type.__struct_fields__ if name in row}
    return msgspec.convert({**values, **fields}, record_type)


@cache
def _column_keys(row_type: type[Base]) -> dict[str, str]:
    """The column key of each of ``row_type``'s attributes (``metadata_``: ``metadata``)."""
    return {a.key: a.columns[0].key for a in row_type.__mapper__.column_attrs}


@cache
def _sizes(row_type: type[Base]) -> tuple[tuple[str, int], ...]:
    """The attributes of ``row_type`` holding a text of limited size, and the size."""
    return tuple(
        (attribute.key, size)
        for attribute in row_type.__mapper__.column_attrs
        if (size := getattr(attribute.columns[0].type, "length", None)) is not None
    )


def _values(row_type: type[Base], record: msgspec.Struct, **columns: object) -> dict[str, object]:
    """Return ``record``'s fields (as JSON-able values) plus ``columns``, by column key.

    The parameters of a Core ``INSERT`` into ``row_type``'s table.
    """
    key_of = _column_keys(row_type)
    fields = {
        _COLUMN_OF.get(name, name): value
        for name, value in msgspec.structs.asdict(record).items()
        if _COLUMN_OF.get(name, name) in key_of
    }
    values: dict[str, object] = msgspec.to_builtins({**fields, **columns})
    _check_sizes(row_type, values)
    return {key_of[name]: value for name, value in values.items() if name in key_of}


def _check_sizes(row_type: type[Base], values: Mapping[str, object]) -> None:
    """Refuse a text longer than its column, by attribute name (Postgres refuses it, SQLite not).

    Raises:
        BadRequest: naming the field and its limit; nothing is written.
    """
    for key, size in _sizes(row_type):
        value = values.get(key)
        if isinstance(value, str) and len(value) > size:
            field = next((k for k, v in _COLUMN_OF.items() if v == key), key)
            raise BadRequest(
                f"{field} must have at most {size} characters; got {len(value)}",
                details={"field": field, "rule": f"length <= {size}"},
            )


def _conflict() -> Conflict:
    """The error of a transaction that broke a constraint (never the SQL text)."""
    return Conflict(
        "the change conflicts with stored data: a duplicate id, or a reference "
        "to an agent, room or memory that does not exist"
    )


def _changed(done: Result[TupleAny]) -> bool:
    """Whether an UPDATE or DELETE touched a row (its ``CursorResult.rowcount``)."""
    if not isinstance(done, CursorResult):
        raise TypeError(f"an UPDATE or DELETE returns a CursorResult, not {type(done).__name__}")
    return bool(done.rowcount)


def _embedding_row(memory_id: str, agent_id: str, vector: Sequence[float]) -> EmbeddingRow:
    return EmbeddingRow(
        memory_id=memory_id, agent_id=agent_id, dim=len(vector), vector=to_bytes(vector)
    )


def _embedding_of_memory() -> ColumnElement[bool]:
    """The join condition of a memory and its vector (both keyed per agent)."""
    return (EmbeddingRow.memory_id == MemoryRow.id) & (EmbeddingRow.agent_id == MemoryRow.agent_id)
