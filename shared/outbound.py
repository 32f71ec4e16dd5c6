"""Outbound messages: what agents send to platforms, delivered by connectors.

``send_message_to_target`` in the runtime service publishes an
``OutboundMessage`` on ``<ns>.outbound.<source>.send``; the outbound stream
keeps it until the platform's connector has delivered it. ``WebhookWorker``
is such a connector for any platform that takes HTTP: it POSTs each message
as JSON to a configured URL, at least once (with an ``Idempotency-Key``
header, the same on every try, for receivers that deduplicate).

Nothing is dropped silently. While the receiver is down or failing (no
answer, 5xx, 408, 429), the message is retried with backoff by JetStream
itself (a nak with a delay: a restarted connector loses nothing), for
``WEBHOOK_RETRY_SECONDS`` (6 hours by default). Then, or at once for a
message the receiver refuses (another 4xx) or that cannot be read, it is
stored on ``<ns>.dead.webhook-<source>`` (the dead-letter stream) with the
reason in its ``Elizamesh-Dead-Reason`` header.
"""

from __future__ import annotations

import logging

import httpx
import msgspec
from faststream.nats import NatsBroker, NatsMessage

from contracts import Subjects
from contracts.control import OutboundMessage
from contracts.subjects import outbound_consumer
from shared.bus import ensure_stream
from shared.consumer import (
    QUEUE_WAIT,
    Backoff,
    QueueConsumers,
    dead_letter,
    decoded,
    ensure_dead_letter_stream,
    pull_consumer,
    retry_or_dead_letter,
)
from shared.errors import BadRequest
from shared.telemetry import consumed

logger = logging.getLogger("elizamesh.outbound")

_DECODER = msgspec.json.Decoder(OutboundMessage)
_CLIENT_ERROR = range(400, 500)
_RETRYABLE = frozenset({408, 425, 429})
"""4xx answers that mean "not now" rather than "never"."""

WEBHOOK_BACKOFF = Backoff(first=1.0, longest=300.0, period=6 * 3600.0)
"""Retries of a webhook: 1 s doubling to 5 minutes, for 6 hours (``WEBHOOK_RETRY_SECONDS``)."""


async def ensure_outbound_stream(broker: NatsBroker, subjects: Subjects) -> None:
    """Declare the outbound stream and the dead-letter stream (idempotent)."""
    await ensure_stream(broker, subjects.outbound_stream, [subjects.outbound_template])
    await ensure_dead_letter_stream(broker, subjects)


class WebhookWorker(QueueConsumers):
    """POSTs each outbound message of one source to a URL (shared by replicas)."""

    def __init__(
        self,
        broker: NatsBroker,
        subjects: Subjects,
        *,
        source: str,
        url: str,
        backoff: Backoff = WEBHOOK_BACKOFF,
        timeout: float = 10.0,
        wait: float = QUEUE_WAIT,
        declare_streams: bool = True,
    ) -> None:
        """Prepare the worker (``open`` starts it).

        Args:
            broker: Its connection.
            subjects: The stack's subjects.
            source: The platform whose outbound messages it delivers.
            url: Where each message is POSTed as JSON.
            backoff: Retries while the receiver fails; ``period`` bounds them.
            timeout: Seconds one POST may take.
            wait: Seconds one pull waits on the server (a long poll).
            declare_streams: Declare the outbound and dead-letter streams if
                missing; False for a connector's user, which may not (the
                runtime declares them; until the dead-letter one exists, a
                message to dead-letter stays queued and is tried again).
        """
        super().__init__(broker)
        self.subjects = subjects
        self.source = source
        self.url = url
        self.backoff = backoff
        self.wait = wait
        self.declare_streams = declare_streams
        self.dead_letters = subjects.dead_letter(outbound_consumer(source))
        self.http = httpx.AsyncClient(timeout=timeout)

    async def declare(self) -> None:
        """Declare the streams and subscribe to the durable consumer ``webhook-<source>``."""
        if self.declare_streams:
            await ensure_outbound_stream(self.broker, self.subjects)
        self.durables.append(
            pull_consumer(
                self.broker,
                self.subjects.outbound(self.source),
                self._deliver,
                stream=self.subjects.outbound_stream,
                durable=outbound_consumer(self.source),
                max_deliver=-1,  # ``backoff.period`` bounds the retries
                wait=self.wait,
                backoff=self.backoff,
                dead_letters=(self.dead_letters, self.subjects.dead_letters_stream),
            )
        )

    async def _deliver(self, message: NatsMessage) -> None:
        """POST one ``OutboundMessage`` to the URL as JSON."""
        try:
            decoded(_DECODER, message.body)
        except BadRequest as exc:
            await self._dead(message, f"unreadable outbound message: {exc}")
            return
        sequence = message.raw_message.metadata.sequence.stream
        headers = {
            "content-type": "application/json",
            "idempotency-key": f"{self.subjects.outbound_stream}-{sequence}",
        }
        try:
            with consumed("webhook post", message.headers, url=self.url):
                response = await self.http.post(self.url, content=message.body, headers=headers)
        except httpx.HTTPError as exc:
            await self._retry(message, f"{type(exc).__name__}: {exc}")
            return
        if response.is_success:
            await message.ack()
        elif response.status_code in _CLIENT_ERROR and response.status_code not in _RETRYABLE:
            await self._dead(message, f"{self.url} refused it: HTTP {response.status_code}")
        else:
            await self._retry(message, f"HTTP {response.status_code}")

    async def _retry(self, message: NatsMessage, reason: str) -> None:
        await retry_or_dead_letter(
            self.broker,
            message,
            f"webhook {self.url} failed: {reason}",
            backoff=self.backoff,
            subject=self.dead_letters,
            stream=self.subjects.dead_letters_stream,
        )

    async def _dead(self, message: NatsMessage, reason: str) -> None:
        stream = self.subjects.dead_letters_stream
        await dead_letter(self.broker, message, self.dead_letters, reason, stream=stream)

    async def close(self) -> None:
        """Stop pulling and close the HTTP client."""
        await super().close()
        await self.http.aclose()
