"""The secrets of an agent added over NATS: encrypted at rest, shown nowhere, used everywhere.

Two runtime replicas (``AgentHost``) and the memory service (on SQLite) on a
real nats-server; the agent's model is the real ``openai`` plugin against a
fake OpenAI server whose address and key are the agent's secrets, so the
agent answers only where its secrets were applied.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest

from contracts import Content, HandleMessage, HandleMessageResult, Subjects
from contracts.control import AddAgent, AgentStatus
from contracts.events import AgentList, ListAgents
from services.memory.main import create_broker_for as memory_broker
from services.runtime.main import attach
from shared.bus import create_broker, request, start_serving
from shared.config import Settings
from shared.errors import BadRequest
from shared.hosting import AgentHost, HostedAgents
from shared.secrets import SECRETS_CACHE_KEY, SecretsUnreadableError
from shared.storage.sql import SqlAdapter
from tests.fake_openai import FakeOpenAI, fake_openai_server

AGENT = "secretive-agent"
API_KEY = "sk-test-agent-secret-0123456789"
BASE_URL_SECRET = "only-in-settings-secrets"  # noqa: S105 - a test value
SECRET_KEY = "the operator's passphrase"  # noqa: S105 - a test value


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    # The agent must get its model settings from its secrets, not from this process.
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ELIZAMESH_SECRET_KEY", "SECRET_SALT"):
        monkeypatch.delenv(name, raising=False)
    with fake_openai_server() as server:
        yield server


def character(fake: FakeOpenAI) -> dict[str, Any]:
    """An agent whose model works only with its secrets: the key, and the server's address."""
    return {
        "id": AGENT,
        "name": "Secretive",
        "bio": ["Keeps secrets."],
        "plugins": ["openai"],
        "secrets": {"OPENAI_API_KEY": API_KEY},
        "settings": {
            "TASK_TICK_SECONDS": "3600",
            "secrets": {"OPENAI_BASE_URL": fake.url, "OTHER": BASE_URL_SECRET},
        },
    }


@dataclass
class Stack:
    nats_url: str
    subjects: Subjects
    storage: SqlAdapter
    caller: Any
    stack: AsyncExitStack
    secret_key: str | None = SECRET_KEY
    replicas: list[AgentHost] = field(default_factory=list)
    _exits: dict[AgentHost, AsyncExitStack] = field(default_factory=dict)

    async def replica(self) -> AgentHost:
        """Start one more runtime replica, with its own connection, serving the queue group."""
        replica = AsyncExitStack()
        self.stack.push_async_callback(replica.aclose)
        broker = create_broker(self.nats_url, name=f"runtime-{len(self.replicas)}")
        await replica.enter_async_context(broker)
        await broker.start()
        host = AgentHost(broker, self.subjects, HostedAgents(secret_key=self.secret_key))
        await host.open()
        await host.rooms.open()
        for subscriber in attach(broker, self.subjects, host).values():
            await subscriber.start()
        await broker.config.connection_state.connection.flush()  # subscribed at the server
        replica.push_async_callback(host.stop)
        self.replicas.append(host)
        self._exits[host] = replica
        return host

    async def restart(self) -> AgentHost:
        """Stop every replica (its agents, then its connection), then start a new one."""
        for host in self.replicas:
            await self._exits.pop(host).aclose()
        self.replicas.clear()
        return await self.replica()

    async def add(self, data: dict[str, Any]) -> AgentStatus:
        return await request(
            self.caller,
            self.subjects.agents_add,
            AddAgent(character=data),
            AgentStatus,
            timeout=20,
        )

    async def send(self, text: str, room: str) -> HandleMessageResult:
        message = HandleMessage(entity_id=f"user-{room}", room_id=room, content=Content(text=text))
        return await request(
            self.caller,
            self.subjects.message_handle(AGENT),
            message,
            HandleMessageResult,
            timeout=20,
        )


@pytest.fixture
async def stack(nats_url: str, subjects: Subjects, tmp_path: Path) -> AsyncIterator[Stack]:
    database_url = f"sqlite:///{tmp_path / 'memory.db'}"
    storage = SqlAdapter.from_url(database_url, "elizamesh-memory")
    await storage.init()
    settings = Settings(nats_url=nats_url, eliza_ns=subjects.namespace, database_url=database_url)
    memory = memory_broker(settings, storage)
    caller = create_broker(nats_url, name="caller")
    try:
        async with AsyncExitStack() as exits, memory, caller:
            await start_serving(memory)
            await caller.start()
            yield Stack(nats_url, subjects, storage, caller, exits)
            await exits.aclose()  # the replicas, before the memory service they use
            nc = await nats.connect(nats_url)
            js = nc.jetstream()
            for info in await js.streams_info():
                if info.config.name and info.config.name.startswith(subjects.namespace.upper()):
                    await js.delete_stream(info.config.name)
            await nc.close()
    finally:
        await storage.close()


def answered(result: HandleMessageResult) -> bool:
    return result.status == "completed" and result.did_respond


async def test_an_api_added_agent_with_secrets_answers_on_both_replicas_and_after_a_restart(
    stack: Stack, fake: FakeOpenAI
) -> None:
    first, second = await stack.replica(), await stack.replica()
    status = await stack.add(character(fake))
    assert status.enabled

    # Over NATS, turns land on either replica; each must have the secrets.
    results = [await stack.send(f"hello {n}", room=f"room-{n}") for n in range(12)]
    assert [r.error for r in results if not answered(r)] == []
    # Directly on each replica too, so both surely served a turn.
    for host in (first, second):
        request = HandleMessage(
            entity_id="u", room_id=f"direct-{id(host)}", content=Content(text="hi")
        )
        assert answered(await host.handle(AGENT, request))
        runtime = host.runtimes[AGENT]
        assert runtime.get_setting("OPENAI_API_KEY") == API_KEY
        assert runtime.get_setting("OTHER") == BASE_URL_SECRET

    # Restart: every replica goes; a new one starts the agent from what is stored.
    restarted = await stack.restart()
    calls = len(fake.chat_requests())
    assert answered(await stack.send("still there?", room="after-restart"))
    assert len(fake.chat_requests()) > calls
    assert restarted.runtimes[AGENT].get_setting("OPENAI_API_KEY") == API_KEY


async def test_the_secrets_are_in_no_list_get_event_log_or_stored_row_in_plaintext(
    stack: Stack, fake: FakeOpenAI, nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await stack.replica()
    await stack.add(character(fake))
    assert answered(await stack.send("hello", room="r1"))
    plaintexts = (API_KEY, BASE_URL_SECRET)

    listed = await request(
        stack.caller, stack.subjects.agents_list, ListAgents(), AgentList, timeout=10
    )
    assert [a.id for a in listed.agents] == [AGENT]
    agents = await stack.storage.get_agents()
    stored = await stack.storage.get_agent(AGENT)
    assert stored is not None
    for shown in (repr(listed), repr(agents), repr(stored)):
        assert not any(secret in shown for secret in plaintexts)
    assert "secrets" not in stored.character
    assert "secrets" not in stored.character["settings"]

    sealed = await stack.storage.for_agent(AGENT).get_cache(SECRETS_CACHE_KEY)
    assert sealed is not None
    assert not any(secret in repr(sealed) for secret in plaintexts)
    database = Path(str(stack.storage.engine.url.database))
    on_disk = b"".join(p.read_bytes() for p in database.parent.glob(f"{database.name}*"))
    assert not any(secret.encode() in on_disk for secret in plaintexts)

    nc = await nats.connect(nats_url)
    try:
        subscription = await nc.jetstream().subscribe(
            stack.subjects.events_template,
            stream=stack.subjects.events_stream,
            ordered_consumer=True,
        )
        events: list[bytes] = []
        try:
            while True:
                events.append((await subscription.next_msg(timeout=1)).data)
        except TimeoutError:
            pass
    finally:
        await nc.close()
    assert events  # the turn was on the stream
    assert not any(secret.encode() in event for event in events for secret in plaintexts)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert not any(secret in logged for secret in plaintexts)


async def test_an_agent_with_secrets_and_no_key_is_refused_naming_the_setting(
    stack: Stack, fake: FakeOpenAI
) -> None:
    stack.secret_key = None
    await stack.replica()
    with pytest.raises(BadRequest, match="ELIZAMESH_SECRET_KEY") as raised:
        await stack.add(character(fake))
    assert raised.value.details == {"setting": "ELIZAMESH_SECRET_KEY"}
    assert await stack.storage.get_agent(AGENT) is None
    # Without secrets it is added as before.
    plain = {k: v for k, v in character(fake).items() if k != "secrets"}
    plain["settings"] = {"OPENAI_BASE_URL": fake.url}
    assert (await stack.add(plain)).enabled


async def test_a_replica_without_the_key_does_not_start_the_agent_and_says_why(
    stack: Stack, fake: FakeOpenAI
) -> None:
    await stack.replica()
    await stack.add(character(fake))
    stack.secret_key = None
    keyless = await stack.replica()
    with pytest.raises(SecretsUnreadableError, match="ELIZAMESH_SECRET_KEY"):
        await keyless.runtime_for(AGENT)
    assert AGENT not in keyless.runtimes
