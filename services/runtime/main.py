"""Composition root of the runtime service: hosts agents, answers their messages."""

from __future__ import annotations

import logging

from faststream import FastStream
from faststream.nats import NatsBroker
from faststream.nats.subscriber import LogicSubscriber
from nats.aio.client import Client as NATSClient
from nats.aio.msg import Msg

from contracts import QUEUE_RUNTIME, Subjects
from contracts.control import AGENT_COMMANDS, ConsumerHealth
from services.runtime import handlers
from services.runtime.settings import RuntimeSettings
from shared.bus import ServiceBroker, create_broker, service_app
from shared.health import serve_health, subscription_health
from shared.hosting import AgentHost, HostedAgents
from shared.raw_requests import RequestServer
from shared.telemetry import bus_telemetry, setup_telemetry

SERVICE = "elizamesh-runtime"
TURNS_IN_PARALLEL = 16
logger = logging.getLogger("elizamesh.runtime.service")


class MessageServer(RequestServer):
    """The raw subscription to inbound messages, started as FastStream's subscribers are.

    Every replica gets every message (no queue group), and one worker on
    purpose: the handler only queues the message in its room's FIFO
    (shared.rooms), in the order NATS delivered it, the same on every
    replica; the room's owner runs it. The turns run side by side across
    rooms, TURNS_IN_PARALLEL at most (host.rooms).
    """

    def __init__(self, broker: NatsBroker, subjects: Subjects, host: AgentHost) -> None:
        super().__init__(
            subjects.message_handle_template,
            handlers.message_handler(host),
            queue="",
            max_workers=1,
        )
        self.broker = broker

    async def start(self, connection: NATSClient | None = None) -> None:
        """Subscribe on ``connection``, by default the broker's (connected already)."""
        await super().start(connection or self.broker.config.connection_state.connection)


Attached = LogicSubscriber[Msg] | MessageServer


def attach(broker: NatsBroker, subjects: Subjects, host: AgentHost) -> dict[str, Attached]:
    """Subscribe the runtime's handlers (not started); return them by name.

    The message server is also registered with a ``ServiceBroker``, so that
    stopping the broker drains it first.
    """
    messages = MessageServer(broker, subjects, host)
    if isinstance(broker, ServiceBroker):
        broker.serve(messages)
    subscribers: dict[str, LogicSubscriber[Msg]] = {
        "agents.list": broker.subscriber(subjects.agents_list, queue=QUEUE_RUNTIME),
        "agents.add": broker.subscriber(subjects.agents_add, queue=QUEUE_RUNTIME),
        "agents.health": broker.subscriber(subjects.agent_health_template, queue=QUEUE_RUNTIME),
        # Every replica hears of every change (no queue group).
        "agents.changed": broker.subscriber(subjects.agents_changed),
        **{
            f"agents.{command}": broker.subscriber(
                subjects.agent_command_template(command), queue=QUEUE_RUNTIME
            )
            for command in AGENT_COMMANDS
        },
    }
    subscribers["agents.list"](handlers.list_handler(host))
    subscribers["agents.add"](handlers.add_handler(host))
    subscribers["agents.health"](handlers.health_handler(host))
    subscribers["agents.changed"](handlers.changed_handler(host))
    for command in AGENT_COMMANDS:
        subscribers[f"agents.{command}"](handlers.command_handler(host, command))
    return {"messages": messages, **subscribers}


def create_app(settings: RuntimeSettings) -> FastStream:
    """Return the runtime service: subscribes, then starts its agents once connected."""
    broker = create_broker(
        settings.nats_url, name=SERVICE, middlewares=[bus_telemetry(setup_telemetry(SERVICE))]
    )
    host = AgentHost(
        broker,
        settings.subjects,
        HostedAgents.from_settings(settings),
        lease_seconds=settings.room_lease_seconds,
        turns_in_parallel=TURNS_IN_PARALLEL,
        remote_embeddings=settings.remote_embeddings,
        remote_evaluators=settings.remote_evaluators,
    )
    subscribers: dict[str, Attached] = {}

    async def probe() -> tuple[list[ConsumerHealth], dict[str, object]]:
        consumers = [
            s.health(name) if isinstance(s, MessageServer) else subscription_health(name, s)
            for name, s in subscribers.items()
        ]
        if not subscribers:  # still starting its agents: not ready to take messages
            consumers = [ConsumerHealth(name="messages", alive=False)]
        details: dict[str, object] = {
            "agents": sorted(host.runtimes),
            "waiting": host.rooms.waiting(),
            "rooms_held": len(host.rooms.held()),
        }
        return consumers, details

    serve_health(broker, settings.subjects, "runtime", probe)
    app = service_app(broker)

    @app.after_startup
    async def start_agents() -> None:
        # Join the queue group only once the agents are up: a replica that is
        # still starting must not take (and fail) requests the others can serve.
        await host.host_characters()
        await host.rooms.open()
        attached = attach(broker, settings.subjects, host)
        for subscriber in attached.values():
            await subscriber.start()
        subscribers.update(attached)

    app.on_shutdown(host.stop)
    return app
