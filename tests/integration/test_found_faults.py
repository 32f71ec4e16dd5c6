"""Issue 16's "Found" items that had no test of their own, on real servers.

- Streamed (``reply_at_once``) turns count against the same per-replica bound
  as the others (43 model calls ran at once against a bound of 16).
- Bad input through the gateway is an HTTP 400 ``bad_request``, not a 500
  (invalid UTF-8, JSON nested 100,000 deep, an integer beyond int64, a NUL in
  text on Postgres), and a 300 KB plugin name to ``POST /v1/agents`` leaves
  the replica that took it connected and serving.
- Postgres down: every caller gets a typed, retryable ``unavailable`` (on a
  memory request and on a turn), a turn cut by the outage never leaves a
  reply without the message it answers, and everything works again once
  Postgres is back, with nothing restarted.

A Postgres that is stopped is a private cluster (``initdb`` in a temporary
folder), never the shared one.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats
import pytest
import uvicorn
from faststream.nats import NatsBroker
from nats.aio.client import Client

from contracts import Content, Error, HandleMessage, HandleMessageResult, Subjects
from services.gateway.main import create_app
from services.memory.main import create_broker_for as memory_broker
from shared.agent.runtime import AgentRuntime
from shared.agent.types import ModelType, Plugin
from shared.bus import start_serving
from shared.config import Settings
from shared.hosting import AgentHost
from shared.natsserver import free_port, wait_for_port
from shared.storage.sql import SqlAdapter
from tests.conftest import unavailable
from tests.faults.stack import PostgresCluster, replies_stored
from tests.integration.test_rooms import AGENT, _replica
from tests.scripted import plan

_REPLY = msgspec.json.Decoder(HandleMessageResult | Error)


@dataclass
class CountingModel:
    """A planner that records how many of its calls overlap across every room.

    Its ``plugin`` has the shape ``tests.integration.test_rooms._replica``
    expects of ``SlowModel``; calls wait for ``gate`` when one is set.
    """

    delay: float = 0.05
    running: int = 0
    most: int = 0
    calls: int = 0
    gate: asyncio.Event | None = None
    called: asyncio.Event = field(default_factory=asyncio.Event)

    def plugin(self) -> Plugin:
        async def answer(runtime: AgentRuntime, params: dict[str, Any]) -> str:
            del runtime
            room = ([*re.findall(r"room:([\w-]+)", str(params.get("prompt"))), "?"])[0]
            self.calls += 1
            self.called.set()
            self.running += 1
            self.most = max(self.most, self.running)
            try:
                if self.gate is not None:
                    await self.gate.wait()
                await asyncio.sleep(self.delay)
            finally:
                self.running -= 1
            return plan(f"noted room:{room}")

        return Plugin(
            name="counting", models={ModelType.TEXT_LARGE: answer, ModelType.TEXT_SMALL: answer}
        )


@dataclass
class Replica:
    subjects: Subjects
    nc: Client
    host: AgentHost
    model: CountingModel

    async def send(
        self, text: str, room: str, *, message_id: str | None = None, **extra: Any
    ) -> HandleMessageResult | Error:
        """Send a message with a plain NATS client; return the reply as it came."""
        message = HandleMessage(
            entity_id=f"user-{room}", room_id=room, content=Content(text=f"{text} room:{room}")
        )
        if message_id:
            extra["message_id"] = message_id
        message = msgspec.structs.replace(message, **extra)
        reply = await self.nc.request(
            self.subjects.message_handle(AGENT), msgspec.json.encode(message), timeout=60
        )
        decoded: HandleMessageResult | Error = _REPLY.decode(reply.data)
        return decoded


async def _cleanup_streams(nc: Client, subjects: Subjects) -> None:
    js = nc.jetstream()
    for info in await js.streams_info():
        name = info.config.name or ""
        if subjects.namespace.upper() in name:
            await js.delete_stream(name)


@asynccontextmanager
async def _run_replica(
    nats_url: str, subjects: Subjects, database_url: str, *, turns: int, gate: bool = False
) -> AsyncIterator[tuple[Replica, SqlAdapter, NatsBroker]]:
    storage = SqlAdapter.from_url(database_url, "elizamesh-memory")
    await storage.init()
    settings = Settings(nats_url=nats_url, eliza_ns=subjects.namespace, database_url=database_url)
    memory = memory_broker(settings, storage)
    model = CountingModel(gate=asyncio.Event() if gate else None)
    nc = await nats.connect(nats_url)
    broker: NatsBroker | None = None
    host: AgentHost | None = None
    try:
        async with memory:
            await start_serving(memory)
            broker, host = await _replica(
                nats_url,
                subjects,
                model,  # type: ignore[arg-type]  # the same plugin() as SlowModel
                lease=10.0,
                turns=turns,
            )
            yield Replica(subjects, nc, host, model), storage, broker
            if model.gate is not None:
                model.gate.set()
    finally:
        if host is not None and broker is not None:
            await host.stop()
            await broker.stop()
        await _cleanup_streams(nc, subjects)
        await nc.close()
        await storage.close()


@pytest.fixture
async def sqlite_replica(
    nats_url: str, subjects: Subjects, tmp_path: Path
) -> AsyncIterator[Replica]:
    async with _run_replica(
        nats_url, subjects, f"sqlite:///{tmp_path / 'memory.db'}", turns=2, gate=True
    ) as (replica, _storage, _broker):
        yield replica


async def test_streamed_and_plain_turns_together_never_exceed_the_replicas_bound(
    sqlite_replica: Replica,
) -> None:
    replica = sqlite_replica
    assert replica.model.gate is not None
    # Eight rooms, so nothing but the replica's bound (2) keeps them apart:
    # four plain requests and four streamed ones (acknowledged at once,
    # the outcome on their run), all in flight before any model call ends.
    plain = [asyncio.create_task(replica.send("plain", f"room-plain-{i}")) for i in range(4)]
    streamed = [
        await replica.send(
            "streamed", f"room-streamed-{i}", run_id=uuid.uuid4().hex, reply_at_once=True
        )
        for i in range(4)
    ]
    assert all(isinstance(r, HandleMessageResult) and r.accepted for r in streamed), streamed
    await asyncio.wait_for(replica.model.called.wait(), timeout=30)
    await asyncio.sleep(0.5)  # let any turn that would overrun the bound reach the model
    assert replica.model.running == 2
    replica.model.gate.set()
    results = await asyncio.gather(*plain)
    assert all(isinstance(r, HandleMessageResult) and r.status == "completed" for r in results)
    deadline = time.monotonic() + 60
    while replica.model.calls < 8 and time.monotonic() < deadline:  # noqa: ASYNC110 - waits for the streamed turns
        await asyncio.sleep(0.1)
    assert replica.model.calls >= 8
    assert replica.model.most == 2


@dataclass
class Gateway:
    http: httpx.AsyncClient
    replica: Replica
    broker: NatsBroker


@pytest.fixture
async def gateway_on_postgres(
    nats_url: str, subjects: Subjects, postgres_url: str
) -> AsyncIterator[Gateway]:
    async with _run_replica(nats_url, subjects, postgres_url, turns=4) as (
        replica,
        _storage,
        broker,
    ):
        settings = Settings(nats_url=nats_url, eliza_ns=subjects.namespace, request_timeout=30)
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings), port=port, log_level="warning")
        )
        serving = asyncio.create_task(server.serve())
        await asyncio.to_thread(wait_for_port, "127.0.0.1", port, timeout=10)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
                yield Gateway(client, replica, broker)
        finally:
            server.should_exit = True
            await serving


BAD_MESSAGES = {
    "invalid UTF-8": b'{"entity_id": "u", "room_id": "r", "content": {"text": "\xff\xfe"}}',
    "JSON 100,000 deep": b'{"entity_id": "u", "room_id": "r", "content": '
    + b"[" * 100_000
    + b"]" * 100_000
    + b"}",
    "integer beyond int64": b'{"entity_id": "u", "room_id": "r", "content": {"text": "x"}, '
    b'"world_id": 99999999999999999999999}',
    "NUL in text, on Postgres": b'{"entity_id": "u", "room_id": "room-nul", '
    b'"content": {"text": "nul \\u0000 here"}}',
}


def _short_bad_request(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 400, (response.status_code, response.text[:300])
    error: dict[str, Any] = response.json()
    assert error["code"] == "bad_request"
    assert len(response.content) < 4096  # the offending value is not echoed back whole
    return error


@pytest.mark.parametrize("name", list(BAD_MESSAGES))
async def test_bad_input_through_the_gateway_is_a_400_not_a_500(
    gateway_on_postgres: Gateway, name: str
) -> None:
    http = gateway_on_postgres.http
    response = await http.post(
        f"/v1/agents/{AGENT}/messages",
        content=BAD_MESSAGES[name],
        headers={"content-type": "application/json"},
    )
    _short_bad_request(response)
    again = await http.post(
        f"/v1/agents/{AGENT}/messages",
        json={"entity_id": "u", "room_id": "room-after", "content": {"text": "room:room-after"}},
    )
    assert again.status_code == 200, again.text[:300]
    assert again.json()["did_respond"] is True


async def test_a_count_beyond_int64_through_the_gateway_is_a_400_not_a_500(
    gateway_on_postgres: Gateway,
) -> None:
    http = gateway_on_postgres.http
    for query in ("offset=99999999999999999999999", "limit=99999999999999999999999"):
        response = await http.get(f"/v1/agents/{AGENT}/rooms/room-1/messages?{query}")
        _short_bad_request(response)
    assert (await http.get(f"/v1/agents/{AGENT}/rooms/room-1/messages")).status_code == 200


async def test_a_300_kb_plugin_name_is_a_400_and_the_replica_that_took_it_stays_connected(
    gateway_on_postgres: Gateway,
) -> None:
    http = gateway_on_postgres.http
    body = {"character": {"name": "Huge", "bio": ["b"]}, "plugins": ["p" * 300_000]}
    _short_bad_request(await http.post("/v1/agents", json=body))
    await asyncio.sleep(0.5)  # nats-server would close the replica's connection here
    assert gateway_on_postgres.broker.config.connection_state.connection.is_connected
    again = await http.post(
        f"/v1/agents/{AGENT}/messages",
        json={"entity_id": "u", "room_id": "room-big", "content": {"text": "room:room-big"}},
    )
    assert again.status_code == 200, again.text[:300]


@pytest.fixture
async def private_postgres(tmp_path: Path) -> AsyncIterator[PostgresCluster]:
    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        unavailable("initdb and pg_ctl are needed for a Postgres of this test's own")
    cluster = PostgresCluster(tmp_path / "pg")
    await asyncio.to_thread(cluster.init)
    await asyncio.to_thread(cluster.start)
    try:
        yield cluster
    finally:
        await asyncio.to_thread(cluster.close)


async def _until_answered(replica: Replica, text: str, room: str, message_id: str) -> Any:
    """Re-send with the same id while the error is retryable, as the contract asks of callers."""
    deadline = time.monotonic() + 120
    while True:
        reply = await replica.send(text, room, message_id=message_id)
        if isinstance(reply, HandleMessageResult) or not reply.retryable:
            return reply
        assert time.monotonic() < deadline, f"still {reply.code} after 120 s: {reply.message}"
        await asyncio.sleep(0.5)


@pytest.mark.timeout(300)  # the outage, then the pool's reconnect
async def test_postgres_down_is_unavailable_everywhere_and_no_reply_outlives_its_message(
    nats_url: str, subjects: Subjects, private_postgres: PostgresCluster
) -> None:
    async with _run_replica(nats_url, subjects, private_postgres.url, turns=4) as (
        replica,
        _storage,
        _broker,
    ):
        before = await replica.send("before", "room-pg")
        assert isinstance(before, HandleMessageResult), before
        assert before.status == "completed", before

        # A turn cut by the outage after its model call began.
        replica.model.gate = asyncio.Event()
        replica.model.called.clear()
        cut_id = uuid.uuid4().hex
        cut = asyncio.create_task(replica.send("cut", "room-pg", message_id=cut_id))
        await asyncio.wait_for(replica.model.called.wait(), timeout=30)
        await asyncio.to_thread(private_postgres.stop)
        replica.model.gate.set()
        replica.model.gate = None
        # The cut turn holds the model's answer: it keeps trying to store it
        # (STORAGE_PATIENCE_SECONDS) while the rest fails at once.

        # While it is down: typed and retryable, on a memory request and on a turn.
        memory = await replica.nc.request(
            subjects.memory_operation("count_memories"),
            msgspec.json.encode({"for_agent": AGENT, "room_id": "room-pg"}),
            timeout=30,
        )
        error = msgspec.json.decode(memory.data, type=Error)
        assert (error.code, error.retryable) == ("unavailable", True), error
        down_id = uuid.uuid4().hex
        # Another room: room-pg's next turn waits behind the cut one, as it should.
        down = await replica.send("while down", "room-pg-2", message_id=down_id)
        assert isinstance(down, Error), down
        assert (down.code, down.retryable) == ("unavailable", True), down

        await asyncio.to_thread(private_postgres.start)
        cut_reply = await cut  # stored once Postgres was back, or unavailable if it took too long
        if isinstance(cut_reply, Error):
            assert (cut_reply.code, cut_reply.retryable) == ("unavailable", True), cut_reply
        for text, room, message_id in (
            ("cut", "room-pg", cut_id),
            ("while down", "room-pg-2", down_id),
        ):
            answer = await _until_answered(replica, text, room, message_id)
            assert isinstance(answer, HandleMessageResult), answer
            assert answer.status == "completed", answer
            assert answer.did_respond, answer

        replies, stored = await replies_stored(private_postgres.dsn)
        assert len(replies) == 3  # before, cut, while down: each answered once
        assert all(count == 1 for count in replies.values()), replies
        assert set(replies) <= stored  # no reply without the message it answers
