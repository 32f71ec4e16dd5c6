"""Request-reply on a hot subject with nats-py directly, behind the bus's contract.

FastStream costs a few hundred microseconds of CPU per request (a middleware
chain, a parsed message, a dependency-injection call, a task group); on the
memory service's subjects that was about a quarter of its CPU. A
``RequestServer`` subscribes with nats-py and keeps what callers see: the
queue group, bounded concurrency, ``XResult | Error`` bodies, the NATS
service-error headers (``shared.bus.error_headers``), the echoed
``correlation_id`` header, the trace context continued from the request's
headers (a consumer span only when telemetry listens, as
``shared.telemetry.bus_telemetry`` does), a typed ``internal`` error for a
reply over the server's max payload, and a drained shutdown (requests
already received are answered; FastStream's subscriber cancelled them).

It runs on a ``ServiceBroker`` (``shared.bus.create_broker``): the broker
starts it after its own subscribers, on its connection (so reconnecting and
exiting when the connection closes for good are the broker's), and stops it
before draining that connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator

import msgspec
import nats.errors
from nats.aio.client import Client as NATSClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from contracts import Error, Message
from contracts.control import ConsumerHealth
from shared.bus import ServiceBroker, as_service_error, bounded, error_headers
from shared.bus_spans import destination_template
from shared.errors import Internal
from shared.telemetry import QuietTracerProvider, consumed

logger = logging.getLogger("elizamesh.bus")

RequestHandler = Callable[[Msg], Awaitable[Message | None]]
"""Answers one request: its typed result, None to answer later itself, or raises."""

CORRELATION_HEADER = "correlation_id"
"""The header FastStream's requests carry their correlation id in, echoed on the reply."""


class RequestServer:
    """Serves the requests on one subject (wildcards allowed) with ``handler``.

    At most ``max_workers`` requests run at once; the others wait in the
    subscription's pending queue, as they did in FastStream's subscriber.
    ``queue`` is the queue group; "" for none (every instance gets every request).
    """

    def __init__(
        self, subject: str, handler: RequestHandler, *, queue: str, max_workers: int
    ) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, not {max_workers}")
        self.subject = subject
        self.handler = handler
        self.queue = queue
        self.max_workers = max_workers
        self.subscription: Subscription | None = None
        self._connection: NATSClient | None = None
        self._slots = asyncio.Semaphore(max_workers)
        self._running: set[asyncio.Task[None]] = set()

    @property
    def running(self) -> bool:
        """Whether the subscription is up (started and not stopped)."""
        return self.subscription is not None

    async def start(self, connection: NATSClient) -> None:
        """Subscribe on ``connection``; nothing happens if already started."""
        if self.subscription is not None:
            return
        self._connection = connection
        self.subscription = await connection.subscribe(
            self.subject, queue=self.queue, cb=self._arrived
        )

    async def stop(self) -> None:
        """Drain: take no new requests, answer those received (queued or under way), then return.

        The connection must still be up for the answers to leave; the broker
        stops its servers before it drains the connection.
        """
        subscription, self.subscription = self.subscription, None
        if subscription is not None:
            with contextlib.suppress(nats.errors.Error):  # already gone with its connection
                await subscription.drain()  # type: ignore[no-untyped-call] # nats-py: untyped
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    def health(self, name: str) -> ConsumerHealth:
        """Subscribed or not, and how many requests wait for a free worker."""
        subscription = self.subscription
        pending = subscription.pending_msgs if subscription is not None else 0
        return ConsumerHealth(name=name, alive=subscription is not None, pending=pending)

    async def _arrived(self, msg: Msg) -> None:
        # nats-py awaits this callback before delivering the next message, so
        # waiting for a slot here keeps the rest in the subscription's queue.
        await self._slots.acquire()
        task = asyncio.create_task(self._serve(msg))
        self._running.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._slots.release()

    async def _serve(self, msg: Msg) -> None:
        """Answer ``msg``; never raises (a failure is the reply)."""
        headers = msg.headers or {}
        correlation_id = headers.get(CORRELATION_HEADER)
        try:
            with _continued_trace(msg, headers):
                result = await self.handler(msg)
            if result is None:
                return  # the handler answers later, itself
            body = msgspec.json.encode(result)
        except Exception as exc:
            error = as_service_error(exc)
            if isinstance(error, Internal):
                logger.exception(
                    "handler failed on %s (correlation id %s)", msg.subject, correlation_id
                )
            await self._reply(msg, error.to_error(correlation_id), correlation_id)
            return
        await self._reply(msg, body, correlation_id)

    async def _reply(self, msg: Msg, reply: bytes | Error, correlation_id: str | None) -> None:
        if not msg.reply or self._connection is None:
            return  # a publish, not a request: nobody to answer
        connection = self._connection
        if isinstance(reply, bytes) and len(reply) > connection.max_payload:
            logger.warning("a reply on %s exceeded the max payload", msg.reply)
            reply = Internal("the reply is larger than the NATS server accepts").to_error(
                correlation_id
            )
        headers: dict[str, str] = {}
        if isinstance(reply, Error):
            reply = bounded(reply)
            headers = error_headers(reply)
            body = msgspec.json.encode(reply)
        else:
            body = reply
        if correlation_id is not None:
            headers[CORRELATION_HEADER] = correlation_id
        try:
            await connection.publish(msg.reply, body, headers=headers or None)
        except nats.errors.Error as exc:  # the connection is going; the caller re-sends
            logger.warning("could not answer a request on %s: %s", msg.subject, exc)


@contextlib.contextmanager
def _continued_trace(msg: Msg, headers: dict[str, str]) -> Iterator[None]:
    """The request's trace context around its handling; a consumer span if someone listens.

    Under a quiet provider nobody listens to, a request that carries a trace
    context only makes it current (no span); one without gets an unrecorded
    root span, so the handler's logs have a trace id.
    """
    provider = trace.get_tracer_provider()
    if isinstance(provider, QuietTracerProvider) and not provider.listened:
        parent = propagate.extract(headers)
        if trace.get_current_span(parent).get_span_context().is_valid:
            token = otel_context.attach(parent)
            try:
                yield
            finally:
                otel_context.detach(token)
            return
    name = f"process {destination_template(msg.subject)}"
    # The span records an exception that leaves the block and is marked failed.
    with consumed(name, headers, **{"messaging.destination.name": msg.subject}):
        yield


def serve_requests(
    broker: ServiceBroker, subject: str, handler: RequestHandler, *, queue: str, max_workers: int
) -> RequestServer:
    """Serve ``subject`` on ``broker`` with ``handler`` from when it starts until it stops.

    Args:
        broker: A broker from ``shared.bus.create_broker``; not started yet, or
            the server starts with its next ``start``.
        subject: The subject to subscribe to (wildcards allowed).
        handler: Returns the reply to a request, or raises (see ``RequestHandler``).
        queue: The queue group: each request goes to one member ("": to every instance).
        max_workers: Requests handled at once by this process.

    Raises:
        ValueError: ``max_workers`` is below 1.
    """
    server = RequestServer(subject, handler, queue=queue, max_workers=max_workers)
    broker.serve(server)
    return server
