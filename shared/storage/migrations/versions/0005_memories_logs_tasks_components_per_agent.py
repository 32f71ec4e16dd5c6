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

from collections.abc import Sequence
from typing import Any

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


# Each moved table's columns in order, as (name, type, nullable); both the
# CREATE and the copy read them, so the two cannot disagree.
_S64 = sa.String(length=64)
_COLUMNS: dict[str, list[tuple[str, sa.types.TypeEngine[Any], bool]]] = {
    "memories": [
        ("id", _S64, False),
        ("type", _S64, False),
        ("agent_id", _S64, False),
        ("entity_id", _S64, False),
        ("room_id", _S64, False),
        ("world_id", _S64, True),
        ("content", _JSON, False),
        ("metadata", _JSON, False),
        ("unique", sa.Boolean(), False),
        ("created_at", sa.BigInteger(), False),
    ],
    "logs": [
        ("id", _S64, False),
        ("agent_id", _S64, False),
        ("entity_id", _S64, False),
        ("room_id", _S64, True),
        ("type", sa.String(length=128), False),
        ("body", _JSON, False),
        ("created_at", sa.BigInteger(), False),
    ],
    "components": [
        ("id", _S64, False),
        ("agent_id", _S64, False),
        ("entity_id", _S64, False),
        ("room_id", _S64, True),
        ("world_id", _S64, True),
        ("source_entity_id", _S64, True),
        ("type", sa.String(length=128), False),
        ("data", _JSON, False),
        ("created_at", sa.BigInteger(), False),
    ],
    "tasks": [
        ("id", _S64, False),
        ("agent_id", _S64, False),
        ("name", sa.String(length=255), False),
        ("description", sa.Text(), False),
        ("room_id", _S64, True),
        ("world_id", _S64, True),
        ("entity_id", _S64, True),
        ("tags", _JSON, False),
        ("metadata", _JSON, False),
        ("created_at", sa.BigInteger(), False),
        ("updated_at", sa.BigInteger(), False),
    ],
    "relationships": [
        ("id", _S64, False),
        ("source_entity_id", _S64, False),
        ("target_entity_id", _S64, False),
        ("agent_id", _S64, False),
        ("tags", _JSON, False),
        ("metadata", _JSON, False),
        ("created_at", sa.BigInteger(), False),
    ],
}


def _unique(table: str) -> list[sa.UniqueConstraint]:
    """The table's unique constraints beyond its key."""
    if table == "relationships":
        return [sa.UniqueConstraint("source_entity_id", "target_entity_id", "agent_id")]
    return []


def _create(table: str, *, per_agent: bool) -> None:
    """Create ``<table>_new`` in the form ``per_agent`` selects (True: this revision's)."""
    columns = [sa.Column(name, kind, nullable=null) for name, kind, null in _COLUMNS[table]]
    if table == "tasks" and per_agent:
        # New in this revision: nothing to copy going up, dropped going down.
        columns.append(sa.Column("claimed_until", sa.BigInteger(), nullable=True))
    # SQLAlchemy writes constraints in the order they were made: the agent's
    # reference, then the unique ones, as the tables have always been created.
    op.create_table(
        f"{table}_new", *columns, _agent(), _key(table, per_agent=per_agent), *_unique(table)
    )


def _embeddings(*, per_agent: bool) -> None:
    """Create ``embeddings_new``, each vector referencing its row of ``memories_new``."""
    # Per agent, a vector belongs to (memory, agent); before, to the memory alone.
    owner = ["memory_id", "agent_id"] if per_agent else ["memory_id"]
    memory = sa.ForeignKeyConstraint(
        owner,
        ["memories_new.id", "memories_new.agent_id"] if per_agent else ["memories_new.id"],
        name="fk_embeddings_memory" if per_agent else None,
        ondelete="CASCADE",
    )
    op.create_table(
        "embeddings_new",
        *[sa.Column(column, sa.String(length=64), nullable=False) for column in owner],
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        memory,
        *([_agent()] if per_agent else []),
        _key("embeddings", per_agent=per_agent, column="memory_id"),
    )


# Going down, one row per id: the one of the smallest agent id.
_FIRST = "WHERE t.agent_id = (SELECT MIN(o.agent_id) FROM {table} o WHERE o.id = t.id)"


def _copy(table: str, keep: str) -> str:
    """The INSERT of ``table``'s rows (those ``keep`` selects) into ``<table>_new``."""
    quote = op.get_context().dialect.identifier_preparer.quote  # "unique" is a keyword
    columns = ", ".join(quote(name) for name, _, _ in _COLUMNS[table])
    where = keep.format(table=table)
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
    _create("memories", per_agent=per_agent)
    op.execute(_copy("memories", keep))
    _embeddings(per_agent=per_agent)
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
    for table in ("logs", "components", "tasks", "relationships"):
        _create(table, per_agent=per_agent)
        op.execute(_copy(table, keep))
        _swap(table)


def upgrade() -> None:
    """Apply this revision."""
    _move(per_agent=True)


def downgrade() -> None:
    """Revert this revision (one row per id is kept: the one of the smallest agent id)."""
    _move(per_agent=False)
