"""The turn over NATS: a runtime replica, the memory service, the embedding and evaluation
queues, all on a real nats-server, in this process (each on its own connection).

The same pipeline as in one process; what differs is injected (storage through
the memory service, vectors and evaluations through JetStream, the run on
``<ns>.run.<id>.*``). Checked here: concurrent turns keep their own run ids,
a failing step is ``failed`` on every channel, and a turn's storage round trips.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats
import pytest
import uvicorn
import websockets
from faststream.nats import NatsBroker
from nats.aio.client import Client
from nats.aio.msg import Msg

from contracts import Content, HandleMessage, HandleMessageResult, Subjects
from contracts.events import AgentEventOccurred, RunEnded
from services.gateway.main import create_app
from services.gateway.server import server_config
from services.memory.main import create_broker_for as memory_broker
from services.runtime.main import attach
from shared.agent.character import Character
from shared.agent.embedding_queue import RetryPolicy
from shared.agent.runtime import AgentRuntime
from shared.agent.types import Action, ActionResult, Callback, HandlerOptions, ModelType, State
from shared.bus import create_broker, request, start_serving, subscriptions_registered
from shared.client import ElizaOSClient, RunFailedError
from shared.config import Settings
from shared.embedding import EmbeddingWorker
from shared.evaluation import EvaluationWorker
from shared.hosting import AgentHost, HostedAgents
from shared.natsserver import free_port, wait_for_port
from shared.runs import follow_run
from shared.storage.sql import SqlAdapter
from tests.scripted import ScriptedModel, embed, plan

AGENT = "eliza-wire"
ROOMS = 16


@dataclass
class Wire:
    subjects: Subjects
    caller: NatsBroker
    runtime: AgentRuntime
    model: ScriptedModel
    storage: SqlAdapter
    memory_requests: list[tuple[float, str, str]] = field(default_factory=list)
    """(when, operation, the requester's inbox prefix) of every memory-service request."""
    workers: list[Any] = field(default_factory=list)

    async def send(self, text: str, room: str, **fields: Any) -> HandleMessageResult:
        message = HandleMessage(entity_id=f"user-{room}", room_id=room, content=Content(text=text))
        return await request(
            self.caller,
            self.subjects.message_handle(AGENT),
            msgspec.structs.replace(message, **fields),
            HandleMessageResult,
            timeout=20,
        )

    async def queues_drained(self) -> None:
        """Wait until the embedding and evaluation queues are empty and nothing is in flight."""
        js = self.caller.config.connection_state.stream
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pending = 0
            for stream in (self.subjects.embedding_stream, self.subjects.evaluation_stream):
                pending += (await js.stream_info(stream)).state.messages
            if pending == 0:
                await asyncio.sleep(0.3)  # the last batch's writes
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the queues were not drained in 10 s")


def lookup_action(barrier: asyncio.Barrier) -> Action:
    async def handler(
        runtime: AgentRuntime,
        message: Any,
        state: State,
        options: HandlerOptions,
        callback: Callback | None,
        responses: Any,
    ) -> ActionResult:
        del runtime, state, options, callback, responses
        await asyncio.wait_for(barrier.wait(), timeout=15)
        return ActionResult(text=f"looked up for {message.room_id}")

    return Action("LOOKUP", handler, "Look something up.")


@pytest.fixture
async def raw(nats_url: str) -> AsyncIterator[Client]:
    nc = await nats.connect(nats_url)
    yield nc
    await nc.close()


@pytest.fixture
async def wire(
    nats_url: str, subjects: Subjects, tmp_path: Path, raw: Client
) -> AsyncIterator[Wire]:
    database_url = f"sqlite:///{tmp_path / 'memory.db'}"
    storage = SqlAdapter.from_url(database_url, "elizamesh-memory")
    await storage.init()
    settings = Settings(nats_url=nats_url, eliza_ns=subjects.namespace, database_url=database_url)
    model = ScriptedModel()
    memory = memory_broker(settings, storage)
    runtime_broker = create_broker(nats_url, name="runtime-under-test")
    workers_broker = create_broker(nats_url, name="workers-under-test")
    caller = create_broker(nats_url, name="caller")
    host = AgentHost(
        runtime_broker,
        subjects,
        HostedAgents(plugins=()),
        remote_embeddings=True,
        remote_evaluators=True,
    )
    seen: list[tuple[float, str, str]] = []

    async def count(msg: Msg) -> None:
        requester = msg.reply.rsplit(".", 1)[0]  # each connection has its own inbox prefix
        seen.append((time.monotonic(), msg.subject.rsplit(".", 1)[-1], requester))

    await raw.subscribe(subjects.memory_template, cb=count)
    try:
        async with memory, runtime_broker, workers_broker, caller:
            await start_serving(memory)
            await runtime_broker.start()
            await workers_broker.start()
            await caller.start()
            await host.open()
            runtime = await host.add(
                Character(name="Eliza", id=AGENT, bio=["A helpful agent."]),
                [model.plugin(embeddings=True)],
                {"TASK_TICK_SECONDS": "3600"},
            )
            subscribers = attach(runtime_broker, subjects, host)
            for subscriber in subscribers.values():
                await subscriber.start()
            await subscriptions_registered(raw)
            wired = Wire(subjects, caller, runtime, model, storage, seen)
            # As in the embedding service: a runtime with the embedding model only, no storage.
            models = AgentRuntime(character=Character(name="embedder"))
            models.register_model(ModelType.TEXT_EMBEDDING, embed)
            embedding = EmbeddingWorker(
                workers_broker, subjects, models, retry=RetryPolicy(backoff=0.05)
            )
            evaluation = EvaluationWorker(workers_broker, subjects, host, backoff=0.05)
            for worker in (embedding, evaluation):
                await worker.open()
            try:
                yield wired
            finally:
                for worker in (embedding, evaluation):
                    await worker.close()
                await host.stop()
                js = caller.config.connection_state.stream
                for info in await js.streams_info():
                    if info.config.name and info.config.name.startswith(subjects.namespace.upper()):
                        await js.delete_stream(info.config.name)
    finally:
        await storage.close()


async def events_of(raw: Client, subjects: Subjects) -> list[AgentEventOccurred]:
    """Every event on the stream so far (read until it stays quiet for a second)."""
    js = raw.jetstream()
    subscription = await js.subscribe(
        subjects.events_template, stream=subjects.events_stream, ordered_consumer=True
    )
    decoder = msgspec.json.Decoder(AgentEventOccurred)
    events: list[AgentEventOccurred] = []
    try:
        while True:
            msg = await subscription.next_msg(timeout=1)
            events.append(decoder.decode(msg.data))
    except TimeoutError:
        pass
    finally:
        await subscription.unsubscribe()
    return events


async def test_sixteen_turns_of_one_agent_on_one_replica_each_keep_their_run_id(
    wire: Wire, raw: Client
) -> None:
    wire.runtime.register_action(lookup_action(asyncio.Barrier(ROOMS)))
    wire.model.default = plan("done", actions="LOOKUP,REPLY")
    results = await asyncio.gather(*(wire.send(f"q{i}", f"room-{i}") for i in range(ROOMS)))
    assert all(r.status == "completed" for r in results), [r.error for r in results]
    run_of = {r.message_id: r.run_id for r in results}
    assert len(set(run_of.values())) == ROOMS
    events = await events_of(raw, wire.subjects)
    named = [(e.message_id, e.run_id) for e in events if e.message_id in run_of]
    assert len(named) >= ROOMS * 7  # run, message, two actions started and completed
    assert [(m, r) for m, r in named if m is None or run_of[m] != r] == []
    view = wire.storage.for_agent(AGENT)
    for result, i in zip(results, range(ROOMS), strict=True):
        room = f"room-{i}"
        stored = await view.get_memories(table_name="messages", room_id=room)
        action_rows = [m for m in stored if m.content.metadata.get("type") == "action_result"]
        assert len(action_rows) == 2
        assert {m.content.metadata["run_id"] for m in action_rows} == {result.run_id}
        logs = await view.get_logs(room_id=room)
        assert logs
        assert {entry.body["run_id"] for entry in logs} == {result.run_id}


async def test_a_failing_step_is_failed_on_the_reply_the_run_the_events_and_the_client(
    wire: Wire, raw: Client, nats_url: str
) -> None:
    wire.model.default = plan("nothing", actions="SEARCH_WEB")
    replied = await wire.send("search", "room-fail")
    assert replied.status == "failed"
    assert replied.error is not None
    assert "SEARCH_WEB" in replied.error
    ended = [e for e in await events_of(raw, wire.subjects) if e.event_type == "run.ended"]
    assert [e.data["status"] for e in ended if e.message_id == replied.message_id] == ["failed"]
    # The run: its end goes to the .failed subject, with the same status and error.
    last: Any = None
    message = HandleMessage(entity_id="u", room_id="room-fail-2", content=Content(text="again"))
    async for event, _raw in follow_run(wire.caller, wire.subjects, AGENT, message, timeout=20):
        last = event
    assert isinstance(last, RunEnded)
    assert last.status == "failed"
    assert last.result is not None
    assert last.result.status == "failed"
    # The client: on_error fires.
    errors: list[BaseException] = []
    done = asyncio.Event()

    async def on_error(error: BaseException) -> None:
        errors.append(error)

    async def on_complete() -> None:
        done.set()

    async with ElizaOSClient(nats_url, namespace=wire.subjects.namespace, timeout=20) as client:
        ack = await client.handle_message(
            AGENT,
            HandleMessage(entity_id="u", room_id="room-fail-3", content=Content(text="once more")),
            on_error=on_error,
            on_complete=on_complete,
        )
        assert ack.status == "accepted"
        await asyncio.wait_for(done.wait(), timeout=20)
    [error] = errors
    assert isinstance(error, RunFailedError)
    assert "SEARCH_WEB" in str(error)


async def test_a_turn_makes_at_most_three_memory_requests_before_its_reply_and_six_in_all(
    wire: Wire,
) -> None:
    wire.model.default = plan("counted", actions="REPLY")
    await wire.send("warm up", "room-count")
    await wire.queues_drained()
    runtime_inbox = next(who for _, op, who in wire.memory_requests if op == "begin_turn")
    turns = 4
    wire.memory_requests.clear()
    before: list[list[str]] = []
    for i in range(turns):
        sent_at = time.monotonic()
        result = await wire.send(f"message {i}", "room-count")
        replied_at = time.monotonic()
        assert result.did_respond
        before.append(
            [
                op
                for t, op, who in wire.memory_requests
                if who == runtime_inbox and sent_at <= t <= replied_at
            ]
        )
    await wire.queues_drained()
    operations = [op for _, op, _ in wire.memory_requests]
    assert max(len(ops) for ops in before) <= 3, before
    assert len(operations) / turns <= 6, operations


async def test_no_memory_reply_carries_a_vector_unless_asked(wire: Wire) -> None:
    wire.model.default = plan("vectors stay home", actions="REPLY")
    for i in range(3):
        await wire.send(f"vector {i}", "room-vectors")
    await wire.queues_drained()
    stored = await wire.storage.for_agent(AGENT).get_memories(
        table_name="messages", room_id="room-vectors", include_embeddings=True
    )
    assert any(m.embedding for m in stored)  # the vectors exist...
    reader = wire.runtime.adapter
    for memories in (
        await reader.get_memories(table_name="messages", room_id="room-vectors"),
        await reader.get_memories_by_ids([m.id for m in stored]),
    ):
        assert memories
        assert all(m.embedding is None for m in memories)  # ...but travel only when asked
    [asked] = await reader.get_memories_by_ids([stored[0].id], include_embeddings=True)
    assert asked.embedding is not None


@pytest.fixture
async def gateway(wire: Wire, nats_url: str) -> AsyncIterator[str]:
    """The gateway in front of the wired runtime, served in this test's event loop."""
    settings = Settings(nats_url=nats_url, eliza_ns=wire.subjects.namespace, request_timeout=20)
    port = free_port()
    config = server_config(
        create_app(settings), host="127.0.0.1", port=port, read_timeout=10, log_level="warning"
    )
    server = uvicorn.Server(config)  # as services.gateway serves it
    serving = asyncio.create_task(server.serve())
    await asyncio.to_thread(wait_for_port, "127.0.0.1", port, timeout=10)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


async def test_a_failing_step_is_failed_over_http_server_sent_events_and_the_websocket(
    wire: Wire, gateway: str
) -> None:
    wire.model.default = plan("nothing", actions="SEARCH_WEB")
    path = f"/v1/agents/{AGENT}"
    body = {"entity_id": "u", "room_id": "room-http-fail", "content": {"text": "search"}}
    async with httpx.AsyncClient(base_url=f"http://{gateway}", timeout=30) as http:
        reply = await http.post(f"{path}/messages", json=body)
        assert reply.status_code == 200, reply.text
        assert reply.json()["status"] == "failed"
        assert "SEARCH_WEB" in reply.json()["error"]
        events: list[tuple[str, dict[str, Any]]] = []
        streamed = {**body, "room_id": "room-sse-fail"}
        async with http.stream("POST", f"{path}/messages/stream", json=streamed) as stream:
            name = ""
            async for line in stream.aiter_lines():
                if line.startswith("event:"):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("data:"):
                    events.append((name, json.loads(line.split(":", 1)[1])))
    assert events[-1][0] == "failed"
    assert events[-1][1]["status"] == "failed"
    assert events[-1][1]["result"]["status"] == "failed"
    async with websockets.connect(f"ws://{gateway}{path}/ws") as socket:
        await socket.send(json.dumps({**body, "room_id": "room-ws-fail"}))
        frames: list[dict[str, Any]] = []
        while not frames or frames[-1]["event"] not in {"completed", "failed"}:
            frames.append(json.loads(await asyncio.wait_for(socket.recv(), 20)))
    assert frames[-1]["event"] == "failed"
    assert frames[-1]["data"]["status"] == "failed"


async def test_one_message_id_in_two_chats_is_two_turns_each_with_its_own_reply(
    wire: Wire,
) -> None:
    wire.model.large.extend([plan("reply number 1"), plan("reply number 2")])
    chat_a = await wire.send("the door code is 7788", "tg-chat-A", message_id="42")
    chat_b = await wire.send("what's the weather like?", "tg-chat-B", message_id="42")
    assert chat_a.response_content is not None
    assert chat_b.response_content is not None
    assert (chat_a.response_content.text, chat_b.response_content.text) == (
        "reply number 1",
        "reply number 2",
    )
    assert len(wire.model.prompts["TEXT_LARGE"]) == 2
    stored = await wire.runtime.adapter.get_memories(table_name="messages", room_id="tg-chat-B")
    assert [m.content.text for m in stored] == ["reply number 2", "what's the weather like?"]
