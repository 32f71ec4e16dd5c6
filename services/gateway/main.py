"""Composition root of the gateway: an HTTP front door to the agents on NATS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin

from contracts.subjects import inbox_of
from services.gateway import handlers
from shared.bus import create_broker
from shared.config import Settings
from shared.errors import ServiceError
from shared.health import no_consumers, serve_health
from shared.telemetry import bus_telemetry, setup_telemetry

SERVICE = "elizamesh-gateway"


def create_app(settings: Settings) -> Litestar:
    """Return the gateway as an ASGI application; it connects to NATS on start-up."""
    traces = setup_telemetry(SERVICE)
    broker = create_broker(
        settings.nats_url,
        name=SERVICE,
        middlewares=[bus_telemetry(traces)],
        # Its NATS user reads the replies on its own inbox and nobody else's.
        inbox_prefix=inbox_of(handlers.RUN_OWNER),
    )
    serve_health(broker, settings.subjects, "gateway", no_consumers)

    @asynccontextmanager
    async def connected(app: Litestar) -> AsyncIterator[None]:
        await broker.start()
        try:
            yield
        finally:
            await broker.stop()

    return Litestar(
        route_handlers=[
            handlers.send_message,
            handlers.stream_message,
            handlers.list_agents,
            handlers.add_agent,
            handlers.start_agent,
            handlers.stop_agent,
            handlers.delete_agent,
            handlers.chat_socket,
            handlers.health,
            handlers.ready,
            handlers.chat_page,
        ],
        lifespan=[connected],
        plugins=[
            OpenTelemetryPlugin(
                OpenTelemetryConfig(tracer_provider=traces, exclude=["/v1/health", "/v1/ready"])
            )
        ],
        state=State({"settings": settings}),
        guards=[handlers.require_api_key],
        middleware=[handlers.request_ids, handlers.websocket_keys],
        logging_config=None,  # the process's JSON logging (shared/logs.py) stays in charge
        dependencies={
            "broker": Provide(lambda: broker, sync_to_thread=False),
            "settings": Provide(lambda: settings, sync_to_thread=False),
        },
        exception_handlers={
            ServiceError: handlers.service_error_response,
            HTTPException: handlers.http_error_response,
        },
    )
