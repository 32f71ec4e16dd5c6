"""Composition root of the evaluator service: evaluators after each turn, from the events stream."""

from __future__ import annotations

from faststream import FastStream

from shared.bus import create_broker, service_app
from shared.config import Settings
from shared.consumer import serve_consumers
from shared.evaluation import EvaluationWorker
from shared.hosting import AgentHost, HostedAgents
from shared.telemetry import bus_telemetry, setup_telemetry

SERVICE = "elizamesh-evaluator"


def create_app(settings: Settings, agents: HostedAgents | None = None) -> FastStream:
    """Return the evaluator service: hosts the agents (for their evaluators), consumes run.ended."""
    agents = agents or HostedAgents.from_env()
    broker = create_broker(
        settings.nats_url, name=SERVICE, middlewares=[bus_telemetry(setup_telemetry(SERVICE))]
    )
    host = AgentHost(broker, settings.subjects, agents)
    app = service_app(broker)

    async def make_worker() -> EvaluationWorker:
        await host.host_characters()
        return EvaluationWorker(broker, settings.subjects, host)

    serve_consumers(app, make_worker, name="evaluator", subjects=settings.subjects)
    app.after_shutdown(host.stop)
    return app
