"""Durable JetStream queues consumed by FastStream pull subscribers, settled by hand.

Each queue consumer is a FastStream ``PullSub`` subscriber on a durable
JetStream consumer with manual acknowledgement: its handler acks, naks with a
delay (a retry with backoff) or dead-letters each message, on its own. A
pull waits on the server for ``wait`` seconds (a long poll), so an idle
consumer asks the server once per ``wait`` seconds; a message published
meanwhile is handed over at once. ``serve_consumers`` runs a service's
consumers inside its lifecycle and answers its health.

Every message is settled, whatever its handler does: one that raises is
dead-lettered at once when no retry can help (``BadRequest``: unreadable,
invalid) and otherwise retried with ``Backoff`` until its period is over,
then dead-lettered. A dead letter is stored (the ``<NS>_DEAD`` stream) before
its message leaves the queue, with the reason in ``DEAD_REASON_HEADER``;
nothing is dropped silently. The messages of one pull are handled side by
side, so one message's failure or slowness never holds the others back.
"""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import msgspec
from fast_depends.library.serializer import SerializerProto
from faststream import AckPolicy, FastStream
from faststream.message import StreamMessage
from faststream.nats import ConsumerConfig, JStream, NatsBroker, NatsMessage, PullSub
from faststream.nats.subscriber import LogicSubscriber
from nats.aio.msg import Msg

from contracts import Subjects
from contracts.control import ConsumerHealth
from shared.bus import as_service_error, ensure_stream, truncated
from shared.errors import BadRequest, Internal
from shared.health import consumer_health, serve_health
from shared.telemetry import QUEUE_DEPTH

logger = logging.getLogger("elizamesh.consumer")

T = TypeVar("T")

QUEUE_WAIT = 10.0
"""Seconds a pull waits on the server for a message: an idle consumer's one request."""

Handler = Callable[[NatsMessage], Coroutine[object, object, None]]
"""Settles one message: ``ack``, ``nack(delay=...)`` (a retry), or ``dead_letter``; or raises."""

DEAD_REASON_HEADER = "Elizamesh-Dead-Reason"
"""Header of a dead letter: why its worker gave it up (one line, at most 200 characters)."""

DEAD_SUBJECT_HEADER = "Elizamesh-Subject"
"""Header of a dead letter: the subject it was queued on."""


@dataclass(frozen=True)
class Backoff:
    """How a queue worker retries a message whose failure may pass (a service away, ...).

    The delay doubles from ``first`` up to ``longest`` seconds; once the
    message has waited ``period`` seconds since it was queued, the next
    failure dead-letters it.
    """

    first: float = 1.0
    longest: float = 60.0
    period: float = 600.0

    def delay(self, delivered: int) -> float:
        """Seconds to wait after the ``delivered``-th failed delivery (1-based)."""
        return float(min(self.longest, self.first * 2 ** min(delivered - 1, 32)))

    def over(self, message: NatsMessage) -> bool:
        """Whether ``message`` has been retried for its whole period."""
        queued = message.raw_message.metadata.timestamp
        return (datetime.now(UTC) - queued).total_seconds() >= self.period


def decoded(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    """``body`` decoded by ``decoder``.

    Raises:
        BadRequest: not UTF-8, not JSON, nested too deep, or not the expected
            message; the reason names the field (``$.path``).
    """
    try:
        return decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"invalid message: {exc}") from None
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8") from None
    except RecursionError:
        raise BadRequest("malformed JSON: nested too deeply") from None


async def ensure_dead_letter_stream(broker: NatsBroker, subjects: Subjects) -> None:
    """Declare the stream that keeps every queue's dead letters (idempotent)."""
    await ensure_stream(
        broker,
        subjects.dead_letters_stream,
        [subjects.dead_letters_template, subjects.embedding_dead],
    )


async def dead_letter(
    broker: NatsBroker, message: NatsMessage, subject: str, reason: str, *, stream: str
) -> None:
    """Store ``message`` on the dead-letter ``subject`` with ``reason``, then take it off its queue.

    The body and headers travel as they came (trace context included). If
    the dead letter cannot be stored (NATS away), the message stays on its
    queue and comes back in a minute: it is never dropped.
    """
    logger.error("dead-lettered from %s: %s", message.raw_message.subject, reason)
    headers = {
        **_plain(message.headers),
        DEAD_REASON_HEADER: truncated(" ".join(reason.split()), 200),
        DEAD_SUBJECT_HEADER: message.raw_message.subject,
    }
    try:
        await broker.publish(message.body, subject, headers=headers, stream=stream)
    except Exception:
        logger.exception("could not store the dead letter; the message stays queued")
        await message.nack(delay=60)
        return
    await message.reject()


def _plain(headers: Mapping[str, object]) -> dict[str, str]:
    # Nats-Msg-Id would make the dead-letter stream drop it as a duplicate of itself.
    return {k: str(v) for k, v in headers.items() if not k.startswith("Nats-")}


async def retry_or_dead_letter(
    broker: NatsBroker,
    message: NatsMessage,
    reason: str,
    *,
    backoff: Backoff,
    subject: str,
    stream: str,
) -> None:
    """Nak ``message`` with ``backoff``'s next delay; dead-letter it once the period is over."""
    delivered = message.raw_message.metadata.num_delivered
    if backoff.over(message):
        await dead_letter(
            broker, message, subject, f"{reason} (after {delivered} tries)", stream=stream
        )
        return
    logger.warning("retry %d of %s: %s", delivered, message.raw_message.subject, reason)
    await message.nack(delay=backoff.delay(delivered))


@dataclass
class Durable:
    """One durable JetStream consumer and the FastStream subscriber that pulls from it."""

    stream: str
    name: str
    subscriber: LogicSubscriber[Msg]


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
    backoff: Backoff | None = None,
    dead_letters: tuple[str, str] | None = None,
) -> Durable:
    """Subscribe ``handler`` to the durable consumer ``durable`` of ``stream`` (not started).

    ``batch_size`` messages at most per pull, handled side by side; the next
    pull waits until they are settled. The handler settles each message itself
    (``AckPolicy.MANUAL``). One whose handler raises is settled here: with
    ``dead_letters`` (subject, stream), dead-lettered when the error is a
    ``BadRequest`` (a retry cannot help), else retried by ``backoff`` then
    dead-lettered; without, nakked with ``backoff``'s delay (``max_deliver``
    bounds it). ``max_deliver`` may be -1: ``backoff``'s period alone
    bounds the retries. ``description`` (else the handler's docstring) is the
    subscriber's AsyncAPI description.
    """
    retry = backoff or Backoff()
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
        try:
            await handler(message)
        except Exception as exc:
            await _settle_failed(broker, message, exc, retry, dead_letters)

    subscriber(consume)
    return Durable(stream, durable, subscriber)


async def _settle_failed(
    broker: NatsBroker,
    message: NatsMessage,
    exc: Exception,
    backoff: Backoff,
    dead_letters: tuple[str, str] | None,
) -> None:
    """Settle a message whose handler raised ``exc`` (unless the handler settled it already)."""
    error = as_service_error(exc)
    reason = f"{error.code}: {error}"
    if isinstance(error, Internal):
        logger.error("handler failed on %s", message.raw_message.subject, exc_info=exc)
    if message.committed is not None:
        return
    with contextlib.suppress(Exception):  # NATS away: the server redelivers after ack_wait
        if dead_letters is None:
            await message.nack(delay=backoff.delay(message.raw_message.metadata.num_delivered))
            return
        subject, stream = dead_letters
        if isinstance(error, BadRequest):
            await dead_letter(broker, message, subject, reason, stream=stream)
        else:
            await retry_or_dead_letter(
                broker, message, reason, backoff=backoff, subject=subject, stream=stream
            )


class _Undecoded:
    """Leaves the body to the handler: one that is not JSON is its to reject, not a crash."""

    async def decode(self, msg: StreamMessage[object]) -> bytes:
        """Return the body as it arrived."""
        return msg.body

    async def encode(
        self, msg: object, serializer: SerializerProto | None = None
    ) -> tuple[bytes, str | None]:
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

    async def probe() -> tuple[list[ConsumerHealth], dict[str, object]]:
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
