"""Events that leave without stalling the turn: JetStream publishes with a window of acks.

``broker.publish(..., stream=...)`` waits for the server's acknowledgement,
one round trip in the turn's path for every event. ``EventPublisher`` hands
each message to the connection and awaits its acknowledgement in the
background. At most ``window`` acknowledgements are outstanding; past that,
``publish`` waits for room, so a slow or absent server pushes back on the
turns instead of filling memory.

Events are facts other processes consume (connectors and clients follow them
with ``ElizaOSClient.events()``; the stream keeps them for later readers),
so a loss is never silent: a publish the server refuses (no stream captures
the subject, another stream than expected) or does not acknowledge within
``ack_timeout`` is logged with its subject and counted, in ``failures`` and
in the ``elizamesh.events.publish_failures`` counter. It does not raise into
the turn that published it: a failing event is the bus's concern, not the
caller's. ``flush()`` (and ``close()`` at shutdown) waits for every
outstanding acknowledgement.

The trace travels as with ``broker.publish``: each message gets a producer
span, child of the span current at ``publish()`` (the turn's), and its
context in the headers, so the consumer continues the same trace.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping
from importlib.metadata import version
from types import TracebackType
from typing import Self

import msgspec
from faststream.nats import NatsBroker
from nats.js import JetStreamContext
from nats.js.api import PubAck
from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import Span, SpanKind, StatusCode

from contracts import Message, new_id
from shared.bus import JSON
from shared.bus_spans import DESTINATION_TEMPLATE, destination_template
from shared.telemetry import TRACER

logger = logging.getLogger("elizamesh.events")

_FAILURES = "elizamesh.events.publish_failures"
_FAILURES_MEANING = "Events JetStream did not store: refused, no stream, or no ack in time."
PUBLISH_FAILURES = metrics.get_meter(TRACER).create_counter(
    _FAILURES, unit="{message}", description=_FAILURES_MEANING
)
# Got once: reading the package version for each span costs ~0.3 ms of CPU. Until a
# provider is installed this is a proxy, which then follows the installed one.
_tracer = trace.get_tracer(TRACER, version("elizamesh"))


def bus_event_type(event: str) -> str:
    """The bus name of a runtime event (``<ns>.event.<agent>.<name>``).

    ``RUN_STARTED`` -> ``run.started``, ``EMBEDDING_GENERATION_COMPLETED`` ->
    ``embedding.generation_completed``.
    """
    return event.lower().replace("_", ".", 1)


class EventPublisher:
    """Publishes messages to JetStream with up to ``window`` acknowledgements outstanding.

    Attributes:
        acknowledged: Publishes the stream acknowledged (stored).
        failures: Publishes that were refused or not acknowledged in time.
        max_outstanding: The most acknowledgements ever outstanding at once.
    """

    def __init__(
        self,
        broker: NatsBroker,
        *,
        stream: str | None = None,
        window: int = 256,
        ack_timeout: float = 5.0,
        meter: metrics.Meter | None = None,
    ) -> None:
        """Publish through ``broker``'s connection (connected before the first publish).

        Args:
            broker: The service's broker; its JetStream context is used.
            stream: The stream that must store every message (the server
                refuses a subject it captures in another stream); ``None``
                accepts any stream.
            window: How many acknowledgements may be outstanding.
            ack_timeout: Seconds to wait for each acknowledgement.
            meter: Where the failure counter lives (default: the process's).
        """
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window}")
        self.broker = broker
        self.stream = stream
        self.window = window
        self.ack_timeout = ack_timeout
        self.acknowledged = 0
        self.failures = 0
        self.max_outstanding = 0
        self._failures_counter = (
            PUBLISH_FAILURES
            if meter is None
            else meter.create_counter(_FAILURES, unit="{message}", description=_FAILURES_MEANING)
        )
        self._room = asyncio.Semaphore(window)
        self._outstanding = 0
        self._settled = asyncio.Event()
        self._settled.set()

    @property
    def outstanding(self) -> int:
        """How many publishes are waiting for their acknowledgement now."""
        return self._outstanding

    async def publish(
        self, message: Message, subject: str, *, headers: Mapping[str, str] | None = None
    ) -> None:
        """Hand ``message`` to the connection for ``subject``; its ack is awaited in the background.

        Returns at once while fewer than ``window`` acknowledgements are
        outstanding, else once one arrives. Never raises for a refused or
        unacknowledged publish: that is logged and counted.
        """
        await self._room.acquire()
        self._outstanding += 1
        self.max_outstanding = max(self.max_outstanding, self._outstanding)
        self._settled.clear()
        span = _tracer.start_span(
            f"publish {destination_template(subject)}",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "nats",
                "messaging.destination.name": subject,
                DESTINATION_TEMPLATE: destination_template(subject),
                "messaging.operation": "publish",
            },
        )
        sent = {
            "content-type": JSON,
            "correlation_id": getattr(message, "event_id", None) or new_id(),
            **(headers or {}),
        }
        propagate.inject(sent, context=trace.set_span_in_context(span))
        try:
            ack = await self._jetstream().publish_async(
                subject, msgspec.json.encode(message), stream=self.stream, headers=sent
            )
        except Exception as exc:  # the connection did not take it (closed, too large, ...)
            self._failed(subject, exc, span)
            self._release(span)
            return
        except BaseException:
            self._release(span)
            raise
        # A callback and a timer, not a task with a timeout per event: a task
        # costs more CPU than the publish itself.
        timer = asyncio.get_running_loop().call_later(self.ack_timeout, self._expire, ack)
        ack.add_done_callback(functools.partial(self._settle, subject, span, timer))

    async def flush(self, *, timeout: float | None = None) -> None:
        """Wait until no acknowledgement is outstanding (each one is bounded by ``ack_timeout``).

        Raises:
            TimeoutError: some were still outstanding after ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            await self._settled.wait()

    async def close(self) -> None:
        """Wait for every outstanding acknowledgement; call before the connection closes."""
        await self.flush()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _jetstream(self) -> JetStreamContext:
        js: JetStreamContext = self.broker.config.connection_state.stream
        return js

    def _expire(self, ack: asyncio.Future[PubAck]) -> None:
        # The connection forgets the future once it is done: an ack that comes later is dropped.
        if not ack.done():
            ack.set_exception(TimeoutError(f"no acknowledgement within {self.ack_timeout:g}s"))

    def _settle(
        self, subject: str, span: Span, timer: asyncio.TimerHandle, ack: asyncio.Future[PubAck]
    ) -> None:
        timer.cancel()
        try:
            if ack.cancelled():
                self._failed(subject, RuntimeError("the acknowledgement was cancelled"), span)
            elif (exc := ack.exception()) is not None:
                self._failed(
                    subject, exc if isinstance(exc, Exception) else RuntimeError(exc), span
                )
            else:
                self.acknowledged += 1
        finally:
            self._release(span)

    def _failed(self, subject: str, exc: Exception, span: Span) -> None:
        self.failures += 1
        error = type(exc).__name__
        self._failures_counter.add(1, {"stream": self.stream or "", "error": error})
        span.record_exception(exc)
        span.set_status(StatusCode.ERROR, error)
        logger.warning("event on %s was not stored: %s: %s", subject, error, exc)

    def _release(self, span: Span) -> None:
        span.end()
        self._outstanding -= 1
        if self._outstanding == 0:
            self._settled.set()
        self._room.release()
