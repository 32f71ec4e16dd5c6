"""elizaOS character files in the runtime service, and knowledge found with the local MiniLM.

The runtime replica (an ``AgentHost`` with ``AGENT_CHARACTERS``) and the memory
service run in this process on a real nats-server, as in test_turn_over_nats.py.
The character files are ``tests/fixtures/characters`` (elizaOS 1.x and 0.x formats).
For knowledge, only the embeddings are real (``elizamesh.plugins.local``'s MiniLM);
the text model is the scripted one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from faststream.nats import NatsBroker

from contracts import Content, HandleMessage, HandleMessageResult, Subjects
from contracts.records import Memory
from services.memory.main import create_broker_for as memory_broker
from services.runtime.main import attach
from shared.agent.character import Character
from shared.agent.knowledge import KNOWLEDGE_TABLE, knowledge_provider
from shared.agent.runtime import AgentRuntime
from shared.agent.types import ModelType, Plugin, State
from shared.bus import create_broker, request, start_serving
from shared.config import Settings
from shared.hosting import AgentHost, HostedAgents
from shared.plugins.local import embed
from shared.storage.sql import SqlAdapter
from tests.fake_openai import FakeOpenAI, fake_openai_server
from tests.scripted import ScriptedModel, plan

CHARACTERS = Path(__file__).resolve().parents[1] / "fixtures" / "characters"
V1 = CHARACTERS / "eliza.v1.character.json"
V0 = CHARACTERS / "sol.v0.character.json"

MINILM = Plugin(name="minilm", models={ModelType.TEXT_EMBEDDING: embed})
"""The local embedding model alone (the local plugin's chat model is not wanted here)."""


@dataclass
class Mesh:
    nats_url: str
    subjects: Subjects
    caller: NatsBroker
    hosts: list[AgentHost] = field(default_factory=list)
    brokers: list[NatsBroker] = field(default_factory=list)

    async def replica(self, agents: HostedAgents) -> AgentHost:
        """Start one more runtime replica serving ``<ns>.agent.*`` (agents added by the caller)."""
        broker = create_broker(self.nats_url, name=f"runtime-{len(self.hosts)}")
        await broker.start()
        self.brokers.append(broker)
        host = AgentHost(broker, self.subjects, agents)
        self.hosts.append(host)
        for subscriber in attach(broker, self.subjects, host).values():
            await subscriber.start()
        return host

    async def ask(self, agent_id: str, text: str, room: str = "room-1") -> HandleMessageResult:
        message = HandleMessage(entity_id="user-1", room_id=room, content=Content(text=text))
        return await request(
            self.caller,
            self.subjects.message_handle(agent_id),
            message,
            HandleMessageResult,
            timeout=30,
        )


@pytest.fixture
async def mesh(
    nats_url: str, subjects: Subjects, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Mesh]:
    monkeypatch.setenv("TASK_TICK_SECONDS", "3600")
    database_url = f"sqlite:///{tmp_path / 'memory.db'}"
    storage = SqlAdapter.from_url(database_url, "elizamesh-memory")
    await storage.init()
    settings = Settings(nats_url=nats_url, eliza_ns=subjects.namespace, database_url=database_url)
    memory = memory_broker(settings, storage)
    caller = create_broker(nats_url, name="caller")
    try:
        async with memory, caller:
            await start_serving(memory)
            await caller.start()
            wired = Mesh(nats_url, subjects, caller)
            try:
                yield wired
            finally:
                for host in wired.hosts:
                    await host.stop()
                for broker in wired.brokers:
                    await broker.stop()
    finally:
        await storage.close()


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    with fake_openai_server() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        monkeypatch.setenv("OPENAI_API_KEY", "x")
        yield server


async def best_knowledge(runtime: AgentRuntime, question: str) -> str:
    """The fragment the KNOWLEDGE provider puts first for ``question``."""
    message = Memory(entity_id="user-1", room_id="room-1", content=Content(text=question))
    found = await knowledge_provider(runtime, message, State())
    fragments = found.data["knowledge"]
    assert isinstance(fragments, list)
    return str(fragments[0].content.text)


async def test_elizaos_1x_and_0x_character_files_are_hosted_by_the_runtime_service_and_answer(
    mesh: Mesh, fake: FakeOpenAI
) -> None:
    fake.default = plan("Hello from a character file!")
    agents = HostedAgents.from_env({"AGENT_CHARACTERS": f"{V1},{V0}"})
    host = await mesh.replica(agents)
    await host.host_characters(wait=10)
    for path, name in ((V1, "Eliza"), (V0, "Sol")):
        character = Character.from_file(path)
        runtime = host.runtimes[character.agent_id]
        assert [p.name for p in runtime.plugins] == ["openai", "bootstrap"]
        result = await mesh.ask(character.agent_id, "Hi there!")
        assert result.did_respond, result
        assert result.response_content is not None
        assert result.response_content.text == "Hello from a character file!"
        prompt = fake.chat_requests()[-1]["messages"][-1]["content"]
        assert f"# Example conversations for {name}" in prompt


async def test_a_knowledge_fact_is_found_for_a_question_embedded_with_local_embeddings(
    tmp_path: Path,
) -> None:
    model = ScriptedModel(default=plan("ok"))
    runtime = AgentRuntime(
        character=Character.from_file(V1),
        plugins=[model.plugin(), MINILM],
        settings={"DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}", "TASK_TICK_SECONDS": "3600"},
    )
    await runtime.initialize()
    try:
        for question, fact in (
            ("What's the wifi password?", "tangerine-42"),
            ("How many days off do I get each year?", "27 days of paid holiday"),
            ("Where is the office?", "12 Harbour Street"),
        ):
            assert fact in await best_knowledge(runtime, question)
            message = Memory(entity_id="user-1", room_id="room-1", content=Content(text=question))
            await runtime.message_service.handle_message(runtime, message)
            assert fact in model.prompts["TEXT_LARGE"][-1]
    finally:
        await runtime.stop()


async def test_a_knowledge_fact_is_found_over_nats_and_stored_once_by_two_replicas(
    mesh: Mesh,
) -> None:
    character = Character.from_file(V1)
    models = [ScriptedModel(default=plan("ok")), ScriptedModel(default=plan("ok"))]
    runtimes = []
    for model in models:
        host = await mesh.replica(HostedAgents(plugins=()))
        runtimes.append(
            await host.add(character, [model.plugin(), MINILM], {"TASK_TICK_SECONDS": "3600"})
        )
    stored = await runtimes[0].get_memories(table_name=KNOWLEDGE_TABLE, include_embeddings=True)
    assert len(stored) == 4  # the second replica stored nothing more
    assert all(m.embedding is not None and len(m.embedding) == 384 for m in stored)
    result = await mesh.ask(character.agent_id, "What's the wifi password?")
    assert result.did_respond
    [prompt] = [p for m in models for p in m.prompts["TEXT_LARGE"]]
    assert "# Knowledge\nThe office wifi password is tangerine-42." in prompt
    for runtime in runtimes:
        assert "tangerine-42" in await best_knowledge(runtime, "What's the wifi password?")


async def test_no_character_file_can_stop_the_runtime_service(
    mesh: Mesh, fake: FakeOpenAI, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake.default = plan("Still here!")
    missing = tmp_path / "missing.character.json"
    broken = tmp_path / "broken.character.json"
    broken.write_text('{"name": "Broken",')
    misspelt = tmp_path / "misspelt.character.json"
    misspelt.write_text('{"name": "Typo", "bio": ["x"], "styel": {"all": ["short"]}}')
    unpluggable = tmp_path / "unpluggable.character.json"
    unpluggable.write_text('{"name": "Bare", "bio": ["no plugins of its own"]}')
    files = (missing, broken, misspelt, unpluggable, V1)
    agents = HostedAgents.from_env(
        {"AGENT_CHARACTERS": ",".join(map(str, files)), "AGENT_PLUGINS": "no-such-plugin"}
    )
    host = await mesh.replica(agents)

    with caplog.at_level("ERROR", logger="elizamesh.hosting"):
        await host.host_characters(wait=10)

    eliza = Character.from_file(V1)
    assert list(host.runtimes) == [eliza.agent_id]
    result = await mesh.ask(eliza.agent_id, "Hi there!")
    assert result.response_content is not None
    assert result.response_content.text == "Still here!"
    errors = {
        record.args[0]: record.getMessage()
        for record in caplog.records
        if record.levelname == "ERROR" and isinstance(record.args, tuple)
    }
    assert set(errors) == {missing, broken, misspelt, unpluggable}
    assert "cannot read character file" in errors[missing]
    assert "not valid JSON" in errors[broken]
    assert "$.styel" in errors[misspelt]
    assert "no-such-plugin" in errors[unpluggable]
