"""Server-sent events stay alive while the turn lives, carry ids, resume, and end by a deadline.

A real runtime and memory service on a real nats-server; the agent's model
waits on a gate the test opens, so a test decides how long the turn takes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from contracts import Subjects
from tests.gateway_stack import AGENT, GatewayStack, gateway_stack
from tests.scripted import ScriptedModel, plan

ANSWER = "A slow and careful answer."
STREAM = f"/v1/agents/{AGENT}/messages/stream"


@dataclass
class Event:
    name: str | None
    id: str | None
    data: str


def parse(block: str) -> Event | str:
    """One SSE block: an event, or the text of a comment."""
    lines = block.splitlines()
    if all(line.startswith(":") for line in lines):
        return "\n".join(line[1:].strip() for line in lines)
    fields: dict[str, list[str]] = {}
    for line in lines:
        name, _, value = line.partition(": ")
        fields.setdefault(name, []).append(value)
    return Event(
        name=fields.get("event", [None])[0],
        id=fields.get("id", [None])[0],
        data="\n".join(fields.get("data", [])),
    )


async def blocks(response: httpx.Response) -> AsyncIterator[Event | str]:
    buffer = ""
    async for text in response.aiter_text():
        buffer += text.replace("\r\n", "\n")
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            if block.strip():
                yield parse(block)


def message(message_id: str) -> dict[str, object]:
    return {
        "message_id": message_id,
        "entity_id": "user-1",
        "room_id": f"room-{message_id}",
        "content": {"text": "Take your time."},
    }


@pytest.fixture
async def gated(nats_url: str, subjects: Subjects, tmp_path: Path) -> AsyncIterator[GatewayStack]:
    """The gateway with a short keep-alive and deadline; the model waits on its gate."""
    model = ScriptedModel(default=plan(ANSWER), gate=asyncio.Event())
    async with gateway_stack(
        nats_url, subjects, tmp_path, model, gateway_keepalive=0.2, gateway_turn_timeout=4
    ) as running:
        yield running


async def test_a_quiet_turn_gets_keepalive_comments_then_its_answer_with_event_ids(
    gated: GatewayStack,
) -> None:
    gate = gated.model.gate
    assert gate is not None
    seen: list[Event | str] = []
    async with (
        httpx.AsyncClient(base_url=gated.url, timeout=30) as http,
        http.stream("POST", STREAM, json=message("quiet-1")) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for block in blocks(response):
            seen.append(block)
            if sum(1 for b in seen if b == "keep-alive") == 3:
                gate.set()  # the model answers only after the stream proved alive
    comments = [b for b in seen if isinstance(b, str)]
    events = [b for b in seen if isinstance(b, Event)]
    assert comments.count("keep-alive") >= 3
    assert events[-1].name == "completed"
    assert json.loads(events[-1].data)["result"]["response_content"]["text"] == ANSWER
    ids = [e.id for e in events]
    run_id = ids[0].rsplit(":", 1)[0] if ids[0] else None
    assert run_id is not None
    assert ids == [f"{run_id}:{n}" for n in range(1, len(events) + 1)]


async def test_a_dropped_stream_resumes_from_the_kept_run_after_its_last_event_id(
    gated: GatewayStack,
) -> None:
    gate = gated.model.gate
    assert gate is not None
    gate.set()
    body = message("resume-1")
    async with httpx.AsyncClient(base_url=gated.url, timeout=30) as http:
        first: list[Event] = []
        async with http.stream("POST", STREAM, json=body) as response:
            async for block in blocks(response):
                if isinstance(block, Event):
                    first.append(block)
                    if len(first) == 2:
                        break  # the connection drops here
        last_id = first[-1].id
        assert last_id is not None
        rest: list[Event] = []
        async with http.stream(
            "POST", STREAM, json=body, headers={"last-event-id": last_id}
        ) as response:
            assert response.status_code == 200
            rest = [b async for b in blocks(response) if isinstance(b, Event)]
    run_id, _, seen = last_id.rpartition(":")
    assert [e.id for e in rest] == [f"{run_id}:{n}" for n in range(int(seen) + 1, len(rest) + 3)]
    assert rest[-1].name == "completed"
    chunks = [json.loads(e.data)["text"] for e in [*first, *rest] if e.name == "chunk"]
    assert "".join(chunks) == ANSWER
    assert len(gated.model.prompts["TEXT_LARGE"]) == 1  # resuming started no second turn


async def test_a_turn_longer_than_the_deadline_ends_the_stream_as_timeout(
    gated: GatewayStack,
) -> None:
    async with httpx.AsyncClient(base_url=gated.url, timeout=30) as http:
        async with http.stream("POST", STREAM, json=message("late-1")) as response:
            events = [b async for b in blocks(response) if isinstance(b, Event)]
        assert events[-1].name == "failed"
        ended = json.loads(events[-1].data)
        assert ended["status"] == "timeout"
        assert "GATEWAY_TURN_TIMEOUT" in ended["error"]
        gate = gated.model.gate
        assert gate is not None
        gate.set()


@pytest.mark.parametrize(
    "last_event_id",
    ["nonsense", "someone-else__abc:1", "gateway__abc:x"],
)
async def test_a_bad_last_event_id_is_a_typed_400(gated: GatewayStack, last_event_id: str) -> None:
    async with httpx.AsyncClient(base_url=gated.url, timeout=30) as http:
        response = await http.post(
            STREAM, json=message("bad-resume"), headers={"last-event-id": last_event_id}
        )
    assert response.status_code == 400
    error = response.json()
    assert error["code"] == "bad_request"
    assert "last_event_id" in error["details"] or "last-event-id" in error["details"]


async def test_a_model_slower_than_the_request_timeout_still_streams_its_answer(
    nats_url: str, subjects: Subjects, tmp_path: Path
) -> None:
    model = ScriptedModel(default=plan(ANSWER), gate=asyncio.Event())
    async with gateway_stack(
        nats_url, subjects, tmp_path, model, request_timeout=1, gateway_keepalive=0.5
    ) as stack:
        gate = model.gate
        assert gate is not None
        # The first word comes three request timeouts later: the run's heartbeats
        # keep the follower waiting, the keep-alives keep the HTTP stream open.
        opening = asyncio.get_running_loop().call_later(3, gate.set)
        try:
            async with (
                httpx.AsyncClient(base_url=stack.url, timeout=30) as http,
                http.stream("POST", STREAM, json=message("slow-1")) as response,
            ):
                seen = [b async for b in blocks(response)]
        finally:
            opening.cancel()
    events = [b for b in seen if isinstance(b, Event)]
    assert "keep-alive" in seen
    assert events[-1].name == "completed", events[-1]
    assert json.loads(events[-1].data)["result"]["response_content"]["text"] == ANSWER
