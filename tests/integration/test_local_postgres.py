"""With no ``DATABASE_URL``, the tests use the Postgres on localhost in a database of their own."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import local_postgres_database, unavailable


async def database_exists(url: str) -> bool:
    parsed = make_url(url)
    connection = await asyncpg.connect(
        host=parsed.host,
        port=parsed.port,
        user=parsed.username,
        password=parsed.password,
        database="postgres",
        timeout=5,
    )
    try:
        found = await connection.fetchval(
            "select 1 from pg_database where datname = $1", parsed.database
        )
    finally:
        await connection.close()
    return bool(found == 1)


async def test_a_throwaway_database_is_created_for_the_tests_and_dropped_after() -> None:
    with local_postgres_database() as url:
        if url is None:
            unavailable("no Postgres answers on localhost (PGHOST/PGPORT/PGUSER)")
        assert (make_url(url).database or "").startswith("elizamesh_test_")
        assert make_url(url).drivername == "postgresql+asyncpg"
        assert await database_exists(url)
        connection = await asyncpg.connect(url.replace("+asyncpg", ""), timeout=5)
        assert await connection.fetchval("select current_database()") == make_url(url).database
        await connection.close()
    assert not await database_exists(url)


def test_no_postgres_on_the_given_port_yields_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPORT", "1")
    with local_postgres_database() as url:
        assert url is None
