"""Health over NATS: every service instance answers ``<ns>.health`` with its real status.

A status is measured when asked, never cached: the NATS connection, each
subscription or JetStream consumer (alive, and how many messages wait for
it), and what the service depends on (the database for the memory service).
``gather_health`` asks every instance at once and collects the answers that
arrive within a window, so a dead replica is simply missing from the list.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from importlib.metadata import version

import msgspec
import nats.js.errors
from faststream.nats import NatsBroker
from faststream.nats.subscriber import LogicSubscriber
from nats.aio.client import Client as NATSClient
from nats.aio.msg import Msg

from contracts import Subjects
from contracts.control import CheckHealth, ConsumerHealth, ServiceHealth

Probe = Callable[[], Awaitable[tuple[list[ConsumerHealth], dict[str, object]]]]
"""Measures a service now: its consumers, and details such as the database latency."""

INSTANCE = f"{socket.gethostname()}:{os.getpid()}"
_DECODER = msgspec.json.Decoder(ServiceHealth)


async def no_consumers() -> tuple[list[ConsumerHealth], dict[str, object]]:
    """The probe of a service with nothing to report beyond its connection."""
    return [], {}


def serve_health(broker: NatsBroker, subjects: Subjects, service: str, probe: Probe) -> None:
    """Answer ``<ns>.health`` on ``broker`` (every instance, no queue group) with ``probe``."""

    @broker.subscriber(subjects.health)
    async def report_health(request: CheckHealth) -> ServiceHealth:
        """Measure this instance now and say how it is."""
        del request
        return await measure(broker, service, probe)


async def measure(broker: NatsBroker, service: str, probe: Probe) -> ServiceHealth:
    """Return ``service``'s status now; a probe that fails makes it not ok, with the reason."""
    connection = broker.config.connection_state.connection
    connected = bool(connection.is_connected)
    try:
        consumers, details = await asyncio.wait_for(probe(), timeout=5)
    except Exception as exc:
        consumers, details = [], {"error": f"{type(exc).__name__}: {exc}"}
    return ServiceHealth(
        service=service,
        instance=INSTANCE,
        version=version("elizamesh"),
        ok=connected and "error" not in details and all(c.alive for c in consumers),
        consumers=consumers,
        details=details,
    )


async def consumer_health(
    broker: NatsBroker, stream: str, durable: str, *, alive: bool
) -> ConsumerHealth:
    """The lag of a durable JetStream consumer, and whether this instance still drains it."""
    js = broker.config.connection_state.stream
    try:
        info = await js.consumer_info(stream, durable)
    except nats.js.errors.NotFoundError:
        return ConsumerHealth(name=durable, alive=False)
    return ConsumerHealth(
        name=durable,
        alive=alive,
        pending=info.num_pending or 0,
        ack_pending=info.num_ack_pending or 0,
    )


def subscription_health(name: str, subscriber: LogicSubscriber[Msg]) -> ConsumerHealth:
    """The state of a FastStream core-NATS subscriber: subscribed, and messages waiting."""
    subscription = getattr(subscriber, "subscription", None)
    alive = bool(subscriber.running) and subscription is not None
    pending = subscription.pending_msgs if subscription is not None else 0
    return ConsumerHealth(name=name, alive=alive, pending=pending)


async def gather_health(
    connection: NATSClient, subjects: Subjects, *, window: float = 1.0
) -> list[ServiceHealth]:
    """Ask every service instance; return the answers received within ``window`` seconds.

    ``connection``: any NATS connection (a broker's, or a plain client's).
    """
    inbox = connection.new_inbox()
    answers: list[ServiceHealth] = []

    async def collect(msg: Msg) -> None:
        # Anything but a health answer (a misbehaving client's reply) is ignored.
        with contextlib.suppress(msgspec.DecodeError):
            answers.append(_DECODER.decode(msg.data))

    subscription = await connection.subscribe(inbox, cb=collect)
    try:
        await connection.publish(subjects.health, msgspec.json.encode(CheckHealth()), reply=inbox)
        await asyncio.sleep(window)
    finally:
        await subscription.unsubscribe()
    return sorted(answers, key=lambda h: (h.service, h.instance))


def on_this_host(answer: ServiceHealth) -> bool:
    """Whether ``answer`` came from a process on this host (a container's own service)."""
    host, _, _pid = answer.instance.rpartition(":")
    return host == socket.gethostname()


def stack_ready(answers: Sequence[ServiceHealth], needed: Sequence[str]) -> list[str]:
    """Return what keeps the stack from being ready: each needed service with no ok instance."""
    ok = {h.service for h in answers if h.ok}
    return [f"no healthy {service} instance" for service in needed if service not in ok]
