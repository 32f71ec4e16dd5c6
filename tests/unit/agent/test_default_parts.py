"""A runtime gets its default parts from the bootstrap plugin, wired from above it.

``AgentRuntime`` imports none of them (``lint-imports``, contract
``agent-layers``): it loads the bootstrap plugin by name, and the plugin
gives it the message service, the in-process embedding queue, the task
service and the knowledge service, unless the host set its own first.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts import Content, HandleMessageResult
from contracts.records import Memory
from elizamesh import AgentRuntime as PublicAgentRuntime
from shared.agent.character import Character
from shared.agent.embedding_queue import EmbeddingQueue
from shared.agent.interface import MessageOptions
from shared.agent.message_service import DefaultMessageService
from shared.agent.runtime import AgentRuntime
from shared.agent.types import Callback, StateError
from tests.scripted import ScriptedModel, plan


def agent(database_url: str, model: ScriptedModel, **settings: str) -> AgentRuntime:
    return AgentRuntime(
        character=Character(name="Ada", knowledge=["Ada's favourite number is 7."]),
        plugins=[model.plugin(embeddings=True)],
        settings={"DATABASE_URL": database_url, "TASK_TICK_SECONDS": "3600", **settings},
    )


def hello() -> Memory:
    return Memory(entity_id="ann", room_id="dm", content=Content(text="hello"))


async def test_a_runtime_from_the_public_face_gets_every_default_part(
    database_url: str, model: ScriptedModel
) -> None:
    assert PublicAgentRuntime is AgentRuntime
    runtime = agent(database_url, model)
    await runtime.initialize()
    try:
        assert [p.name for p in runtime.plugins][-1] == "bootstrap"
        assert isinstance(runtime.message_service, DefaultMessageService)
        assert isinstance(runtime.embedding_queue, EmbeddingQueue)
        assert runtime.has_service("task")
        assert runtime.has_service("knowledge")
        assert runtime.has_knowledge
        model.default = plan("hi Ann")
        result = await runtime.message_service.handle_message(runtime, hello())
        assert result.response_content is not None
        assert result.response_content.text == "hi Ann"
    finally:
        await runtime.stop()


async def test_parts_the_host_set_before_initialize_are_kept(
    database_url: str, model: ScriptedModel
) -> None:
    runtime = agent(database_url, model)
    service = DefaultMessageService(rooms=10)
    queue = EmbeddingQueue(runtime, capacity=5)
    runtime.message_service = service
    runtime.embedding_queue = queue
    await runtime.initialize()
    try:
        assert runtime.message_service is service
        assert runtime.embedding_queue is queue
    finally:
        await runtime.stop()


async def test_without_bootstrap_the_runtime_has_no_message_service_and_says_how_to_get_one(
    database_url: str, model: ScriptedModel
) -> None:
    runtime = agent(database_url, model, IGNORE_BOOTSTRAP="true")
    await runtime.initialize()
    try:
        assert "bootstrap" not in [p.name for p in runtime.plugins]
        assert runtime.embedding_queue is None
        assert not runtime.has_service("knowledge")
        with pytest.raises(StateError, match=r"set runtime\.message_service"):
            runtime.message_service  # noqa: B018 - the property raises
    finally:
        await runtime.stop()


class EchoService:
    """A message service of the host's own: it answers with the text it got."""

    def __init__(self) -> None:
        self.evaluation = DefaultMessageService().evaluation
        self.arrived: list[str] = []

    async def handle_message(
        self,
        runtime: AgentRuntime,
        message: Memory,
        callback: Callback | None = None,
        options: MessageOptions | None = None,
    ) -> HandleMessageResult:
        del callback, options
        return HandleMessageResult(
            message_id=message.id,
            agent_id=runtime.agent_id,
            status="completed",
            did_respond=True,
            response_content=Content(text=message.content.text),
        )

    async def delete_message(self, runtime: AgentRuntime, message: Memory) -> None:
        del runtime, message

    async def clear_channel(
        self, runtime: AgentRuntime, room_id: str, channel_id: str | None = None
    ) -> int:
        del runtime, room_id, channel_id
        return 0

    def note_arrival(self, agent_id: str, room_id: str, message_id: str) -> None:
        self.arrived.append(message_id)


async def test_a_runtime_without_bootstrap_runs_the_message_service_it_is_given(
    tmp_path: Path, model: ScriptedModel
) -> None:
    runtime = agent(f"sqlite:///{tmp_path / 'own.db'}", model, IGNORE_BOOTSTRAP="true")
    runtime.message_service = EchoService()
    await runtime.initialize()
    try:
        result = await runtime.message_service.handle_message(runtime, hello())
        assert result.response_content is not None
        assert result.response_content.text == "hello"
    finally:
        await runtime.stop()
