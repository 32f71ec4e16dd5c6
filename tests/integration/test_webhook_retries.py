"""The webhook connector never drops a message: JetStream keeps it through an outage, then a
dead letter keeps it with the reason.

A real nats-server; the receiver is an HTTP server on a port of its own that
the test starts late or makes refuse. Short backoffs stand in for the hours.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

import pytest
from faststream.nats import NatsBroker

from contracts import Content, Subjects
from contracts.control import OutboundMessage
from contracts.subjects import outbound_consumer
from shared.bus import create_broker
from shared.consumer import DEAD_REASON_HEADER, Backoff
from shared.natsserver import free_port
from shared.outbound import WebhookWorker, ensure_outbound_stream
from tests.http import QuietHandler

SOURCE = "webhook"


@dataclass
class Receiver:
    """An HTTP receiver on a fixed port: down until ``up``; answers ``status``."""

    port: int = field(default_factory=free_port)
    status: int = 204
    received: list[dict[str, Any]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @contextmanager
    def up(self) -> Iterator[None]:
        receiver = self

        class Receive(QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if receiver.status < 300:
                    receiver.received.append(json.loads(body))
                    receiver.keys.append(self.headers.get("idempotency-key", ""))
                self.send_response(receiver.status)
                self.end_headers()

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Receive)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield
        finally:
            server.shutdown()
            server.server_close()


@dataclass
class Outbound:
    broker: NatsBroker
    subjects: Subjects
    workers: list[WebhookWorker] = field(default_factory=list)

    async def send(self, text: str) -> None:
        message = OutboundMessage(agent_id="agent", source=SOURCE, content=Content(text=text))
        await self.broker.publish(
            message, self.subjects.outbound(SOURCE), stream=self.subjects.outbound_stream
        )

    async def worker(self, url: str, backoff: Backoff) -> WebhookWorker:
        worker = WebhookWorker(
            self.broker, self.subjects, source=SOURCE, url=url, backoff=backoff, wait=1
        )
        self.workers.append(worker)
        await worker.open()
        return worker

    async def dead_letters(self, count: int) -> list[tuple[bytes, dict[str, str]]]:
        js = self.broker.config.connection_state.stream
        subscription = await js.subscribe(
            self.subjects.dead_letter(outbound_consumer(SOURCE)),
            stream=self.subjects.dead_letters_stream,
            ordered_consumer=True,
        )
        letters = []
        try:
            for _ in range(count):
                msg = await subscription.next_msg(timeout=30)
                letters.append((msg.data, dict(msg.headers or {})))
        finally:
            await subscription.unsubscribe()
        return letters

    async def kept(self) -> tuple[int, int]:
        """(outbound messages still queued, dead letters stored)."""
        js = self.broker.config.connection_state.stream
        info = await js.consumer_info(self.subjects.outbound_stream, outbound_consumer(SOURCE))
        dead = await js.stream_info(self.subjects.dead_letters_stream)
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0), int(dead.state.messages)


@pytest.fixture
async def outbound(nats_url: str, subjects: Subjects) -> AsyncIterator[Outbound]:
    broker = create_broker(nats_url, name="webhook-test")
    async with broker:
        await broker.connect()
        await ensure_outbound_stream(broker, subjects)
        rig = Outbound(broker, subjects)
        try:
            yield rig
        finally:
            for worker in rig.workers:
                await worker.close()
            js = broker.config.connection_state.stream
            await js.delete_stream(subjects.outbound_stream)
            await js.delete_stream(subjects.dead_letters_stream)


async def until(check: Callable[[], Awaitable[bool]], *, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        for _ in itertools.count():
            if await check():
                return
            await asyncio.sleep(0.05)


async def test_a_receiver_down_for_many_retries_gets_every_message_once_when_it_is_back(
    outbound: Outbound,
) -> None:
    receiver = Receiver()
    texts = [f"message {i}" for i in range(5)]
    for text in texts:
        await outbound.send(text)
    worker = await outbound.worker(receiver.url, Backoff(first=0.1, longest=0.5, period=600))
    js = outbound.broker.config.connection_state.stream

    async def retried_many_times() -> bool:
        info = await js.consumer_info(outbound.subjects.outbound_stream, outbound_consumer(SOURCE))
        return int(info.delivered.consumer_seq) >= 8 * len(texts)

    await until(retried_many_times)  # ~16 s of the old connector's retries, and more
    with receiver.up():

        async def all_arrived() -> bool:
            return len(receiver.received) >= len(texts)

        await until(all_arrived)
        await asyncio.sleep(1.5)  # room for a duplicate to show up
    assert sorted(r["content"]["text"] for r in receiver.received) == texts
    assert len(set(receiver.keys)) == len(texts)
    assert await outbound.kept() == (0, 0)
    assert worker.durables


async def test_a_message_the_receiver_never_takes_is_dead_lettered_with_the_reason(
    outbound: Outbound,
) -> None:
    receiver = Receiver(status=503)
    with receiver.up():
        await outbound.send("never taken")
        await outbound.worker(receiver.url, Backoff(first=0.05, longest=0.1, period=0.5))
        [(body, headers)] = await outbound.dead_letters(1)
    assert json.loads(body)["content"]["text"] == "never taken"
    assert "HTTP 503" in headers[DEAD_REASON_HEADER]
    assert "tries" in headers[DEAD_REASON_HEADER]

    async def settled() -> bool:
        return await outbound.kept() == (0, 1)

    await until(settled)


async def test_a_refused_or_unreadable_message_is_dead_lettered_at_once_not_dropped(
    outbound: Outbound,
) -> None:
    receiver = Receiver(status=400)
    with receiver.up():
        await outbound.send("refused")
        subject = outbound.subjects.outbound(SOURCE)
        stream = outbound.subjects.outbound_stream
        await outbound.broker.publish(b"\xff not json", subject, stream=stream)
        await outbound.worker(receiver.url, Backoff(first=60, period=3600))
        letters = await outbound.dead_letters(2)
    by_reason = sorted((headers[DEAD_REASON_HEADER], body) for body, headers in letters)
    assert by_reason[0][0].endswith("refused it: HTTP 400")
    assert json.loads(by_reason[0][1])["content"]["text"] == "refused"
    assert by_reason[1] == (
        "unreadable outbound message: invalid message: JSON is malformed: invalid character "
        "(byte 0)",
        b"\xff not json",
    )

    async def settled() -> bool:
        return await outbound.kept() == (0, 2)

    await until(settled)  # the dead letters are stored before their messages leave the queue
