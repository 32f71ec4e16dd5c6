"""Server fixtures shared by every test folder.

``NATS_URL`` and ``DATABASE_URL`` point the tests at existing servers. Without
them, a nats-server is started from the bundled binary, and Postgres through
testcontainers when a Docker engine answers. Under ``CI=true`` a server that
cannot be had fails the run instead of skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from contracts import Subjects
from shared.natsserver import NatsServer

IN_CI = os.environ.get("CI", "").lower() == "true"


def _unavailable(what: str) -> None:
    message = f"{what} is not available"
    if IN_CI:
        pytest.fail(f"{message}, and CI=true requires it")
    pytest.skip(f"{message}; set the URL to run this test")


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    """URL of a real nats-server with JetStream."""
    if url := os.environ.get("NATS_URL"):
        yield url
        return
    with NatsServer() as server:
        yield server.url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a real Postgres (``postgresql+asyncpg://``)."""
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith("postgres"):
        yield url
        return
    try:
        from testcontainers.postgres import PostgresContainer

        container = PostgresContainer("pgvector/pgvector:pg16", driver="asyncpg")
        container.start()
    except Exception:
        _unavailable("Postgres (DATABASE_URL unset and no Docker engine)")
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
