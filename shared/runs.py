"""Following a run from the outside: send a message, then read what the run publishes.

Used by the gateway (server-sent events) and by connectors such as
``elizamesh chat``: subscribe to ``<ns>.run.<run_id>.>`` first, send the
message with that ``run_id`` and ``reply_at_once``, then read chunks,
responses and the end, in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from faststream.nats import NatsBroker

from contracts import HandleMessage, HandleMessageResult, Subjects, new_id
from contracts.events import RunChunk, RunEnded, RunResponse
from shared.bus import request
from shared.errors import Unavailable

RunEvent = RunChunk | RunResponse | RunEnded
_DECODER = msgspec.json.Decoder(RunEvent)


async def follow_run(
    broker: NatsBroker,
    subjects: Subjects,
    agent_id: str,
    message: HandleMessage,
    *,
    timeout: float,
) -> AsyncIterator[tuple[RunEvent, bytes]]:
    """Send ``message`` to ``agent_id`` and yield the run's events (and their raw JSON) to the end.

    Errors of the request itself (unknown agent, bad input, nobody listening)
    are raised before the first event. ``timeout`` bounds the wait for each
    event, so a run whose replica died ends with ``Unavailable``.
    """
    run_id = message.run_id or new_id()
    queue: asyncio.Queue[bytes] = asyncio.Queue()

    async def collect(msg: Any) -> None:
        await queue.put(msg.data)

    connection = broker.config.connection_state.connection
    subscription = await connection.subscribe(subjects.run_template(run_id), cb=collect)
    try:
        await connection.flush()
        sent = msgspec.structs.replace(message, run_id=run_id, reply_at_once=True)
        await request(
            broker, subjects.message_handle(agent_id), sent, HandleMessageResult, timeout=timeout
        )
        while True:
            try:
                raw = await asyncio.wait_for(queue.get(), timeout)
            except TimeoutError:
                raise Unavailable(f"run {run_id} published nothing for {timeout:g}s") from None
            event = _DECODER.decode(raw)
            yield event, raw
            if isinstance(event, RunEnded):
                return
    finally:
        await subscription.unsubscribe()
