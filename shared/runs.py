"""Following a run from the outside: send a message, then read what the run publishes.

Used by the gateway (server-sent events, WebSocket), the ``ElizaOSClient``
and connectors such as ``elizamesh chat``: subscribe to
``<ns>.run.<run_id>.>`` first, send the message with that ``run_id`` and
``reply_at_once``, then read chunks, responses and the end, in order.

A follower with an ``owner`` (the gateway, a connector) runs on owned run ids
(``Subjects.owned_run_id``), whose subjects its NATS user may read
(``Subjects.runs_of``) while nobody else's are.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgspec
from faststream.nats import NatsBroker
from nats.aio.subscription import Subscription

from contracts import HandleMessage, HandleMessageResult, Subjects, new_id
from contracts.events import RunChunk, RunEnded, RunResponse
from contracts.subjects import run_owner
from shared.bus import request
from shared.errors import Unavailable

RunEvent = RunChunk | RunResponse | RunEnded
_DECODER = msgspec.json.Decoder(RunEvent)


@dataclass
class Run:
    """A run that was accepted: its acknowledgement, then its events (read them once)."""

    ack: HandleMessageResult
    run_id: str
    timeout: float
    _queue: asyncio.Queue[bytes]
    _subscription: Subscription

    async def events(self) -> AsyncIterator[tuple[RunEvent, bytes]]:
        """Yield each event (and its raw JSON) up to the end; ``timeout`` bounds each wait.

        Raises:
            Unavailable: nothing came for ``timeout`` seconds (the replica died).
        """
        try:
            while True:
                try:
                    raw = await asyncio.wait_for(self._queue.get(), self.timeout)
                except TimeoutError:
                    raise Unavailable(
                        f"run {self.run_id} published nothing for {self.timeout:g}s"
                    ) from None
                event = _DECODER.decode(raw)
                yield event, raw
                if isinstance(event, RunEnded):
                    return
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop listening to the run (idempotent)."""
        await self._subscription.unsubscribe()


async def start_run(
    broker: NatsBroker,
    subjects: Subjects,
    agent_id: str,
    message: HandleMessage,
    *,
    timeout: float,
    owner: str | None = None,
) -> Run:
    """Send ``message`` to ``agent_id`` in async mode; return the accepted run.

    With ``owner``, the run is one ``owner`` owns (see ``owned``). Errors of
    the request itself (unknown agent, bad input, nobody listening) are
    raised here, before any event.
    """
    if owner is not None:
        message = owned(message, subjects, owner)
    run_id = message.run_id or new_id()
    queue: asyncio.Queue[bytes] = asyncio.Queue()

    async def collect(msg: Any) -> None:
        await queue.put(msg.data)

    connection = broker.config.connection_state.connection
    # The request goes out on this connection, queued behind the SUB: the
    # server has the subscription before any runtime can publish to the run.
    subscription = await connection.subscribe(subjects.run_template(run_id), cb=collect)
    try:
        sent = msgspec.structs.replace(message, run_id=run_id, reply_at_once=True)
        ack = await request(
            broker, subjects.message_handle(agent_id), sent, HandleMessageResult, timeout=timeout
        )
    except BaseException:
        await subscription.unsubscribe()
        raise
    return Run(ack, run_id, timeout, queue, subscription)


async def follow_run(
    broker: NatsBroker,
    subjects: Subjects,
    agent_id: str,
    message: HandleMessage,
    *,
    timeout: float,
    owner: str | None = None,
) -> AsyncIterator[tuple[RunEvent, bytes]]:
    """Send ``message`` to ``agent_id``; yield the run's events (and their raw JSON) to the end.

    With ``owner``, the run is one ``owner`` owns (see ``owned``).
    """
    run = await start_run(broker, subjects, agent_id, message, timeout=timeout, owner=owner)
    async for event in run.events():
        yield event


def owned(message: HandleMessage, subjects: Subjects, owner: str) -> HandleMessage:
    """``message`` on a run ``owner`` owns: its NATS user may follow no other run.

    A run id the caller chose is replaced unless ``owner`` owns it; the
    events carry the run id used.
    """
    if message.run_id and run_owner(message.run_id) == owner:
        return message
    return msgspec.structs.replace(message, run_id=subjects.owned_run_id(owner))
