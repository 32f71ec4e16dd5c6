"""Composition root of the memory service: the one process that owns the database."""

from __future__ import annotations

from faststream import FastStream
from faststream.nats import NatsBroker

from contracts import QUEUE_MEMORY
from services.memory.handlers import memory_handler
from shared.bus import create_broker
from shared.config import Settings
from shared.storage.sql import SqlAdapter
from shared.telemetry import bus_telemetry, tracer_provider

SERVICE = "elizamesh-memory"


def create_broker_for(settings: Settings, storage: SqlAdapter) -> NatsBroker:
    """Return the memory service's broker serving ``storage`` (not yet connected)."""
    broker = create_broker(
        settings.nats_url, name=SERVICE, middlewares=[bus_telemetry(tracer_provider(SERVICE))]
    )
    broker.subscriber(settings.subjects.memory_template, queue=QUEUE_MEMORY)(
        memory_handler(storage)
    )
    return broker


def create_app(settings: Settings) -> FastStream:
    """Return the memory service: migrates the database on start, serves it until stopped."""
    storage = SqlAdapter.from_url(settings.database_url, agent_id=SERVICE)
    app = FastStream(create_broker_for(settings, storage))
    app.on_startup(storage.init)
    app.after_shutdown(storage.close)
    return app
