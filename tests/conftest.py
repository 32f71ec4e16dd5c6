"""Server fixtures shared by every test folder.

``NATS_URL`` and ``DATABASE_URL`` point the tests at existing servers. Without
them, a nats-server is started from the bundled binary; for Postgres, one that
answers on localhost (``PGHOST``/``PGPORT``/``PGUSER``/``PGPASSWORD``, default
``postgres@127.0.0.1:5432``) gets a throwaway database, created for the session
and dropped after it, else one is started through testcontainers when a Docker
engine answers. Under ``CI=true`` a server that cannot be had fails the run
instead of skipping.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn, TypeVar
from urllib.parse import quote

import asyncpg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from contracts import Subjects
from shared.natsserver import NatsServer

IN_CI = os.environ.get("CI", "").lower() == "true"


def _unavailable(what: str) -> NoReturn:
    unavailable(f"{what} is not available; set the URL to run this test")


def unavailable(message: str) -> NoReturn:
    """Skip a test whose server or tool is missing; under ``CI=true``, fail it instead."""
    if IN_CI:
        pytest.fail(f"{message}, and CI=true requires it")
    pytest.skip(message)


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    """URL of a real nats-server with JetStream."""
    if url := os.environ.get("NATS_URL"):
        yield url
        return
    with NatsServer() as server:
        yield server.url


_T = TypeVar("_T")


def _run_apart(work: Coroutine[Any, Any, _T]) -> _T:
    # Session fixtures may first be asked for from inside a running test loop.
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(asyncio.run, work).result()


async def _connect_local(database: str) -> asyncpg.Connection:
    return await asyncpg.connect(
        host=os.environ.get("PGHOST", "127.0.0.1"),
        port=int(os.environ.get("PGPORT", "5432")),
        user=os.environ.get("PGUSER", "postgres"),
        password=os.environ.get("PGPASSWORD"),
        database=database,
        timeout=3,
    )


async def _admin(sql: str) -> None:
    connection = await _connect_local("postgres")
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@contextlib.contextmanager
def local_postgres_database() -> Iterator[str | None]:
    """A new database on the Postgres that answers on localhost, dropped on exit.

    Yields its ``postgresql+asyncpg://`` URL, or None when no Postgres answers there
    (or it refuses to create a database).
    """
    name = f"elizamesh_test_{uuid.uuid4().hex[:12]}"
    try:
        _run_apart(_admin(f'create database "{name}"'))
    except (OSError, TimeoutError, asyncpg.PostgresError):
        yield None
        return
    user = os.environ.get("PGUSER", "postgres")
    password = os.environ.get("PGPASSWORD")
    credentials = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
    host = os.environ.get("PGHOST", "127.0.0.1")
    port = os.environ.get("PGPORT", "5432")
    try:
        yield f"postgresql+asyncpg://{credentials}@{host}:{port}/{name}"
    finally:
        _run_apart(_admin(f'drop database if exists "{name}" with (force)'))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a real Postgres (``postgresql+asyncpg://``)."""
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith("postgres"):
        yield url
        return
    with local_postgres_database() as local:
        if local is not None:
            yield local
            return
    try:
        from testcontainers.postgres import PostgresContainer

        container = PostgresContainer("pgvector/pgvector:pg16", driver="asyncpg")
        container.start()
    except Exception:
        _unavailable("Postgres (DATABASE_URL unset, none on localhost, no Docker engine)")
        return
    try:
        yield container.get_connection_url()
    finally:
        container.stop()


@pytest.fixture
def subjects() -> Subjects:
    """Subjects in a namespace of this test's own, so tests never see each other's traffic."""
    return Subjects(f"t{uuid.uuid4().hex[:12]}")


@pytest.fixture
def recorded_spans() -> Iterator[InMemorySpanExporter]:
    """The spans this test makes, from the process's tracer provider (installed if none is)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    spans = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    yield spans
    spans.shutdown()  # the processor stays (providers cannot drop one); it keeps nothing more
