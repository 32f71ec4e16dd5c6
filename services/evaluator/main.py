"""Composition root of the evaluator service: evaluators after each turn, from the events stream."""

from __future__ import annotations

from faststream import FastStream

from shared.bus import create_broker, service_app
from shared.config import EvaluatorSettings
from shared.consumer import Backoff, serve_consumers
from shared.evaluation import EvaluationWorker
from shared.hosting import AgentHost, HostedAgents
from shared.telemetry import bus_telemetry, setup_telemetry

SERVICE = "elizamesh-evaluator"


def create_app(settings: EvaluatorSettings, agents: HostedAgents | None = None) -> FastStream:
    """Return the evaluator service: hosts the agents (for their evaluators), consumes run.ended."""
    agents = agents or HostedAgents.from_settings(settings)
    broker = create_broker(
        settings.nats_url, name=SERVICE, middlewares=[bus_telemetry(setup_telemetry(SERVICE))]
    )
    # The runtime's lease, read the same way: the rooms are the same rooms.
    # The runtime service runs the agents' tasks; this host runs no task loop.
    host = AgentHost(
        broker,
        settings.subjects,
        agents,
        lease_seconds=settings.room_lease_seconds,
        run_tasks=False,
    )
    app = service_app(broker)

    async def make_worker() -> EvaluationWorker:
        await host.host_characters()
        outage = Backoff(period=settings.queue_retry_seconds)
        return EvaluationWorker(broker, settings.subjects, host, outage=outage)

    serve_consumers(app, make_worker, name="evaluator", subjects=settings.subjects)
    app.after_shutdown(host.stop)
    return app
