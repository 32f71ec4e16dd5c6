"""Outbound messages: what agents send to platforms, delivered by connectors.

``send_message_to_target`` in the runtime service publishes an
``OutboundMessage`` on ``<ns>.outbound.<source>.send``; the outbound stream
keeps it until the platform's connector has delivered it. ``WebhookWorker``
is such a connector for any platform that takes HTTP: it POSTs each message
as JSON to a configured URL, at least once, retrying with backoff while the
receiver fails (a 4xx answer means it refused the message: that is logged
and the message dropped).
"""

from __future__ import annotations

import logging

import httpx
import msgspec
from faststream.nats import NatsBroker, NatsMessage

from contracts import Subjects
from contracts.control import OutboundMessage
from shared.bus import ensure_stream
from shared.consumer import QUEUE_WAIT, QueueConsumers, pull_consumer
from shared.telemetry import consumed

logger = logging.getLogger("elizamesh.outbound")

_DECODER = msgspec.json.Decoder(OutboundMessage)
_CLIENT_ERROR = range(400, 500)


async def ensure_outbound_stream(broker: NatsBroker, subjects: Subjects) -> None:
    """Declare the outbound stream (idempotent)."""
    await ensure_stream(broker, subjects.outbound_stream, [subjects.outbound_template])


class WebhookWorker(QueueConsumers):
    """POSTs each outbound message of one source to a URL, in order (shared by replicas)."""

    def __init__(
        self,
        broker: NatsBroker,
        subjects: Subjects,
        *,
        source: str,
        url: str,
        max_deliver: int = 5,
        backoff: float = 1.0,
        timeout: float = 10.0,
        wait: float = QUEUE_WAIT,
    ) -> None:
        super().__init__(broker)
        self.subjects = subjects
        self.source = source
        self.url = url
        self.max_deliver = max_deliver
        self.backoff = backoff
        self.wait = wait
        self.http = httpx.AsyncClient(timeout=timeout)

    async def declare(self) -> None:
        """Declare the stream and subscribe to the durable consumer ``webhook-<source>``."""
        await ensure_outbound_stream(self.broker, self.subjects)
        self.durables.append(
            pull_consumer(
                self.broker,
                self.subjects.outbound(self.source),
                self._deliver,
                stream=self.subjects.outbound_stream,
                durable=f"webhook-{self.source}",
                max_deliver=self.max_deliver + 1,
                wait=self.wait,
            )
        )

    async def _deliver(self, message: NatsMessage) -> None:
        """POST one ``OutboundMessage`` to the URL as JSON."""
        if not _readable(message.body):
            logger.error("unreadable outbound message on %s dropped", message.raw_message.subject)
            await message.reject()
            return
        try:
            with consumed("webhook post", message.headers, url=self.url):
                response = await self.http.post(
                    self.url, content=message.body, headers={"content-type": "application/json"}
                )
        except httpx.HTTPError as exc:
            await self._retry(message, f"{type(exc).__name__}: {exc}")
            return
        if response.is_success:
            await message.ack()
        elif response.status_code in _CLIENT_ERROR:
            logger.error(
                "%s refused an outbound message (%d); dropped", self.url, response.status_code
            )
            await message.reject()
        else:
            await self._retry(message, f"HTTP {response.status_code}")

    async def _retry(self, message: NatsMessage, reason: str) -> None:
        delivered = message.raw_message.metadata.num_delivered
        if delivered >= self.max_deliver:
            logger.error("outbound message given up after %d tries: %s", delivered, reason)
            await message.reject()
            return
        logger.warning("webhook %s failed (%s); retrying", self.url, reason)
        await message.nack(delay=self.backoff * 2 ** (delivered - 1))

    async def close(self) -> None:
        """Stop pulling and close the HTTP client."""
        await super().close()
        await self.http.aclose()


def _readable(data: bytes) -> bool:
    try:
        _DECODER.decode(data)
    except msgspec.DecodeError:
        return False
    return True
