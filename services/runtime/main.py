"""Composition root of the runtime service: hosts agents, answers their messages."""

from __future__ import annotations

import logging
from typing import Any

from faststream import FastStream
from faststream.nats import NatsBroker
from faststream.nats.subscriber.usecases.basic import LogicSubscriber

from contracts import QUEUE_RUNTIME, Subjects
from services.runtime import handlers
from services.runtime.settings import RuntimeSettings
from shared.bus import create_broker
from shared.config import Settings
from shared.hosting import AgentHost
from shared.telemetry import bus_telemetry, tracer_provider

SERVICE = "elizamesh-runtime"
TURNS_IN_PARALLEL = 16
logger = logging.getLogger("elizamesh.runtime.service")


def attach(broker: NatsBroker, subjects: Subjects, host: AgentHost) -> list[LogicSubscriber[Any]]:
    """Subscribe the runtime's handlers, in the runtime queue group; return the subscribers."""
    # Turns of different rooms run side by side (model calls are I/O); turns of
    # one room are serialised by the room lease, across replicas too.
    messages = broker.subscriber(
        subjects.message_handle_template, queue=QUEUE_RUNTIME, max_workers=TURNS_IN_PARALLEL
    )
    messages(handlers.message_handler(host))
    agents = broker.subscriber(subjects.agents_list, queue=QUEUE_RUNTIME)
    agents(handlers.list_handler(host))
    return [messages, agents]


def create_app(settings: Settings, runtime_settings: RuntimeSettings | None = None) -> FastStream:
    """Return the runtime service: subscribes, then starts its agents once connected."""
    runtime_settings = runtime_settings or RuntimeSettings.from_env()
    broker = create_broker(
        settings.nats_url, name=SERVICE, middlewares=[bus_telemetry(tracer_provider(SERVICE))]
    )
    host = AgentHost(
        broker,
        settings.subjects,
        lease_seconds=runtime_settings.room_lease_seconds,
        remote_embeddings=runtime_settings.remote_embeddings,
        remote_evaluators=runtime_settings.remote_evaluators,
    )
    app = FastStream(broker)

    @app.after_startup
    async def start_agents() -> None:
        # Join the queue group only once the agents are up: a replica that is
        # still starting must not take (and fail) requests the others can serve.
        await host.host_characters(runtime_settings.agents)
        for subscriber in attach(broker, settings.subjects, host):
            await subscriber.start()

    app.on_shutdown(host.stop)
    return app
