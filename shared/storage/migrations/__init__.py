"""Alembic migrations of the elizamesh schema (same revisions on SQLite and Postgres)."""
