"""Composition root of the gateway: an HTTP front door to the agents on NATS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin

from contracts.subjects import inbox_of
from services.gateway import completions, handlers
from services.gateway.apidoc import openapi_config
from services.gateway.turns import RUN_OWNER
from shared.bus import create_broker, exit_when_closed
from shared.config import GatewaySettings
from shared.errors import ServiceError
from shared.health import no_consumers, serve_health
from shared.telemetry import bus_telemetry, setup_telemetry

SERVICE = "elizamesh-gateway"


def create_app(settings: GatewaySettings) -> Litestar:
    """Return the gateway as an ASGI application; it connects to NATS on start-up."""
    cors = CORSConfig(allow_origins=settings.cors_origins) if settings.cors_origins else None
    traces = setup_telemetry(SERVICE)
    broker = create_broker(
        settings.nats_url,
        name=SERVICE,
        middlewares=[bus_telemetry(traces)],
        # Its NATS user reads the replies on its own inbox and nobody else's.
        inbox_prefix=inbox_of(RUN_OWNER),
    )
    serve_health(broker, settings.subjects, "gateway", no_consumers)
    exit_when_closed(broker)  # a connection closed for good: exit, the supervisor restarts it

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
            handlers.room_messages,
            completions.chat_completions,
            completions.list_models,
            completions.get_model,
        ],
        openapi_config=openapi_config(keys_required=bool(settings.api_keys)),
        cors_config=cors,
        lifespan=[connected],
        plugins=[
            OpenTelemetryPlugin(
                OpenTelemetryConfig(tracer_provider=traces, exclude=["/v1/health", "/v1/ready"])
            )
        ],
        state=State({"settings": settings}),
        guards=[handlers.require_api_key],
        middleware=[handlers.request_ids, handlers.websocket_keys, handlers.options_allow],
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
