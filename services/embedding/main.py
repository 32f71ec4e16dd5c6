"""Composition root of the embedding service: drains the embedding queue, writes vectors."""

from __future__ import annotations

from faststream import FastStream

from shared.agent.character import Character
from shared.agent.plugin import resolve_plugins
from shared.agent.runtime import AgentRuntime
from shared.bus import create_broker, service_app
from shared.config import EmbeddingSettings
from shared.consumer import Backoff, serve_consumers
from shared.embedding import EmbeddingWorker
from shared.telemetry import bus_telemetry, setup_telemetry

SERVICE = "elizamesh-embedding"


def model_plugin_name(settings: EmbeddingSettings) -> str:
    """``EMBEDDING_PLUGIN``, else openai when configured, else the local models."""
    return settings.embedding_model_plugin


async def model_runtime(plugin: str) -> AgentRuntime:
    """A runtime used only for its embedding model (no storage, no agent)."""
    runtime = AgentRuntime(character=Character(name=SERVICE))
    for resolved in resolve_plugins([plugin]):
        await runtime.register_plugin(resolved)
    return runtime


def create_app(settings: EmbeddingSettings) -> FastStream:
    """Return the embedding service: each replica pulls from the durable consumers they share."""
    broker = create_broker(
        settings.nats_url, name=SERVICE, middlewares=[bus_telemetry(setup_telemetry(SERVICE))]
    )
    app = service_app(broker)

    async def make_worker() -> EmbeddingWorker:
        models = await model_runtime(model_plugin_name(settings))
        outage = Backoff(period=settings.queue_retry_seconds)
        return EmbeddingWorker(broker, settings.subjects, models, outage=outage)

    serve_consumers(app, make_worker, name="embedding", subjects=settings.subjects)
    return app
