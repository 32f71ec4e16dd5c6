"""Alembic environment: migrations run on the connection that ``shared.storage.migrate`` passes."""

from alembic import context

from shared.storage.tables import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,  # SQLite can only alter tables by copying them
)
with context.begin_transaction():
    context.run_migrations()
