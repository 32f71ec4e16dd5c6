"""Rooms and worlds per agent: keyed by (id, agent_id), so two agents' room 'general' are two.

Existing data is kept: a room (or world) another agent also used (it has
participants or memories there, or rooms in that world) is copied for that
agent, so each agent keeps what it saw. Going down keeps one row per id.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_NAMING = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}


def _key(table: str, *, per_agent: bool) -> sa.PrimaryKeyConstraint:
    """The primary key; named by its columns, as the old table's still exists beside it."""
    if per_agent:
        return sa.PrimaryKeyConstraint("id", "agent_id", name=f"pk_{table}_per_agent")
    return sa.PrimaryKeyConstraint("id", name=f"pk_{table}_by_id")


def _rooms(name: str, *, per_agent: bool) -> None:
    op.create_table(
        name,
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("agent_id", sa.String(length=64), nullable=not per_agent),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("channel_id", sa.String(length=255), nullable=True),
        sa.Column("message_server_id", sa.String(length=255), nullable=True),
        sa.Column("world_id", sa.String(length=64), nullable=True),
        sa.Column("metadata", _JSON, nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], ondelete="CASCADE"),
        _key("rooms", per_agent=per_agent),
    )


def _worlds(name: str, *, per_agent: bool) -> None:
    op.create_table(
        name,
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("agent_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("message_server_id", sa.String(length=255), nullable=True),
        sa.Column("metadata", _JSON, nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], ondelete="CASCADE"),
        _key("worlds", per_agent=per_agent),
    )


def _replace(table: str, create: Callable[[str], None], copy: Sequence[str]) -> None:
    """Create the new ``table`` beside the old, run the ``copy`` statements, then swap them."""
    new = f"{table}_new"
    create(new)
    for statement in copy:
        op.execute(statement.format(new=new))
    op.drop_table(table)
    op.rename_table(new, table)


def _drop_room_reference() -> None:
    """Drop the participants' foreign key to rooms, whatever it is called."""
    for key in sa.inspect(op.get_bind()).get_foreign_keys("participants"):
        if key["referred_table"] == "rooms":
            with op.batch_alter_table("participants", naming_convention=_NAMING) as batch_op:
                batch_op.drop_constraint(
                    key["name"] or "fk_participants_room_id_rooms", type_="foreignkey"
                )


def upgrade() -> None:
    """Apply this revision."""
    _drop_room_reference()
    _replace(
        "rooms",
        lambda name: _rooms(name, per_agent=True),
        [
            "INSERT INTO {new} "
            "(id, agent_id, name, source, type, channel_id, message_server_id, world_id, metadata) "
            "SELECT id, agent_id, name, source, type, channel_id, message_server_id, world_id, "
            "metadata FROM rooms WHERE agent_id IS NOT NULL",
            # A room another agent took part in (or kept memories of) becomes its own too.
            "INSERT INTO {new} "
            "(id, agent_id, name, source, type, channel_id, message_server_id, world_id, metadata) "
            "SELECT r.id, u.agent_id, r.name, r.source, r.type, r.channel_id, "
            "r.message_server_id, r.world_id, r.metadata FROM rooms r "
            "JOIN (SELECT room_id, agent_id FROM participants "
            "UNION SELECT room_id, agent_id FROM memories) u ON u.room_id = r.id "
            "WHERE NOT EXISTS "
            "(SELECT 1 FROM {new} n WHERE n.id = r.id AND n.agent_id = u.agent_id)",
        ],
    )
    with op.batch_alter_table("rooms", schema=None) as batch_op:
        batch_op.create_index("ix_rooms_world", ["world_id"], unique=False)
    _replace(
        "worlds",
        lambda name: _worlds(name, per_agent=True),
        [
            "INSERT INTO {new} (id, agent_id, name, message_server_id, metadata) "
            "SELECT id, agent_id, name, message_server_id, metadata FROM worlds",
            # A world another agent has rooms in becomes its own too.
            "INSERT INTO {new} (id, agent_id, name, message_server_id, metadata) "
            "SELECT w.id, r.agent_id, w.name, w.message_server_id, w.metadata FROM worlds w "
            "JOIN (SELECT DISTINCT world_id, agent_id FROM rooms) r ON r.world_id = w.id "
            "WHERE NOT EXISTS "
            "(SELECT 1 FROM {new} n WHERE n.id = w.id AND n.agent_id = r.agent_id)",
        ],
    )
    with op.batch_alter_table("participants", schema=None) as batch_op:
        batch_op.create_foreign_key(
            "fk_participants_room",
            "rooms",
            ["room_id", "agent_id"],
            ["id", "agent_id"],
            ondelete="CASCADE",
        )


def downgrade() -> None:
    """Revert this revision (one row per id is kept: the one of the smallest agent id)."""
    _drop_room_reference()
    _replace(
        "rooms",
        lambda name: _rooms(name, per_agent=False),
        [
            "INSERT INTO {new} "
            "(id, agent_id, name, source, type, channel_id, message_server_id, world_id, metadata) "
            "SELECT id, agent_id, name, source, type, channel_id, message_server_id, world_id, "
            "metadata FROM rooms r "
            "WHERE r.agent_id = (SELECT MIN(o.agent_id) FROM rooms o WHERE o.id = r.id)",
        ],
    )
    with op.batch_alter_table("rooms", schema=None) as batch_op:
        batch_op.create_index("ix_rooms_world", ["world_id"], unique=False)
    _replace(
        "worlds",
        lambda name: _worlds(name, per_agent=False),
        [
            "INSERT INTO {new} (id, agent_id, name, message_server_id, metadata) "
            "SELECT id, agent_id, name, message_server_id, metadata FROM worlds w "
            "WHERE w.agent_id = (SELECT MIN(o.agent_id) FROM worlds o WHERE o.id = w.id)",
        ],
    )
    op.execute(
        "DELETE FROM participants WHERE NOT EXISTS "
        "(SELECT 1 FROM rooms r WHERE r.id = participants.room_id)"
    )
    with op.batch_alter_table("participants", schema=None) as batch_op:
        batch_op.create_foreign_key(
            "participants_room_id_fkey", "rooms", ["room_id"], ["id"], ondelete="CASCADE"
        )
