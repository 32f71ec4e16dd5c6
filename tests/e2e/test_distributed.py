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
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import msgspec
import nats
import pytest
import websockets

from contracts import Content, HandleMessage, HandleMessageResult, Subjects
from contracts.events import AgentEventOccurred, RunChunk, RunEnded, RunResponse
from contracts.records import Memory
from shared.bus import create_broker
from shared.client import ElizaOSClient
from shared.natsserver import free_port, wait_for_port
from shared.processes import service_process
from shared.storage.client import memory_client
from tests.fake_openai import FakeOpenAI, fake_openai_server, letters
from tests.inbox import Inbox, webhook_inbox
from tests.otlp import Collector, SpanRecord, otlp_collector
from tests.scripted import plan

pytestmark = pytest.mark.e2e

AGENT = "eliza"


CLOCK_SAYS = "The clock service says: tea at four."


@dataclass
class Stack:
    base_url: str
    nats_url: str
    subjects: Subjects
    fake: FakeOpenAI
    runtimes: list[subprocess.Popen[bytes]]
    logs: Path
    webhook: Inbox
    spans: Collector

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
    with (
        fake_openai_server() as fake,
        webhook_inbox() as inbox,
        otlp_collector() as spans,
        ExitStack() as processes,
    ):
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
            "REMOTE_PROVIDERS": "CLOCK",
            "CLOCK_SAYS": CLOCK_SAYS,
            "OTEL_EXPORTER_OTLP_ENDPOINT": spans.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_METRIC_EXPORT_INTERVAL": "500",
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
        processes.enter_context(
            service_process("clock", env, log_dir=logs, module="examples.clock_provider")
        )
        processes.enter_context(
            service_process(
                "webhook",
                env,
                log_dir=logs,
                module="elizamesh",
                args=["webhook", "--source", "webhook", "--url", inbox.url],
            )
        )
        wait_for_port("127.0.0.1", port, timeout=30)
        ready = Stack(
            f"http://127.0.0.1:{port}", nats_url, subjects, fake, runtimes, logs, inbox, spans
        )
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
                stored = await db.get_memories(
                    table_name="messages", room_id="room-vectors", include_embeddings=True
                )
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


def test_a_remote_provider_service_contributes_to_the_state(stack: Stack) -> None:
    stack.fake.responder = planner_reply("what time", "Almost tea time.")
    try:
        assert stack.post("what time is it?", room="room-clock").status_code == 200
    finally:
        stack.fake.responder = None
    prompts = [str(r["messages"]) for r in stack.fake.chat_requests()]
    planner = [p for p in prompts if "Generate dialog" in p and "what time is it?" in p]
    assert planner
    assert CLOCK_SAYS in planner[-1]


def test_agents_are_added_stopped_started_and_deleted_over_http(stack: Stack) -> None:
    base = f"{stack.base_url}/v1/agents"
    ada = {"character": {"name": "Ada", "id": "ada", "bio": ["Counts things."]}}
    added = httpx.post(base, json=ada, timeout=30)
    assert added.status_code == 201, stack.log("r0/runtime")
    assert added.json() == {
        "type": "agent.status.v1",
        "id": "ada",
        "name": "Ada",
        "enabled": True,
        "deleted": False,
    }
    assert httpx.post(base, json=ada, timeout=30).status_code == 409
    bad = httpx.post(base, json={"character": {"bio": "no name"}}, timeout=30)
    assert bad.status_code == 400
    assert bad.json()["code"] == "bad_request"

    def say(text: str) -> httpx.Response:
        body = {
            "entity_id": "u",
            "room_id": f"room-ada-{uuid.uuid4().hex[:6]}",
            "content": {"text": text},
        }
        return httpx.post(f"{base}/ada/messages", json=body, timeout=30)

    # Several turns, so both replicas take some: the one that did not add Ada starts its copy.
    assert [say(f"hi ada {i}").status_code for i in range(4)] == [200] * 4
    listed = {a["id"]: a["enabled"] for a in httpx.get(base, timeout=10).json()["agents"]}
    assert listed["ada"] is True
    assert listed[AGENT] is True

    stopped = httpx.post(f"{base}/ada/stop", timeout=30)
    assert stopped.json()["enabled"] is False
    assert [say("are you there?").status_code for _ in range(4)] == [404] * 4
    assert httpx.post(f"{base}/ada/start", timeout=30).json()["enabled"] is True
    assert say("back?").status_code == 200

    deleted = httpx.delete(f"{base}/ada", timeout=30)
    assert deleted.json()["deleted"] is True
    assert say("gone?").status_code == 404
    assert "ada" not in {a["id"] for a in httpx.get(base, timeout=10).json()["agents"]}
    assert httpx.post(f"{base}/ada/start", timeout=30).status_code == 404


def test_every_service_reports_its_health_and_the_gateway_is_ready(stack: Stack) -> None:
    def ready() -> dict[str, Any]:
        answer = httpx.get(f"{stack.base_url}/v1/ready", timeout=10)
        assert answer.status_code == 200, answer.text
        return cast(dict[str, Any], answer.json())

    # A worker service says "not ok" until its consumers run, a moment after it answers.
    deadline = time.monotonic() + 30
    body = ready()
    while not all(s["ok"] for s in body["services"]) and time.monotonic() < deadline:
        time.sleep(0.2)
        body = ready()
    assert body["ready"] is True
    services = [s["service"] for s in body["services"]]
    for service in ("memory", "embedding", "evaluator", "gateway", "webhook", "clock-provider"):
        assert service in services
    assert services.count("runtime") == 2  # both replicas answered
    assert [s for s in body["services"] if not s["ok"]] == []
    memory = next(s for s in body["services"] if s["service"] == "memory")
    assert memory["details"]["database_ms"] >= 0
    embedding = next(s for s in body["services"] if s["service"] == "embedding")
    assert {c["name"] for c in embedding["consumers"]} == {
        "embedding-high",
        "embedding-normal",
        "embedding-low",
    }
    assert all(c["alive"] and c["pending"] >= 0 for c in embedding["consumers"])


def test_the_health_command_is_a_containers_health_check(stack: Stack) -> None:
    def health(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "NATS_URL": stack.nats_url, "ELIZA_NS": stack.subjects.namespace}
        return subprocess.run(
            [sys.executable, "-m", "elizamesh", "health", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    runtime = health("--service", "runtime", "--this-host")
    assert runtime.returncode == 0, runtime.stdout + runtime.stderr
    assert runtime.stdout.count("runtime") == 2  # both replicas run on this host
    assert "memory" not in runtime.stdout
    missing = health("--service", "no-such-service")
    assert missing.returncode == 1
    assert "no service answered" in missing.stdout


def test_the_client_handles_messages_with_callbacks_and_iterates_events(stack: Stack) -> None:
    stack.fake.responder = planner_reply("client call", "Hello, client.")

    async def run() -> tuple[list[str], list[str], bool, list[str], dict[str, bool]]:
        chunks: list[str] = []
        responses: list[str] = []
        done = asyncio.Event()
        async with ElizaOSClient(stack.nats_url, namespace=stack.subjects.namespace) as client:
            found = await client.get_agent_by_name("eliza")
            assert found is not None
            assert found.id == AGENT
            events = client.events(agent_id=AGENT, event_type="message.sent")
            first_event = asyncio.ensure_future(anext(events))
            await asyncio.sleep(0.3)  # the ordered consumer is in place before the turn starts

            async def on_chunk(text: str, _message_id: str | None) -> None:
                chunks.append(text)

            async def on_response(content: Content) -> None:
                responses.append(content.text)

            async def on_complete() -> None:
                done.set()

            message = HandleMessage(
                entity_id="u", room_id="room-client", content=Content(text="client call")
            )
            ack = await client.handle_message(
                AGENT,
                message,
                on_stream_chunk=on_chunk,
                on_response=on_response,
                on_complete=on_complete,
            )
            assert ack.accepted
            await asyncio.wait_for(done.wait(), 20)
            event = await asyncio.wait_for(first_event, 10)
            batch = await client.handle_messages(
                [
                    (
                        AGENT,
                        HandleMessage(
                            entity_id="u", room_id=f"room-b{i}", content=Content(text="hi")
                        ),
                    )
                    for i in range(3)
                ]
                + [
                    (
                        "nobody",
                        HandleMessage(entity_id="u", room_id="r", content=Content(text="hi")),
                    )
                ]
            )
            keys = await client.validate_api_keys([AGENT])
            return (
                chunks,
                responses,
                event.event_type == "message.sent",
                ["ok" if b.error is None else type(b.error).__name__ for b in batch],
                keys,
            )

    try:
        chunks, responses, saw_event, batch, keys = asyncio.run(run())
    finally:
        stack.fake.responder = None
    assert "".join(chunks) == "Hello, client."
    assert responses == ["Hello, client."]
    assert saw_event
    assert batch == ["ok", "ok", "ok", "NotFound"]
    assert keys == {AGENT: True}


def test_a_message_sent_to_a_platform_reaches_its_webhook(stack: Stack) -> None:
    stack.fake.responder = lambda body: (
        plan("Posting this to the hook.", actions="SEND_MESSAGE")
        if "Generate dialog" in str(body["messages"]) and "tell the hook" in str(body["messages"])
        else plan("Hello from the model!")
    )
    try:
        body = {
            "entity_id": "u",
            "room_id": "room-hook",
            "content": {"text": "tell the hook", "source": "webhook"},
        }
        reply = httpx.post(f"{stack.base_url}/v1/agents/{AGENT}/messages", json=body, timeout=30)
        assert reply.status_code == 200
        delivered = stack.webhook.wait_for(1, timeout=20)
    finally:
        stack.fake.responder = None
    [sent] = delivered
    assert sent["type"] == "outbound.send.v1"
    assert sent["agent_id"] == AGENT
    assert sent["source"] == "webhook"
    assert sent["room_id"] == "room-hook"
    assert sent["content"]["text"] == "Posting this to the hook."


def test_the_websocket_streams_replies_and_survives_a_bad_frame(stack: Stack) -> None:
    stack.fake.responder = planner_reply("socket hello", "Hello over a socket.")

    async def talk() -> list[dict[str, Any]]:
        url = stack.base_url.replace("http://", "ws://") + f"/v1/agents/{AGENT}/ws"
        frames: list[dict[str, Any]] = []
        async with websockets.connect(url) as socket:
            await socket.send("this is not json")
            frames.append(json.loads(await socket.recv()))
            deep = "[" * 100_000 + "]" * 100_000  # deeper than any decoder recurses
            await socket.send(f'{{"entity_id": "u", "room_id": "room-ws", "extra": {deep}}}')
            frames.append(json.loads(await socket.recv()))
            message = {"entity_id": "u", "room_id": "room-ws", "content": {"text": "socket hello"}}
            await socket.send(json.dumps(message))
            while frames[-1]["event"] not in {"completed", "failed"}:
                frames.append(json.loads(await asyncio.wait_for(socket.recv(), 20)))
        return frames

    try:
        frames = asyncio.run(talk())
    finally:
        stack.fake.responder = None
    assert [f["event"] for f in frames[:2]] == ["error", "error"]
    assert [f["data"]["code"] for f in frames[:2]] == ["bad_request", "bad_request"]
    assert frames[-1]["event"] == "completed"
    text = "".join(f["data"]["text"] for f in frames if f["event"] == "chunk")
    assert text == "Hello over a socket."


def test_one_message_is_one_trace_from_the_gateway_through_every_service(stack: Stack) -> None:
    message_id = str(uuid.uuid4())  # a UUID is kept as it is (other ids are mapped per room)
    reply = stack.post("follow me through", room="room-trace", message_id=message_id)
    assert reply.status_code == 200
    spans = stack.spans

    def turn() -> SpanRecord | None:
        found = spans.find(lambda s: s.attributes.get("elizamesh.message_id") == message_id)
        return found[0] if found else None

    def services() -> set[str]:
        current = turn()
        return {s.service for s in spans.trace(current.trace_id)} if current else set()

    def finished(name: str) -> bool:
        current = turn()  # a span is exported when it ends, after its children
        return current is not None and any(s.name == name for s in spans.trace(current.trace_id))

    wanted = {f"elizamesh-{n}" for n in ("gateway", "runtime", "memory", "embedding", "evaluator")}

    def rooted() -> bool:  # the HTTP request's span ends (and is exported) last
        current = turn()
        return current is not None and any(not s.parent_id for s in spans.trace(current.trace_id))

    spans.wait_until(
        lambda: (
            wanted <= services()
            and finished("evaluate")
            and finished("embedding store")
            and rooted()
        ),
        timeout=30,
    )
    the_turn = turn()
    assert the_turn is not None
    trace = spans.trace(the_turn.trace_id)

    [root] = [s for s in trace if not s.parent_id]
    assert root.service == "elizamesh-gateway"  # the HTTP request is where the trace starts
    assert "/v1/agents/" in root.name
    assert root.trace_id == reply.headers["x-trace-id"]  # what to look up in Jaeger
    assert root.attributes["elizamesh.request_id"] == reply.headers["x-request-id"]

    def under(span: SpanRecord, ancestor: SpanRecord) -> bool:
        return ancestor.span_id in {a.span_id for a in spans.ancestors(span)}

    assert the_turn.service == "elizamesh-runtime"
    assert under(the_turn, root)
    models = [s for s in trace if s.name.startswith("model TEXT_")]
    planning = [m for m in models if m.service == "elizamesh-runtime"]
    assert planning
    assert all(under(m, the_turn) for m in planning)
    memory = [s for s in trace if s.service == "elizamesh-memory"]
    assert any(under(m, the_turn) for m in memory)  # storage calls made by the turn
    assert any(s.attributes.get("db.system") for s in memory)  # down to the SQL statements
    [stored] = [
        s
        for s in trace
        if s.name == "embedding store" and s.attributes.get("memory_id") == message_id
    ]
    assert stored.service == "elizamesh-embedding"
    assert under(stored, the_turn)  # the runtime queued it during the turn
    evaluated = [s for s in trace if s.name == "evaluate"]
    assert evaluated
    # run.ended is published when the turn is over, by the runtime's handling of the message
    handle = f"process {stack.subjects.namespace}.agent.{{agent_id}}.message.handle"
    [handling] = [a for a in spans.ancestors(the_turn) if a.name == handle]
    assert handling.service == "elizamesh-runtime"
    assert all(
        under(e, handling) and not under(e, the_turn) for e in evaluated
    )  # run.ended was published by the turn
    reflecting = [m for m in models if m.service == "elizamesh-evaluator"]
    assert reflecting
    assert all(any(under(m, e) for e in evaluated) for m in reflecting)
    assert len({s.trace_id for s in trace}) == 1


def test_the_services_export_metrics_for_messages_latency_tokens_and_queue_depth(
    stack: Stack,
) -> None:
    assert stack.post("count me", room="room-metrics").status_code == 200
    metrics = stack.spans

    def arrived() -> bool:
        return all(
            metrics.metric(name)
            for name in (
                "elizamesh.messages.handled",
                "elizamesh.turn.duration",
                "elizamesh.model.duration",
                "elizamesh.model.tokens",
            )
        ) and {"embedding-high", "embedding-normal", "embedding-low"} <= {
            p.attributes.get("consumer") for p in metrics.metric("elizamesh.queue.depth")
        }

    metrics.wait_until(arrived, timeout=30)  # queues recorded at start, then per message
    handled = metrics.metric("elizamesh.messages.handled")
    assert {p.service for p in handled} == {"elizamesh-runtime"}
    assert sum(p.value for p in handled) >= 1
    assert all(p.value >= 1 for p in metrics.metric("elizamesh.turn.duration"))  # histogram counts
    tokens = metrics.metric("elizamesh.model.tokens")
    assert {p.attributes["direction"] for p in tokens} >= {"input"}
    depths = metrics.metric("elizamesh.queue.depth")
    assert {p.service for p in depths} >= {"elizamesh-embedding", "elizamesh-evaluator"}
    assert all(p.value >= 0 for p in depths)


def test_every_service_logs_one_json_object_per_line(stack: Stack) -> None:
    assert stack.post("log me", room="room-logs").status_code == 200
    for name in ("memory", "embedding", "evaluator", "gateway", "r0/runtime", "r1/runtime"):
        lines = [line for line in stack.log(name).splitlines() if line.strip()]
        assert lines, name
        for line in lines:
            record = json.loads(line)  # a plain-text line fails here
            assert {"time", "level", "logger", "message"} <= set(record), (name, line)


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
