"""Durable JetStream queues consumed by FastStream pull subscribers, settled by hand.

Each queue consumer is a FastStream ``PullSub`` subscriber on a durable
JetStream consumer with manual acknowledgement: its handler acks, naks with a
delay (a retry with backoff) or terminates each message. A pull waits on the
server for ``wait`` seconds (a long poll), so an idle consumer asks the
server once per ``wait`` seconds; a message published meanwhile is handed
over at once. ``serve_consumers`` runs a service's consumers inside its
lifecycle and answers its health.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import msgspec
from faststream import AckPolicy, FastStream
from faststream.message import StreamMessage
from faststream.nats import ConsumerConfig, JStream, NatsBroker, NatsMessage, PullSub
from faststream.nats.subscriber import LogicSubscriber

from contracts import Subjects
from contracts.control import ConsumerHealth
from shared.health import consumer_health, serve_health
from shared.telemetry import QUEUE_DEPTH

logger = logging.getLogger("elizamesh.consumer")

QUEUE_WAIT = 10.0
"""Seconds a pull waits on the server for a message: an idle consumer's one request."""

Handler = Callable[[NatsMessage], Coroutine[Any, Any, None]]
"""Settles one message: ``ack``, ``nack(delay=...)`` (a retry), or ``reject`` (no retry)."""


@dataclass
class Durable:
    """One durable JetStream consumer and the FastStream subscriber that pulls from it."""

    stream: str
    name: str
    subscriber: LogicSubscriber[Any]


def pull_consumer(
    broker: NatsBroker,
    subject: str,
    handler: Handler,
    *,
    stream: str,
    durable: str,
    max_deliver: int,
    ack_wait: float = 60,
    batch_size: int = 1,
    wait: float = QUEUE_WAIT,
    description: str | None = None,
) -> Durable:
    """Subscribe ``handler`` to the durable consumer ``durable`` of ``stream`` (not started).

    ``batch_size`` messages at most per pull, handled side by side; the next
    pull waits until they are settled. The handler settles each message itself
    (``AckPolicy.MANUAL``); one it leaves unsettled comes back after
    ``ack_wait`` seconds. ``description`` (else the handler's docstring) is
    the subscriber's AsyncAPI description.
    """
    subscriber = broker.subscriber(
        subject,
        stream=JStream(stream, declare=False),
        durable=durable,
        config=ConsumerConfig(ack_wait=ack_wait, max_deliver=max_deliver),
        pull_sub=PullSub(batch_size, timeout=wait),
        ack_policy=AckPolicy.MANUAL,
        codec=_Undecoded(),
        # The connection's inbox, as for its requests: a connector's may be its only one.
        inbox_prefix=_inbox_prefix(broker),
        description=description or handler.__doc__,
    )

    async def consume() -> None:
        # The raw message from the context, not a handler parameter: that
        # would be resolved in a worker thread (see shared.bus.current_subject).
        message: NatsMessage = broker.context.get_local("message")
        QUEUE_DEPTH.set(message.raw_message.metadata.num_pending, {"consumer": durable})
        await handler(message)

    subscriber(consume)
    return Durable(stream, durable, subscriber)


class _Undecoded:
    """Leaves the body to the handler: one that is not JSON is its to reject, not a crash."""

    async def decode(self, msg: StreamMessage[Any]) -> bytes:
        """Return the body as it arrived."""
        return msg.body

    async def encode(self, msg: Any, serializer: Any = None) -> tuple[bytes, str | None]:
        """Return ``msg`` as JSON bytes (a queue consumer sends no replies)."""
        del serializer
        return msgspec.json.encode(msg), "application/json"


def _inbox_prefix(broker: NatsBroker) -> bytes:
    inbox: str = broker.config.connection_state.connection.new_inbox()
    return inbox.rsplit(".", 1)[0].encode() + b"."


class QueueConsumers(ABC):
    """The durable consumers of one worker, started and stopped together."""

    def __init__(self, broker: NatsBroker) -> None:
        self.broker = broker
        self.durables: list[Durable] = []

    @abstractmethod
    async def declare(self) -> None:
        """Declare the streams and subscribe (filling ``durables``)."""

    async def open(self) -> None:
        """Declare, then pull from every consumer until ``close``; record each queue's depth."""
        await self.declare()
        for durable in self.durables:
            await durable.subscriber.start()
        try:
            for consumer in await self.consumers():
                QUEUE_DEPTH.set(consumer.pending, {"consumer": consumer.name})
        except Exception as exc:  # a metric missed is no reason not to consume
            logger.warning("%s: could not measure the queues: %s", type(self).__name__, exc)

    async def consumers(self) -> list[ConsumerHealth]:
        """Each durable consumer's lag, alive while this worker pulls from it."""
        return [
            await consumer_health(self.broker, d.stream, d.name, alive=bool(d.subscriber.running))
            for d in self.durables
        ]

    async def close(self) -> None:
        """Stop pulling (the consumers stay durable on the server)."""
        for durable in self.durables:
            await durable.subscriber.stop()


def serve_consumers(
    app: FastStream,
    make: Callable[[], Awaitable[QueueConsumers]],
    *,
    name: str,
    subjects: Subjects,
) -> None:
    """Open the consumers ``make`` returns once ``app`` is connected; close them on shutdown.

    The service answers ``<ns>.health`` as ``name``: its consumers' lag, and
    whether they are pulled from (not ok before they start).
    """
    running: list[QueueConsumers] = []

    async def probe() -> tuple[list[ConsumerHealth], dict[str, Any]]:
        if not running:
            return [ConsumerHealth(name=name, alive=False)], {"state": "starting"}
        return await running[0].consumers(), {}

    broker = app.broker
    if not isinstance(broker, NatsBroker):
        raise TypeError("a queue consumer runs on a NATS broker")
    serve_health(broker, subjects, name, probe)

    @app.after_startup
    async def start_consumers() -> None:
        consumers = await make()
        await consumers.open()
        running.append(consumers)

    @app.on_shutdown
    async def stop_consumers() -> None:
        for consumers in running:
            await consumers.close()
