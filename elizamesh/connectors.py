"""Platform connectors: programs that carry messages between people and agents over NATS.

``terminal_chat`` is the one a person can use right away (``elizamesh
chat``): each line typed is sent to the agent, the reply streams back, and
what the agent sends to the ``cli`` platform on its own
(``<ns>.outbound.cli.send``) is printed too. ``webhook_connector``
(``elizamesh webhook``) delivers one platform's outbound messages to a URL.

Both can run as a connector (a NATS user from ``elizamesh nats-config
--connector NAME:SOURCES``) and then use only what that user may: replies
arrive on ``inbox_of(NAME)``, runs are owned by ``NAME``, and the
outbound stream is the runtime's to declare.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

import msgspec
import nats.js.errors
from faststream import FastStream
from faststream.nats import NatsBroker
from nats.aio.msg import Msg

from contracts import Content, HandleMessage, HandleMessageResult, Subjects
from contracts.control import OutboundMessage, ServiceHealth
from contracts.events import RunChunk, RunEnded
from contracts.subjects import inbox_of
from shared.bus import create_broker, service_app
from shared.client import ElizaOSClient
from shared.config import Settings
from shared.consumer import QueueConsumers, serve_consumers
from shared.outbound import WEBHOOK_BACKOFF, WebhookWorker
from shared.runs import follow_run

logger = logging.getLogger("elizamesh.connectors")

CLI_SOURCE = "cli"

CHAT_CONNECTOR = "chat"
"""The connector ``elizamesh chat`` is by default (its user delivers the ``cli`` platform)."""


async def terminal_chat(
    nats_url: str,
    subjects: Subjects,
    agent_id: str,
    *,
    user: str,
    connector: str = CHAT_CONNECTOR,
) -> None:
    """Read lines from stdin and print the agent's streamed replies, until end of input.

    ``connector`` names its inbox and owns its runs; its NATS user (if the
    server has users) needs the ``cli`` platform to show what the agent sends on its own.
    """
    broker = create_broker(nats_url, name="elizamesh-chat", inbox_prefix=inbox_of(connector))
    decoder = msgspec.json.Decoder(OutboundMessage)

    async def show_outbound(msg: Msg) -> None:
        sent = decoder.decode(msg.data)
        if sent.room_id == _room(user) or sent.entity_id == user:
            sys.stdout.write(f"\n{sent.agent_id} (sent)> {sent.content.text}\n")
            sys.stdout.flush()

    async with broker:
        await broker.connect()
        connection = broker.config.connection_state.connection
        await connection.subscribe(subjects.outbound(CLI_SOURCE), cb=show_outbound)
        async for line in _typed_lines("you> "):
            if line.strip():
                await _chat_turn(broker, subjects, agent_id, line, user=user, owner=connector)


def webhook_connector(
    settings: Settings, *, source: str, url: str, connector: str | None = None
) -> FastStream:
    """A service that POSTs ``source``'s outbound messages to ``url``.

    A message the receiver does not take is retried for
    ``WEBHOOK_RETRY_SECONDS`` (JetStream keeps it meanwhile), then stored as
    a dead letter with the reason (``shared.outbound``).

    Without ``connector`` it is a trusted service: it declares the outbound
    stream if it is missing and answers health probes. As the connector
    ``connector`` it waits for the runtime to declare the stream and answers
    no probes: its user may neither create streams nor reply to what it
    receives (it could then answer requests in a service's place).
    """
    inbox = inbox_of(connector) if connector is not None else None
    broker = create_broker(
        settings.nats_url, name=f"elizamesh-webhook-{source}", inbox_prefix=inbox
    )
    app = service_app(broker)

    async def make_worker() -> WebhookWorker:
        if connector is not None:
            await _until_outbound_stream(broker, settings.subjects)
        backoff = replace(WEBHOOK_BACKOFF, period=settings.webhook_retry_seconds)
        return WebhookWorker(
            broker,
            settings.subjects,
            source=source,
            url=url,
            backoff=backoff,
            declare_streams=connector is None,
        )

    if connector is None:
        serve_consumers(app, make_worker, name="webhook", subjects=settings.subjects)
    else:
        _serve_unprobed(app, make_worker)
    return app


async def _until_outbound_stream(
    broker: NatsBroker, subjects: Subjects, *, every: float = 1.0
) -> None:
    """Return once the outbound stream exists (the runtime declares it when it starts)."""
    js = broker.config.connection_state.stream
    while True:
        try:
            await js.stream_info(subjects.outbound_stream)
        except nats.js.errors.NotFoundError:
            logger.info("waiting for the runtime to declare %s", subjects.outbound_stream)
            await asyncio.sleep(every)
        else:
            return


def _serve_unprobed(app: FastStream, make: Callable[[], Awaitable[QueueConsumers]]) -> None:
    """Run a worker within ``app``'s lifecycle as ``serve_consumers`` does, answering no probes."""
    running: list[QueueConsumers] = []

    @app.after_startup
    async def start_worker() -> None:
        worker = await make()
        await worker.open()
        running.append(worker)

    @app.on_shutdown
    async def stop_worker() -> None:
        for worker in running:
            await worker.close()


async def stack_health(settings: Settings, *, window: float) -> list[ServiceHealth]:
    """Every service instance's status, gathered for ``window`` seconds."""
    async with ElizaOSClient(settings.nats_url, namespace=settings.eliza_ns) as client:
        return await client.health_check(window=window)


def _room(user: str) -> str:
    return f"cli-{user}"


async def _chat_turn(
    broker: NatsBroker, subjects: Subjects, agent_id: str, line: str, *, user: str, owner: str
) -> None:
    message = HandleMessage(
        entity_id=user, room_id=_room(user), content=Content(text=line, source=CLI_SOURCE)
    )
    streamed = False
    result: HandleMessageResult | None = None
    turn = follow_run(broker, subjects, agent_id, message, timeout=120, owner=owner)
    async for event, _raw in turn:
        if isinstance(event, RunChunk):
            if not streamed:
                sys.stdout.write(f"{agent_id}> ")
            streamed = True
            sys.stdout.write(event.text)
            sys.stdout.flush()
        elif isinstance(event, RunEnded):
            result = event.result
    if not streamed and result is not None and result.response_content is not None:
        sys.stdout.write(f"{agent_id}> {result.response_content.text}")
    elif result is None or not result.did_respond:
        sys.stdout.write(f"{agent_id}> (no answer)")
    sys.stdout.write("\n")
    sys.stdout.flush()


async def _typed_lines(prompt: str) -> AsyncIterator[str]:
    """Yield the lines typed at ``prompt``, one prompt per line asked for, until end of input.

    A daemon thread reads them with ``os.read``: Ctrl-C must end the program
    while a read is blocked, and both asyncio's ``to_thread`` (waited for at
    exit) and ``input()`` (its lock on stdin aborts the interpreter's
    shutdown) would keep it from ending cleanly.
    """
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    asked = threading.Semaphore(0)

    def read() -> None:
        pending = b""
        while True:
            asked.acquire()  # prompt only once the previous reply is printed
            sys.stdout.write(prompt)
            sys.stdout.flush()
            while b"\n" not in pending and (chunk := os.read(sys.stdin.fileno(), 4096)):
                pending += chunk
            if not pending:
                loop.call_soon_threadsafe(lines.put_nowait, None)  # end of input
                return
            line, _, pending = pending.partition(b"\n")
            loop.call_soon_threadsafe(lines.put_nowait, line.decode(errors="replace"))

    threading.Thread(target=read, name="stdin", daemon=True).start()
    while True:
        asked.release()
        if (line := await lines.get()) is None:
            return
        yield line
