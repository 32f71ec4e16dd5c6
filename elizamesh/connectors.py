"""Platform connectors: programs that carry messages between people and agents over NATS.

``terminal_chat`` is the one a person can use right away (``elizamesh
chat``): each line typed is sent to the agent, the reply streams back.
"""

from __future__ import annotations

import asyncio
import sys

from faststream.nats import NatsBroker

from contracts import Content, HandleMessage, HandleMessageResult, Subjects
from contracts.events import RunChunk, RunEnded
from shared.bus import create_broker
from shared.runs import follow_run


async def terminal_chat(nats_url: str, subjects: Subjects, agent_id: str, *, user: str) -> None:
    """Read lines from stdin and print the agent's streamed replies, until end of input."""
    broker = create_broker(nats_url, name="elizamesh-chat")
    async with broker:
        await broker.connect()
        while (line := await asyncio.to_thread(_read_line, "you> ")) is not None:
            if line.strip():
                await _chat_turn(broker, subjects, agent_id, line, user=user)


async def _chat_turn(
    broker: NatsBroker, subjects: Subjects, agent_id: str, line: str, *, user: str
) -> None:
    message = HandleMessage(
        entity_id=user, room_id=f"cli-{user}", content=Content(text=line, source="cli")
    )
    streamed = False
    result: HandleMessageResult | None = None
    async for event, _raw in follow_run(broker, subjects, agent_id, message, timeout=120):
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


def _read_line(prompt: str) -> str | None:
    try:
        return input(prompt)
    except EOFError:
        return None
