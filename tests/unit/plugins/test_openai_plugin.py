"""The OpenAI-compatible plugin against a fake server on loopback (the real openai client)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from elizamesh import AgentRuntime, Character, Content, Memory, ModelError, ModelType
from elizamesh.plugins.openai import get_openai_plugin
from shared.plugins.openai import close_clients
from tests.fake_openai import Failure, FakeOpenAI
from tests.scripted import plan


def chats(fake: FakeOpenAI) -> list[dict[str, Any]]:
    return [body for path, body in fake.requests if path.endswith("/chat/completions")]


async def test_the_quick_start_runs_as_written_with_the_openai_plugin(
    fake: FakeOpenAI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", fake.url)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    fake.script.append(plan("Hello there!"))
    message = Memory(entity_id="user-1", room_id="room-1", content=Content(text="Hi"))

    # The product page's Python Quick Start, with our import names:
    from elizamesh import AgentRuntime, Character
    from elizamesh.plugins.openai import get_openai_plugin

    runtime = AgentRuntime(
        character=Character(
            name="Assistant",
            bio="A helpful AI assistant",
            system="You are a helpful assistant.",
        ),
        plugins=[get_openai_plugin()],
    )
    await runtime.initialize()
    result = await runtime.message_service.handle_message(runtime, message)
    print(result.response_content.text)
    await runtime.stop()

    assert capsys.readouterr().out == "Hello there!\n"
    [request] = chats(fake)
    assert request["model"] == "gpt-4o"
    assert request["messages"][0] == {"role": "system", "content": "You are a helpful assistant."}
    assert "Hi" in request["messages"][1]["content"]


async def test_streamed_chunks_arrive_in_order_through_the_callback(
    fake: FakeOpenAI, runtime: AgentRuntime
) -> None:
    fake.script.append(plan("Paris is the capital."))
    chunks: list[str] = []

    async def on_chunk(chunk: str, _: str | None) -> None:
        chunks.append(chunk)

    assert runtime.message_service is not None
    from shared.agent.message_service import MessageOptions

    result = await runtime.message_service.handle_message(
        runtime,
        Memory(entity_id="u", room_id="r", content=Content(text="capital?")),
        options=MessageOptions(on_stream_chunk=on_chunk),
    )
    assert chats(fake)[0]["stream"] is True
    assert "".join(chunks) == "Paris is the capital."
    assert len(chunks) > 2
    assert result.response_content is not None
    assert result.response_content.text == "Paris is the capital."


async def test_a_429_then_a_200_is_retried(fake: FakeOpenAI, runtime: AgentRuntime) -> None:
    fake.script.extend([Failure(429, "slow down", retry_after_ms=10), "fine now"])
    answer = await runtime.use_model(ModelType.TEXT_SMALL, {"prompt": "hi"})
    assert answer == "fine now"
    assert len(chats(fake)) == 2
    assert chats(fake)[0]["model"] == "gpt-4o-mini"


async def test_a_missing_key_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    runtime = AgentRuntime(character=Character(name="x"))
    await runtime.register_plugin(get_openai_plugin())
    with pytest.raises(ModelError, match="OPENAI_API_KEY is not set"):
        await runtime.use_model(ModelType.TEXT_SMALL, {"prompt": "hi"})


async def test_a_refused_key_unknown_model_and_bad_url_name_the_setting(
    fake: FakeOpenAI, runtime: AgentRuntime
) -> None:
    fake.script.append(Failure(401, "bad key"))
    with pytest.raises(ModelError, match="refused OPENAI_API_KEY"):
        await runtime.use_model(ModelType.TEXT_SMALL, {"prompt": "hi"})
    with pytest.raises(ModelError, match="model 'gpt-5-nope' is unknown to the server"):
        await runtime.use_model(ModelType.TEXT_SMALL, {"prompt": "hi", "model": "gpt-5-nope"})
    offline = AgentRuntime(
        character=Character(name="x"),
        plugins=[get_openai_plugin()],
        settings={
            "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
            "OPENAI_MAX_RETRIES": "0",
            "OPENAI_TIMEOUT": "2",
        },
    )
    await offline.register_plugin(get_openai_plugin())
    try:
        with pytest.raises(
            ModelError, match=r"cannot reach .*127\.0\.0\.1:9/v1: check OPENAI_BASE_URL"
        ):
            await offline.use_model(ModelType.TEXT_SMALL, {"prompt": "hi"})
    finally:
        await close_clients(offline)


async def test_embeddings_batch_in_one_request_in_order(
    fake: FakeOpenAI, runtime: AgentRuntime
) -> None:
    runtime.set_setting("OPENAI_EMBEDDING_DIMENSIONS", "8")
    vectors = await runtime.use_model(ModelType.TEXT_EMBEDDING, {"texts": ["aa", "b", "abc"]})
    single = await runtime.use_model(ModelType.TEXT_EMBEDDING, {"text": "aa"})
    assert vectors[0] == [2.0, 0, 0, 0, 0, 0, 0, 0]
    assert vectors[2][:3] == [1.0, 1.0, 1.0]
    assert single == vectors[0]
    embedding_calls = [b for p, b in fake.requests if p.endswith("/embeddings")]
    assert embedding_calls[0]["input"] == ["aa", "b", "abc"]
    assert embedding_calls[0]["dimensions"] == 8


async def test_object_models_return_parsed_json_or_a_clear_error(
    fake: FakeOpenAI, runtime: AgentRuntime
) -> None:
    fake.script.extend(['```json\n{"city": "Paris"}\n```', "not json at all"])
    assert await runtime.use_model(ModelType.OBJECT_SMALL, {"prompt": "city?"}) == {"city": "Paris"}
    with pytest.raises(ModelError, match="not valid JSON"):
        await runtime.use_model(ModelType.OBJECT_LARGE, {"prompt": "city?"})


async def test_the_tokenizer_works_offline_and_round_trips(runtime: AgentRuntime) -> None:
    tokens = await runtime.use_model(ModelType.TEXT_TOKENIZER_ENCODE, {"text": "Hello, Paris!"})
    assert tokens == [13225, 11, 12650, 0]  # gpt-4o's o200k_base ids
    assert (
        await runtime.use_model(ModelType.TEXT_TOKENIZER_DECODE, {"tokens": tokens})
        == "Hello, Paris!"
    )
    runtime.set_setting("OPENAI_LARGE_MODEL", "llama3.2")  # unknown to OpenAI: o200k_base
    assert await runtime.use_model(ModelType.TEXT_TOKENIZER_ENCODE, {"text": "Hello"}) == [13225]


async def test_a_model_calls_span_carries_the_model_and_its_tokens_streamed_or_not(
    fake: FakeOpenAI, runtime: AgentRuntime, recorded_spans: InMemorySpanExporter
) -> None:
    fake.script.extend(["plain answer", "streamed answer"])

    async def ignore(_chunk: str, _message_id: str | None) -> None:
        return None

    await runtime.use_model(ModelType.TEXT_SMALL, {"prompt": "hi"})
    await runtime.use_model(ModelType.TEXT_SMALL, {"prompt": "hi"}, on_stream_chunk=ignore)

    plain, streamed = [
        dict(s.attributes or {})
        for s in recorded_spans.get_finished_spans()
        if s.name == "model TEXT_SMALL"
    ]
    assert plain["gen_ai.request.model"] == "gpt-4o-mini"
    assert plain["gen_ai.usage.input_tokens"] == 1
    assert plain["gen_ai.usage.output_tokens"] == 1
    assert chats(fake)[1]["stream_options"] == {"include_usage": True}
    assert streamed["gen_ai.request.model"] == "gpt-4o-mini"
    assert streamed["gen_ai.usage.input_tokens"] == 3
    assert streamed["gen_ai.usage.output_tokens"] == 3  # "streamed answer" in 5-char pieces
