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
from faststream.nats import NatsBroker
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig

from contracts import Subjects
from contracts.control import OutboundMessage
from shared.bus import ensure_stream
from shared.telemetry import consumed
from shared.workers import PullWorker

logger = logging.getLogger("elizamesh.outbound")

_DECODER = msgspec.json.Decoder(OutboundMessage)
_CLIENT_ERROR = range(400, 500)


async def ensure_outbound_stream(broker: NatsBroker, subjects: Subjects) -> None:
    """Declare the outbound stream (idempotent)."""
    await ensure_stream(broker, subjects.outbound_stream, [subjects.outbound_template])


class WebhookWorker(PullWorker):
    """POSTs every outbound message of one source to a URL (durable, shared by replicas)."""

    def __init__(
        self,
        broker: NatsBroker,
        subjects: Subjects,
        *,
        source: str,
        url: str,
        batch_size: int = 16,
        max_deliver: int = 5,
        backoff: float = 1.0,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(broker)
        self.subjects = subjects
        self.source = source
        self.url = url
        self.batch_size = batch_size
        self.max_deliver = max_deliver
        self.backoff = backoff
        self.http = httpx.AsyncClient(timeout=timeout)

    async def open(self) -> None:
        """Declare the stream and join the durable consumer ``webhook-<source>``."""
        await ensure_outbound_stream(self.broker, self.subjects)
        durable = f"webhook-{self.source}"
        js = self.broker.config.connection_state.stream
        subscription = await js.pull_subscribe(
            self.subjects.outbound(self.source),
            durable=durable,
            stream=self.subjects.outbound_stream,
            config=ConsumerConfig(ack_wait=60, max_deliver=self.max_deliver + 1),
        )
        self.subscriptions = [subscription]
        self.durables = [(self.subjects.outbound_stream, durable)]

    async def drain_once(self) -> int:
        """Deliver one batch; return how many messages it took."""
        try:
            batch: list[Msg] = await self.subscriptions[0].fetch(self.batch_size, timeout=0.1)
        except TimeoutError:
            return 0
        for msg in batch:
            await self._deliver(msg)
        return len(batch)

    async def _deliver(self, msg: Msg) -> None:
        if not _readable(msg.data):
            logger.error("unreadable outbound message on %s dropped", msg.subject)
            await msg.term()
            return
        try:
            with consumed("webhook post", msg.headers, url=self.url):
                response = await self.http.post(
                    self.url, content=msg.data, headers={"content-type": "application/json"}
                )
        except httpx.HTTPError as exc:
            await self._retry(msg, f"{type(exc).__name__}: {exc}")
            return
        if response.is_success:
            await msg.ack()
        elif response.status_code in _CLIENT_ERROR:
            logger.error(
                "%s refused an outbound message (%d); dropped", self.url, response.status_code
            )
            await msg.term()
        else:
            await self._retry(msg, f"HTTP {response.status_code}")

    async def _retry(self, msg: Msg, reason: str) -> None:
        delivered = msg.metadata.num_delivered
        if delivered >= self.max_deliver:
            logger.error("outbound message given up after %d tries: %s", delivered, reason)
            await msg.term()
            return
        logger.warning("webhook %s failed (%s); retrying", self.url, reason)
        await msg.nak(delay=self.backoff * 2 ** (delivered - 1))

    async def close(self) -> None:
        """Leave the consumer and close the HTTP client."""
        await super().close()
        await self.http.aclose()


def _readable(data: bytes) -> bool:
    try:
        _DECODER.decode(data)
    except msgspec.DecodeError:
        return False
    return True
