"""The OpenAI plugin against llama.cpp's OpenAI-compatible server with the bundled SmolLM2.

Nobody here wrote that server: it checks what our fake cannot, that
``response_format`` with a JSON schema holds a 135M model to the pipeline's
shape, and how a real server answers what it does not serve.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from elizamesh import AgentRuntime, Character, Content, Memory, ModelType
from elizamesh.plugins.openai import get_openai_plugin
from shared.agent.message_service import MessageOptions
from shared.agent.types import Plugin, PluginPriority
from shared.agent.xml import parse_key_value_xml
from shared.plugins import local
from shared.plugins.openai import EmbeddingShapeError, EndpointMissingError
from tests.llama_server import MODEL_ALIAS, llama_cpp_server


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    with llama_cpp_server() as url:
        yield url


@pytest.fixture
def settings(server_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": server_url,
        "OPENAI_SMALL_MODEL": MODEL_ALIAS,
        "OPENAI_LARGE_MODEL": MODEL_ALIAS,
        "OPENAI_EMBEDDING_MODEL": MODEL_ALIAS,
        # A slow CPU server: short answers (the default is elizaOS's 8192).
        "OPENAI_MAX_TOKENS": "160",
        "DEFAULT_TEMPERATURE": "0",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "TASK_TICK_SECONDS": "3600",
    }


# The bundled chat model's server has no pooled embeddings (see the test below),
# so the agent's memory embeddings come from the local MiniLM.
LOCAL_EMBEDDINGS = Plugin(
    name="local-embeddings",
    priority=PluginPriority.MODEL_PROVIDER + 1,
    models={ModelType.TEXT_EMBEDDING: local.embed},
)


@pytest.fixture
async def runtime(settings: dict[str, str]) -> AsyncIterator[AgentRuntime]:
    agent = AgentRuntime(
        character=Character(
            name="Assistant", bio="A helpful AI assistant", system="You are a helpful assistant."
        ),
        plugins=[LOCAL_EMBEDDINGS, get_openai_plugin()],
        settings=settings,
    )
    await agent.initialize()
    # The clock would make every prompt, and so a 135M model's choices at
    # temperature 0, differ from run to run: without it the turns are repeatable.
    agent.providers = [p for p in agent.providers if p.name != "TIME"]
    yield agent
    await agent.stop()


async def test_the_quick_start_answers_through_llama_cpps_server(runtime: AgentRuntime) -> None:
    assert runtime.message_service is not None
    started = time.perf_counter()
    result = await runtime.message_service.handle_message(
        runtime,
        Memory(entity_id="user-1", room_id="room-1", content=Content(text="Hi")),
        options=MessageOptions(max_retries=1, run_evaluators=False),
    )
    elapsed = time.perf_counter() - started
    assert result.status == "completed", result.error
    assert result.response_content.text.strip()
    print(f"Quick Start turn through llama.cpp's server: {elapsed:.1f} s")


async def test_a_streamed_turn_answers_and_streams_what_it_stores(runtime: AgentRuntime) -> None:
    assert runtime.message_service is not None
    chunks: list[str] = []

    async def collect(chunk: str, _message_id: str | None) -> None:
        chunks.append(chunk)

    result = await runtime.message_service.handle_message(
        runtime,
        Memory(entity_id="user-1", room_id="room-2", content=Content(text="Tell me about Paris")),
        options=MessageOptions(max_retries=1, run_evaluators=False, on_stream_chunk=collect),
    )
    assert result.status == "completed", result.error
    assert result.response_content.text.strip()
    # The planner's text streams when the plan is a plain REPLY; else the REPLY action's does.
    streamed = "".join(chunks)  # unescaped as it streams, like the stored reply
    assert streamed.strip() == result.response_content.text.strip()


async def test_a_streamed_answer_is_the_pipelines_xml_within_the_choices(
    runtime: AgentRuntime,
) -> None:
    chunks: list[str] = []

    async def collect(chunk: str, _message_id: str | None) -> None:
        chunks.append(chunk)

    answer = await runtime.use_model(
        ModelType.TEXT_LARGE,
        {
            "prompt": "User: What is the capital of France?\nAnswer the user.",
            "xml_fields": ["thought", "actions", "text"],
            "choices": {"actions": ["REPLY", "IGNORE"]},
        },
        on_stream_chunk=collect,
    )
    parsed = parse_key_value_xml(answer) or {}
    assert len(chunks) > 3
    assert "".join(chunks) == answer
    assert answer.startswith("<response><thought>")
    assert answer.endswith("</text></response>")
    actions = parsed["actions"]
    assert isinstance(actions, list)
    assert actions
    assert set(actions) <= {"REPLY", "IGNORE"}
    assert str(parsed["text"]).strip()


async def test_a_chat_models_per_token_embeddings_are_a_typed_error(
    runtime: AgentRuntime,
) -> None:
    with pytest.raises(EmbeddingShapeError, match=r"one vector per token .*OPENAI_EMBEDDING_MODEL"):
        await runtime.use_model(
            ModelType.TEXT_EMBEDDING, {"text": "Paris is in France"}, provider="openai"
        )


@pytest.mark.parametrize(
    ("model_type", "params", "endpoint"),
    [
        (ModelType.IMAGE, {"prompt": "a cat"}, "/images/generations"),
        (ModelType.TEXT_TO_SPEECH, {"text": "hello"}, "/audio/speech"),
        (ModelType.TRANSCRIPTION, {"audio": b"ID3-not-really"}, "/audio/transcriptions"),
    ],
)
async def test_an_endpoint_the_server_lacks_is_a_typed_error_naming_it(
    runtime: AgentRuntime, model_type: ModelType, params: dict[str, object], endpoint: str
) -> None:
    with pytest.raises(EndpointMissingError, match=f"no {endpoint} endpoint .*OPENAI_BASE_URL"):
        await runtime.use_model(model_type, params)
