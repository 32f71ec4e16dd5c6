"""The engine factory reaches a real Postgres and a SQLite file, with async drivers."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from shared.database import create_engine


async def test_the_engine_runs_a_query_on_postgres(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    try:
        async with engine.connect() as conn:
            version = (await conn.execute(text("select version()"))).scalar_one()
    finally:
        await engine.dispose()
    assert engine.dialect.driver == "asyncpg"
    assert str(version).startswith("PostgreSQL")


async def test_the_sqlite_engine_creates_its_folder_and_file(tmp_path: Path) -> None:
    database = tmp_path / "nested" / "agent.db"
    engine = create_engine(f"sqlite:///{database}")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("create table t (x integer)"))
            await conn.execute(text("insert into t values (41), (1)"))
            total = (await conn.execute(text("select sum(x) from t"))).scalar_one()
    finally:
        await engine.dispose()
    assert engine.dialect.driver == "aiosqlite"
    assert total == 42
    assert database.is_file()
