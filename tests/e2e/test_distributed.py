"""The distributed stack as real processes: memory, two runtime replicas, gateway, on NATS.

The model is the fake OpenAI server (in this process, on loopback), so the
runtime's real ``openai`` client is used and every model call is counted.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats
import pytest

from contracts import Content, HandleMessage, HandleMessageResult, Subjects
from contracts.events import AgentEventOccurred, RunChunk, RunEnded, RunResponse
from contracts.records import Memory
from shared.bus import create_broker
from shared.natsserver import free_port, wait_for_port
from shared.processes import service_process
from shared.storage.client import memory_client
from tests.fake_openai import FakeOpenAI, fake_openai_server, letters
from tests.scripted import plan

pytestmark = pytest.mark.e2e

AGENT = "eliza"


@dataclass
class Stack:
    base_url: str
    nats_url: str
    subjects: Subjects
    fake: FakeOpenAI
    runtimes: list[subprocess.Popen[bytes]]
    logs: Path

    def post(
        self, text: str, *, room: str = "room-1", message_id: str | None = None
    ) -> httpx.Response:
        body: dict[str, Any] = {"entity_id": "user-1", "room_id": room, "content": {"text": text}}
        if message_id:
            body["message_id"] = message_id
        return httpx.post(f"{self.base_url}/v1/agents/{AGENT}/messages", json=body, timeout=30)

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()


@pytest.fixture(scope="module")
def stack(nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("stack")
    character = logs / "eliza.json"
    character.write_text(json.dumps({"name": "Eliza", "id": AGENT, "bio": ["A helpful agent."]}))
    subjects = Subjects(f"e{uuid.uuid4().hex[:10]}")
    port = free_port()
    with fake_openai_server() as fake, ExitStack() as processes:
        fake.default = plan("Hello from the model!")
        env = {
            "NATS_URL": nats_url,
            "ELIZA_NS": subjects.namespace,
            "DATABASE_URL": f"sqlite:///{logs / 'memory.db'}",
            "AGENT_CHARACTERS": str(character),
            "OPENAI_BASE_URL": fake.url,
            "OPENAI_API_KEY": "sk-test",
            "API_PORT": str(port),
            "REQUEST_TIMEOUT": "20",
            "TASK_TICK_SECONDS": "3600",
            "EMBEDDINGS": "remote",
            "EVALUATORS": "remote",
            "CONVERSATION_LENGTH": "4",
        }
        processes.enter_context(service_process("memory", env, log_dir=logs))
        processes.enter_context(service_process("embedding", env, log_dir=logs))
        processes.enter_context(service_process("evaluator", env, log_dir=logs))
        runtimes = []
        for replica in ("r0", "r1"):
            (logs / replica).mkdir()
            runtime = service_process("runtime", env, log_dir=logs / replica)
            runtimes.append(processes.enter_context(runtime))
        processes.enter_context(service_process("gateway", env, log_dir=logs))
        wait_for_port("127.0.0.1", port, timeout=30)
        ready = Stack(f"http://127.0.0.1:{port}", nats_url, subjects, fake, runtimes, logs)
        asyncio.run(_until_agents_answer(ready))
        yield ready
    asyncio.run(_delete_streams(nats_url, subjects))


async def _delete_streams(nats_url: str, subjects: Subjects) -> None:
    """Leave the shared nats-server as it was: this stack's streams and KV bucket go."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        prefix = subjects.namespace.upper() + "_"
        for info in await js.streams_info():
            name = info.config.name or ""
            if name.startswith(prefix) or name == f"KV_{prefix}ROOM_LEASES":
                await js.delete_stream(name)
    finally:
        await nc.close()


async def _until_agents_answer(stack: Stack) -> None:
    """Wait until both replicas host the agent (agents.list answers from each)."""
    nc = await nats.connect(stack.nats_url)
    try:
        for _ in range(200):
            try:
                reply = await nc.request(stack.subjects.agents_list, b"{}", timeout=1)
                if AGENT.encode() in reply.data:
                    return
            except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                pass
            await asyncio.sleep(0.1)
        raise TimeoutError("the runtime never hosted the agent")
    finally:
        await nc.close()


def test_a_message_through_the_gateway_gets_the_models_reply(stack: Stack) -> None:
    response = stack.post("Hello over the wire")
    assert response.status_code == 200, stack.log("gateway")
    body = response.json()
    assert body["did_respond"] is True
    assert body["agent_id"] == AGENT
    assert body["response_content"]["text"] == "Hello from the model!"
    assert any("Hello over the wire" in str(r["messages"]) for r in stack.fake.chat_requests())


def test_the_same_message_sent_twice_calls_the_model_once(stack: Stack) -> None:
    message_id = uuid.uuid4().hex

    def plans_for_it() -> int:  # the planner's calls for this message (evaluators call too)
        return sum(
            "Generate dialog" in str(r["messages"]) and message_id[:8] in str(r["messages"])
            for r in stack.fake.chat_requests()
        )

    text = f"only once please {message_id[:8]}"
    first = stack.post(text, room="room-dup", message_id=message_id)
    second = stack.post(text, room="room-dup", message_id=message_id)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert plans_for_it() == 1


def test_lifecycle_events_arrive_on_the_stream_with_payloads(stack: Stack) -> None:
    async def collect() -> list[AgentEventOccurred]:
        nc = await nats.connect(stack.nats_url)
        js = nc.jetstream()
        sub = await js.subscribe(stack.subjects.event(AGENT, "message.sent"), ordered_consumer=True)
        try:
            await asyncio.to_thread(stack.post, "announce this", room="room-events")
            events = []
            while True:
                msg = await sub.next_msg(timeout=10)
                event = msgspec.json.decode(msg.data, type=AgentEventOccurred)
                events.append(event)
                if (
                    event.data.get("text") == "Hello from the model!"
                    and event.room_id == "room-events"
                ):
                    return events
        finally:
            await nc.close()

    events = asyncio.run(collect())
    sent = events[-1]
    assert sent.event_type == "message.sent"
    assert sent.agent_id == AGENT
    assert sent.run_id
    assert sent.message_id


def planner_reply(marker: str, text: str) -> Callable[[dict[str, Any]], str]:
    """Answer the planner's call for the message containing ``marker`` with ``text``.

    The evaluator service calls the model too, at its own pace: a test that
    queued a reply would have it taken by whichever call comes first.
    """

    def respond(body: dict[str, Any]) -> str:
        prompt = str(body["messages"])
        return (
            plan(text)
            if "Generate dialog" in prompt and marker in prompt
            else plan("Hello from the model!")
        )

    return respond


def test_two_replicas_never_handle_one_room_at_the_same_time(stack: Stack) -> None:
    stack.fake.delay = 0.3
    stack.fake.max_in_flight = 0
    stack.fake.counted = lambda body: "Generate dialog" in str(body["messages"])
    try:

        async def burst(rooms: list[str]) -> list[int]:
            async with httpx.AsyncClient(timeout=30) as client:
                replies = await asyncio.gather(
                    *(
                        client.post(
                            f"{stack.base_url}/v1/agents/{AGENT}/messages",
                            json={"entity_id": "u", "room_id": room, "content": {"text": f"n{i}"}},
                        )
                        for i, room in enumerate(rooms)
                    )
                )
            return [r.status_code for r in replies]

        assert asyncio.run(burst(["busy-room"] * 4)) == [200] * 4
        one_room = stack.fake.max_in_flight
        stack.fake.max_in_flight = 0
        assert asyncio.run(burst([f"room-{i}" for i in range(4)])) == [200] * 4
        many_rooms = stack.fake.max_in_flight
    finally:
        stack.fake.delay = 0.0
        stack.fake.counted = lambda body: True
    assert one_room == 1
    assert many_rooms >= 2  # different rooms do run in parallel


def test_async_mode_acknowledges_then_streams_chunks_in_order_and_the_end(stack: Stack) -> None:
    stack.fake.responder = planner_reply("stream it", "Streaming across processes works.")

    async def run() -> tuple[HandleMessageResult, list[RunChunk], RunEnded]:
        nc = await nats.connect(stack.nats_url)
        run_id = uuid.uuid4().hex
        chunks: list[RunChunk] = []
        ended: asyncio.Future[RunEnded] = asyncio.get_running_loop().create_future()
        decoder = msgspec.json.Decoder(RunChunk | RunResponse | RunEnded)

        async def on_run(msg: Any) -> None:
            event = decoder.decode(msg.data)
            if isinstance(event, RunChunk):
                chunks.append(event)
            elif isinstance(event, RunEnded):
                ended.set_result(event)

        try:
            await nc.subscribe(stack.subjects.run_template(run_id), cb=on_run)
            request = HandleMessage(
                entity_id="u",
                room_id="room-async",
                content=Content(text="stream it"),
                run_id=run_id,
                reply_at_once=True,
            )
            reply = await nc.request(
                stack.subjects.message_handle(AGENT), msgspec.json.encode(request), timeout=10
            )
            ack = msgspec.json.decode(reply.data, type=HandleMessageResult)
            return ack, chunks, await asyncio.wait_for(ended, 20)
        finally:
            await nc.close()

    try:
        ack, chunks, ended = asyncio.run(run())
    finally:
        stack.fake.responder = None
    assert ack.accepted
    assert not ack.did_respond
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert "".join(c.text for c in chunks) == "Streaming across processes works."
    assert ended.status == "completed"
    assert ended.result is not None
    assert ended.result.response_content is not None
    assert ended.result.response_content.text == "Streaming across processes works."


def test_the_gateway_streams_a_reply_as_server_sent_events(stack: Stack) -> None:
    stack.fake.responder = planner_reply("sse please", "Server-sent events work.")
    events: list[tuple[str, dict[str, Any]]] = []
    try:
        with httpx.stream(
            "POST",
            f"{stack.base_url}/v1/agents/{AGENT}/messages/stream",
            json={"entity_id": "u", "room_id": "room-sse", "content": {"text": "sse please"}},
            timeout=30,
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            name = ""
            for line in response.iter_lines():
                if line.startswith("event: "):
                    name = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    events.append((name, json.loads(line.removeprefix("data: "))))
    finally:
        stack.fake.responder = None
    names = [n for n, _ in events]
    assert names[-1] == "completed"
    assert "".join(d["text"] for n, d in events if n == "chunk") == "Server-sent events work."
    unknown = httpx.post(
        f"{stack.base_url}/v1/agents/nobody/messages/stream",
        json={"entity_id": "u", "room_id": "r", "content": {"text": "hi"}},
        timeout=10,
    )
    assert unknown.status_code == 404  # not a stream that never ends


def test_the_terminal_chat_connector_talks_to_the_agent(stack: Stack) -> None:
    stack.fake.responder = planner_reply("hello there", "Hi from the terminal!")
    done = subprocess.run(
        [sys.executable, "-m", "elizamesh", "chat", "--agent", AGENT],
        input="hello there\n",
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NATS_URL": stack.nats_url, "ELIZA_NS": stack.subjects.namespace},
        check=False,
    )
    stack.fake.responder = None
    assert done.returncode == 0, done.stderr
    assert f"{AGENT}> Hi from the terminal!" in done.stdout


def test_the_embedding_service_fills_vectors_and_a_memory_search_finds_them(stack: Stack) -> None:
    assert stack.post("zebras zigzag", room="room-vectors").status_code == 200

    async def search() -> list[Memory]:
        broker = create_broker(stack.nats_url, name="e2e-search")
        async with broker:
            await broker.connect()
            db = memory_client(broker, agent_id=AGENT, subjects=stack.subjects)
            for _ in range(100):
                stored = await db.get_memories(table_name="messages", room_id="room-vectors")
                if stored and all(m.embedding is not None for m in stored):
                    query = letters("zebra zigzag", 26)  # the fake model's 'embedding'
                    return await db.search_memories(
                        table_name="messages", embedding=query, count=1, room_id="room-vectors"
                    )
                await asyncio.sleep(0.1)
        raise AssertionError("the vectors never arrived")

    [best] = asyncio.run(search())
    assert best.content.text == "zebras zigzag"


def test_the_evaluator_service_stores_the_facts_of_a_conversation(stack: Stack) -> None:
    fact = "<fact><claim>user-1 keeps bees in Lyon</claim><type>fact</type></fact>"

    def respond(body: dict[str, Any]) -> str:
        prompt = str(body["messages"])
        if "Extract facts" in prompt and "bees" in prompt:
            return f"<response><thought>t</thought><facts>{fact}</facts></response>"
        return plan("Bees are wonderful!")

    stack.fake.responder = respond
    try:
        assert stack.post("I keep bees in Lyon", room="room-facts").status_code == 200

        async def facts() -> list[str]:
            broker = create_broker(stack.nats_url, name="e2e-facts")
            async with broker:
                await broker.connect()
                db = memory_client(broker, agent_id=AGENT, subjects=stack.subjects)
                for _ in range(150):
                    stored = await db.get_memories(table_name="facts")
                    if stored:
                        return [m.content.text for m in stored]
                    await asyncio.sleep(0.1)
            raise AssertionError("no fact was stored:\n" + stack.log("evaluator"))

        assert asyncio.run(facts()) == ["user-1 keeps bees in Lyon"]
    finally:
        stack.fake.responder = None


def test_bad_input_gets_a_typed_400_and_every_service_stays_up(stack: Stack) -> None:
    for body in (
        b"not json",
        b'{"entity_id": "u", "content": {}}',
        b'{"entity_id": "u u", "room_id": "r", "content": {}}',
    ):
        response = httpx.post(
            f"{stack.base_url}/v1/agents/{AGENT}/messages",
            content=body,
            headers={"content-type": "application/json"},
            timeout=10,
        )
        assert response.status_code == 400
        assert response.json()["code"] == "bad_request"
    unknown = httpx.post(
        f"{stack.base_url}/v1/agents/nobody/messages",
        json={"entity_id": "u", "room_id": "r", "content": {"text": "hi"}},
        timeout=10,
    )
    assert unknown.status_code == 404
    assert all(r.poll() is None for r in stack.runtimes)
    assert stack.post("still there?").status_code == 200


def test_when_every_runtime_is_gone_the_gateway_says_unavailable(stack: Stack) -> None:
    for runtime in stack.runtimes:
        runtime.terminate()
        runtime.wait(timeout=15)
    response = stack.post("anyone?")
    assert response.status_code == 503
    assert response.json()["code"] == "unavailable"
