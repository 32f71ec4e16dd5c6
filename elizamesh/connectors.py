"""Platform connectors: programs that carry messages between people and agents over NATS.

``terminal_chat`` is the one a person can use right away (``elizamesh
chat``): each line typed is sent to the agent, the reply streams back.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

import msgspec
import nats
from nats.aio.msg import Msg

from contracts import Content, HandleMessage, HandleMessageResult, Subjects, new_id
from contracts.events import RunChunk, RunEnded, RunResponse
from shared.bus import create_broker, request

_EVENTS = msgspec.json.Decoder(RunChunk | RunResponse | RunEnded)


async def ask(
    nats_url: str,
    subjects: Subjects,
    agent_id: str,
    text: str,
    *,
    entity_id: str,
    room_id: str,
    on_chunk: Callable[[str], None],
    timeout: float = 120.0,
) -> HandleMessageResult | None:
    """Send one message, pass the reply's chunks to ``on_chunk``, return the turn's result."""
    run_id = new_id()
    ended: asyncio.Future[RunEnded] = asyncio.get_running_loop().create_future()
    nc = await nats.connect(nats_url)
    broker = create_broker(nats_url, name="elizamesh-chat")
    try:

        async def on_run(msg: Msg) -> None:
            event = _EVENTS.decode(msg.data)
            if isinstance(event, RunChunk):
                on_chunk(event.text)
            elif isinstance(event, RunEnded) and not ended.done():
                ended.set_result(event)

        await nc.subscribe(subjects.run_template(run_id), cb=on_run)
        await nc.flush()
        async with broker:
            await broker.connect()
            message = HandleMessage(
                entity_id=entity_id,
                room_id=room_id,
                content=Content(text=text, source="cli"),
                run_id=run_id,
                reply_at_once=True,
            )
            await request(
                broker, subjects.message_handle(agent_id), message, HandleMessageResult, timeout=10
            )
            end = await asyncio.wait_for(ended, timeout)
    finally:
        await nc.close()
    return end.result


async def terminal_chat(nats_url: str, subjects: Subjects, agent_id: str, *, user: str) -> None:
    """Read lines from stdin and print the agent's streamed replies, until end of input."""
    while (line := await asyncio.to_thread(_read_line, "you> ")) is not None:
        if line.strip():
            await _chat_turn(nats_url, subjects, agent_id, line, user=user)


async def _chat_turn(
    nats_url: str, subjects: Subjects, agent_id: str, line: str, *, user: str
) -> None:
    streamed: list[str] = []

    def show(chunk: str) -> None:
        if not streamed:
            sys.stdout.write(f"{agent_id}> ")
        streamed.append(chunk)
        sys.stdout.write(chunk)
        sys.stdout.flush()

    result = await ask(
        nats_url, subjects, agent_id, line, entity_id=user, room_id=f"cli-{user}", on_chunk=show
    )
    if not streamed and result is not None and result.response_content is not None:
        sys.stdout.write(f"{agent_id}> {result.response_content.text}")
    elif result is None or not result.did_respond:
        sys.stdout.write(f"{agent_id}> (no answer)")
    sys.stdout.write("\n")
    sys.stdout.flush()


def _read_line(prompt: str) -> str | None:
    try:
        return input(prompt)
    except EOFError:
        return None
