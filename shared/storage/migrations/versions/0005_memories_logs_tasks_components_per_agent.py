"""Memories (with vectors), logs, tasks, components, relationships: keyed by (id, agent_id).

The same message id sent to two agents is then two memories, and no agent
reads, changes or deletes another's row by id. Tasks get ``claimed_until``
(ms): a process running a task holds it until then, so it runs once per stack.

Ids were unique before, so going up copies every row as it is (a vector takes
its memory's agent). Going down keeps one row per id: the one of the smallest
agent id, with its vector.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")

_INDEXES: dict[str, list[tuple[str, list[str]]]] = {
    "memories": [
        ("ix_memories_agent_type_room_created", ["agent_id", "type", "room_id", "created_at"]),
        ("ix_memories_world", ["world_id"]),
    ],
    "logs": [("ix_logs_agent_type_created", ["agent_id", "type", "created_at"])],
    "components": [("ix_components_agent_entity_type", ["agent_id", "entity_id", "type"])],
    "tasks": [("ix_tasks_agent_name", ["agent_id", "name"])],
}


def _agent() -> sa.ForeignKeyConstraint:
    """The reference to the agent that owns the row (a new one per table)."""
    return sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], ondelete="CASCADE")


def _key(table: str, *, per_agent: bool, column: str = "id") -> sa.PrimaryKeyConstraint:
    """The primary key; named by its columns, as the old table's still exists beside it."""
    if per_agent:
        return sa.PrimaryKeyConstraint(column, "agent_id", name=f"pk_{table}_per_agent")
    return sa.PrimaryKeyConstraint(column, name=f"pk_{table}_by_id")


def _memories(name: str, *, per_agent: bool) -> None:
    op.create_table(
        name,
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("agent_id", sa.String(length=64), nullable=False),
        sa.Column("entity_id", sa.String(length=64), nullable=False),
        sa.Column("room_id", sa.String(length=64), nullable=False),
        sa.Column("world_id", sa.String(length=64), nullable=True),
        sa.Column("content", _JSON, nullable=False),
        sa.Column("metadata", _JSON, nullable=False),
        sa.Column("unique", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        _agent(),
        _key("memories", per_agent=per_agent),
    )


def _embeddings(name: str, memories: str, *, per_agent: bool) -> None:
    if per_agent:
        op.create_table(
            name,
            sa.Column("memory_id", sa.String(length=64), nullable=False),
            sa.Column("agent_id", sa.String(length=64), nullable=False),
            sa.Column("dim", sa.Integer(), nullable=False),
            sa.Column("vector", sa.LargeBinary(), nullable=False),
            sa.ForeignKeyConstraint(
                ["memory_id", "agent_id"],
                [f"{memories}.id", f"{memories}.agent_id"],
                name="fk_embeddings_memory",
                ondelete="CASCADE",
            ),
            _agent(),
            _key("embeddings", per_agent=True, column="memory_id"),
        )
        return
    op.create_table(
        name,
        sa.Column("memory_id", sa.String(length=64), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["memory_id"], [f"{memories}.id"], ondelete="CASCADE"),
        _key("embeddings", per_agent=False, column="memory_id"),
    )


def _logs(name: str, *, per_agent: bool) -> None:
    op.create_table(
        name,
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("agent_id", sa.String(length=64), nullable=False),
        sa.Column("entity_id", sa.String(length=64), nullable=False),
        sa.Column("room_id", sa.String(length=64), nullable=True),
        sa.Column("type", sa.String(length=128), nullable=False),
        sa.Column("body", _JSON, nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        _agent(),
        _key("logs", per_agent=per_agent),
    )


def _components(name: str, *, per_agent: bool) -> None:
    op.create_table(
        name,
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("agent_id", sa.String(length=64), nullable=False),
        sa.Column("entity_id", sa.String(length=64), nullable=False),
        sa.Column("room_id", sa.String(length=64), nullable=True),
        sa.Column("world_id", sa.String(length=64), nullable=True),
        sa.Column("source_entity_id", sa.String(length=64), nullable=True),
        sa.Column("type", sa.String(length=128), nullable=False),
        sa.Column("data", _JSON, nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        _agent(),
        _key("components", per_agent=per_agent),
    )


def _relationships(name: str, *, per_agent: bool) -> None:
    op.create_table(
        name,
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("source_entity_id", sa.String(length=64), nullable=False),
        sa.Column("target_entity_id", sa.String(length=64), nullable=False),
        sa.Column("agent_id", sa.String(length=64), nullable=False),
        sa.Column("tags", _JSON, nullable=False),
        sa.Column("metadata", _JSON, nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        _agent(),
        _key("relationships", per_agent=per_agent),
        sa.UniqueConstraint("source_entity_id", "target_entity_id", "agent_id"),
    )


def _tasks(name: str, *, per_agent: bool) -> None:
    claim = [sa.Column("claimed_until", sa.BigInteger(), nullable=True)] if per_agent else []
    op.create_table(
        name,
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("agent_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("room_id", sa.String(length=64), nullable=True),
        sa.Column("world_id", sa.String(length=64), nullable=True),
        sa.Column("entity_id", sa.String(length=64), nullable=True),
        sa.Column("tags", _JSON, nullable=False),
        sa.Column("metadata", _JSON, nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        *claim,
        _agent(),
        _key("tasks", per_agent=per_agent),
    )


_COLUMNS = {
    "memories": "id, type, agent_id, entity_id, room_id, world_id, content, metadata, "
    '"unique", created_at',
    "logs": "id, agent_id, entity_id, room_id, type, body, created_at",
    "components": "id, agent_id, entity_id, room_id, world_id, source_entity_id, type, data, "
    "created_at",
    "tasks": "id, agent_id, name, description, room_id, world_id, entity_id, tags, metadata, "
    "created_at, updated_at",
    "relationships": "id, source_entity_id, target_entity_id, agent_id, tags, metadata, created_at",
}
_CREATE: dict[str, Callable[..., None]] = {
    "logs": _logs,
    "components": _components,
    "tasks": _tasks,
    "relationships": _relationships,
}
# Going down, one row per id: the one of the smallest agent id.
_FIRST = "WHERE t.agent_id = (SELECT MIN(o.agent_id) FROM {table} o WHERE o.id = t.id)"


def _copy(table: str, keep: str) -> str:
    """The INSERT of ``table``'s rows (those ``keep`` selects) into ``<table>_new``."""
    columns, where = _COLUMNS[table], keep.format(table=table)
    return f"INSERT INTO {table}_new ({columns}) SELECT {columns} FROM {table} t {where}"  # noqa: S608 - our constants


def _swap(table: str) -> None:
    """Put ``<table>_new`` in the place of ``table``, with the table's indexes."""
    op.drop_table(table)
    op.rename_table(f"{table}_new", table)
    for name, columns in _INDEXES.get(table, []):
        op.create_index(name, table, columns, unique=False)


def _move(*, per_agent: bool) -> None:
    """Copy every table into its new form, then swap them (vectors before their memories)."""
    keep = "" if per_agent else _FIRST
    _memories("memories_new", per_agent=per_agent)
    op.execute(_copy("memories", keep))
    _embeddings("embeddings_new", "memories_new", per_agent=per_agent)
    if per_agent:
        op.execute(
            "INSERT INTO embeddings_new (memory_id, agent_id, dim, vector) "
            "SELECT e.memory_id, m.agent_id, e.dim, e.vector "
            "FROM embeddings e JOIN memories m ON m.id = e.memory_id"
        )
    else:
        op.execute(
            "INSERT INTO embeddings_new (memory_id, dim, vector) "
            "SELECT e.memory_id, e.dim, e.vector FROM embeddings e "
            "JOIN memories_new m ON m.id = e.memory_id AND m.agent_id = e.agent_id"
        )
    op.drop_table("embeddings")
    _swap("memories")
    op.rename_table("embeddings_new", "embeddings")
    for table, create in _CREATE.items():
        create(f"{table}_new", per_agent=per_agent)
        op.execute(_copy(table, keep))
        _swap(table)


def upgrade() -> None:
    """Apply this revision."""
    _move(per_agent=True)


def downgrade() -> None:
    """Revert this revision (one row per id is kept: the one of the smallest agent id)."""
    _move(per_agent=False)
