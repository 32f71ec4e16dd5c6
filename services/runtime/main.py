"""Composition root of the runtime service."""

from __future__ import annotations

from faststream import FastStream
from faststream.nats import NatsBroker

from contracts import QUEUE_RUNTIME
from services.runtime import handlers
from shared.bus import create_broker
from shared.config import Settings
from shared.telemetry import bus_telemetry, tracer_provider

SERVICE = "elizamesh-runtime"


def create_broker_for(settings: Settings) -> NatsBroker:
    """Return the runtime's broker with every subscriber attached (not yet connected)."""
    broker = create_broker(
        settings.nats_url, name=SERVICE, middlewares=[bus_telemetry(tracer_provider(SERVICE))]
    )
    broker.subscriber(settings.subjects.message_handle_template, queue=QUEUE_RUNTIME)(
        handlers.handle_message
    )
    return broker


def create_app(settings: Settings) -> FastStream:
    """Return the runtime service as a FastStream application."""
    return FastStream(create_broker_for(settings))
