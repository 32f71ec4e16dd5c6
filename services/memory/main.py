"""Composition root of the memory service: the one process that owns the database."""

from __future__ import annotations

from faststream import FastStream
from sqlalchemy.exc import DBAPIError

from contracts import QUEUE_MEMORY
from contracts.control import ConsumerHealth
from services.memory.handlers import memory_handler
from shared.bus import ServiceBroker, create_broker, service_app
from shared.config import DatabaseUnavailableError, MemorySettings
from shared.health import serve_health
from shared.raw_requests import serve_requests
from shared.storage.sql import SqlAdapter
from shared.telemetry import bus_telemetry, setup_telemetry

SERVICE = "elizamesh-memory"


def create_broker_for(settings: MemorySettings, storage: SqlAdapter) -> ServiceBroker:
    """Return the memory service's broker serving ``storage`` (not yet connected)."""
    broker = create_broker(
        settings.nats_url, name=SERVICE, middlewares=[bus_telemetry(setup_telemetry(SERVICE))]
    )
    # The hot subjects, served with nats-py: FastStream was a quarter of this
    # service's CPU. Requests run side by side (each is one short
    # transaction); the database pool has a connection for each (create_app).
    operations = serve_requests(
        broker,
        settings.subjects.memory_template,
        memory_handler(storage),
        queue=QUEUE_MEMORY,
        max_workers=settings.memory_concurrency,
    )

    async def probe() -> tuple[list[ConsumerHealth], dict[str, object]]:
        latency = await storage.ping()  # a database that does not answer makes it not ok
        return [operations.health("operations")], {"database_ms": round(latency, 2)}

    serve_health(broker, settings.subjects, "memory", probe)
    return broker


def create_app(settings: MemorySettings) -> FastStream:
    """Return the memory service: migrates the database on start, serves it until stopped."""
    setup_telemetry(SERVICE)  # before the engine exists, so its statements are traced
    storage = SqlAdapter.from_url(
        settings.database_url, agent_id=SERVICE, pool_size=settings.memory_concurrency
    )
    app = service_app(create_broker_for(settings, storage))

    async def open_database() -> None:
        try:
            await storage.init()
        except (OSError, DBAPIError) as exc:  # refused, unknown host or database, bad login
            raise DatabaseUnavailableError(settings.database_url, exc) from exc

    app.on_startup(open_database)
    app.after_shutdown(storage.close)
    return app
