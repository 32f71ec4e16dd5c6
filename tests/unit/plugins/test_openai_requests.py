"""What the OpenAI plugin asks a server for: limits, shapes, modes, and the errors it gives."""

from __future__ import annotations

import json
from typing import Any

import pytest

from elizamesh import AgentRuntime, Character, Content, Memory, ModelError, ModelType
from elizamesh.plugins.openai import get_openai_plugin
from shared.agent.message_service import MessageOptions
from shared.plugins.openai import EmbeddingShapeError, ModelTimeoutError, close_clients
from tests.fake_openai import Failure, FakeOpenAI, Hangup, fake_openai_server
from tests.scripted import plan
from tests.unit.plugins.conftest import SYSTEM

JSON_PLAN = (
    '{"thought": "greet", "actions": ["REPLY"], "providers": [], "text": "Hello \\"you\\" <3"}'
)


async def turn(runtime: AgentRuntime, text: str = "Hi", **options: Any) -> Any:
    assert runtime.message_service is not None
    return await runtime.message_service.handle_message(
        runtime,
        Memory(entity_id="u", room_id="r", content=Content(text=text)),
        options=MessageOptions(run_evaluators=False, **options),
    )


async def test_the_planning_call_sends_max_tokens_and_a_strict_json_schema(
    fake: FakeOpenAI, runtime: AgentRuntime
) -> None:
    fake.script.append(JSON_PLAN)
    result = await turn(runtime)
    assert result.response_content.text == 'Hello "you" <3'
    [request] = fake.chat_requests()
    assert request["max_tokens"] == 8192  # elizaOS's OpenAI plugin's default
    response_format = request["response_format"]
    assert response_format["type"] == "json_schema"
    schema = response_format["json_schema"]["schema"]
    assert response_format["json_schema"]["strict"] is True
    assert list(schema["properties"]) == schema["required"]
    assert schema["properties"]["actions"]["items"]["enum"][:2] == ["REPLY", "IGNORE"]
    assert "Respond with one JSON object" in request["messages"][-1]["content"]
    assert "<thought>Your thought here</thought>" not in request["messages"][-1]["content"]


async def test_max_tokens_and_stop_come_from_settings_and_the_call(
    fake: FakeOpenAI, runtime: AgentRuntime
) -> None:
    runtime.set_setting("OPENAI_MAX_TOKENS", "300")
    await runtime.use_model(ModelType.TEXT_SMALL, {"prompt": "hi", "stop": "\n"})
    await runtime.use_model(ModelType.TEXT_SMALL, {"prompt": "hi", "max_tokens": 20})
    first, second = fake.chat_requests()
    assert (first["max_tokens"], first["stop"]) == (300, ["\n"])
    assert (second["max_tokens"], "stop" in second) == (20, False)


async def test_a_prompt_asking_for_xml_stops_at_the_closing_tag(
    fake: FakeOpenAI, runtime: AgentRuntime
) -> None:
    fake.script.append("<response><thought>t</thought><text>cut here")
    answer = await runtime.use_model(
        ModelType.TEXT_SMALL, {"prompt": "Answer like <response><text>..</text></response>"}
    )
    assert fake.chat_requests()[0]["stop"] == ["</response>"]
    assert answer.endswith("</response>")


async def test_a_streamed_json_answer_streams_the_text_of_the_xml(
    fake: FakeOpenAI, runtime: AgentRuntime
) -> None:
    fake.chunk_size = 3
    # "<" is left out: the pipeline streams the XML's text without unescaping it.
    fake.script.append(JSON_PLAN.replace(" <3", " :)"))
    chunks: list[str] = []

    async def on_chunk(chunk: str, _message_id: str | None) -> None:
        chunks.append(chunk)

    result = await turn(runtime, on_stream_chunk=on_chunk)
    assert fake.chat_requests()[0]["stream"] is True
    assert "".join(chunks) == 'Hello "you" :)'
    assert len(chunks) > 2
    assert result.response_content.text == 'Hello "you" :)'


async def test_a_server_refusing_json_schema_falls_back_to_json_object_then_prompting(
    fake: FakeOpenAI, runtime: AgentRuntime
) -> None:
    fake.script.extend(
        [
            Failure(400, "response_format type json_schema is not supported"),
            Failure(500, "Input should be 'text' or 'json_object'"),
            plan("prompted"),
            plan("again"),
        ]
    )
    assert (await turn(runtime)).response_content.text == "prompted"
    assert (await turn(runtime, text="more")).response_content.text == "again"
    modes = [r.get("response_format", {}).get("type") for r in fake.chat_requests()]
    assert modes == ["json_schema", "json_object", None, None]
    assert fake.chat_requests()[2]["stop"] == ["</response>"]
    assert fake.chat_requests()[1]["response_format"]["schema"]["type"] == "object"


async def test_structured_output_off_prompts_for_xml(
    fake: FakeOpenAI, runtime: AgentRuntime
) -> None:
    runtime.set_setting("OPENAI_STRUCTURED_OUTPUT", "off")
    fake.script.append(plan("xml it is"))
    assert (await turn(runtime)).response_content.text == "xml it is"
    assert "response_format" not in fake.chat_requests()[0]


async def test_the_system_prompt_is_sent_once(fake: FakeOpenAI, runtime: AgentRuntime) -> None:
    fake.script.append(JSON_PLAN)
    await turn(runtime)
    sent = json.dumps(fake.chat_requests()[0]["messages"])
    assert sent.count(SYSTEM) == 1
    assert fake.chat_requests()[0]["messages"][0] == {"role": "system", "content": SYSTEM}


async def test_a_timeout_names_openai_timeout_and_is_not_retried(
    fake: FakeOpenAI, runtime: AgentRuntime
) -> None:
    runtime.set_setting("OPENAI_TIMEOUT", "0.3")
    fake.delay = 1.0
    with pytest.raises(ModelTimeoutError, match=r"did not answer within OPENAI_TIMEOUT=0.3s"):
        await runtime.use_model(ModelType.TEXT_SMALL, {"prompt": "hi"})
    assert len(fake.chat_requests()) == 1


async def test_a_server_that_hangs_up_is_retried_then_named_unreachable(
    fake: FakeOpenAI, runtime: AgentRuntime
) -> None:
    fake.script.extend([Hangup(), "fine"])
    assert await runtime.use_model(ModelType.TEXT_SMALL, {"prompt": "hi"}) == "fine"

    runtime.set_setting("OPENAI_MAX_RETRIES", "0")
    fake.script.append(Hangup())
    with pytest.raises(ModelError, match=r"cannot reach .*: check OPENAI_BASE_URL") as failed:
        await runtime.use_model(ModelType.TEXT_SMALL, {"prompt": "hi"})
    assert not isinstance(failed.value, ModelTimeoutError)
    assert len(fake.chat_requests()) == 3


async def test_a_500_is_retried_with_backoff(fake: FakeOpenAI, runtime: AgentRuntime) -> None:
    fake.script.extend([Failure(500, "boom", retry_after_ms=10), "fine"])
    assert await runtime.use_model(ModelType.TEXT_SMALL, {"prompt": "hi"}) == "fine"
    assert len(fake.chat_requests()) == 2


async def test_per_token_embeddings_are_a_typed_error_naming_the_setting(
    fake: FakeOpenAI, runtime: AgentRuntime
) -> None:
    fake.embedding = lambda text, dims: [[0.1, 0.2]] * len(text)
    with pytest.raises(EmbeddingShapeError, match=r"one vector per token \(5 of them\)"):
        await runtime.use_model(ModelType.TEXT_EMBEDDING, {"text": "Paris"})


async def test_embeddings_of_the_wrong_size_are_a_typed_error_naming_the_setting(
    fake: FakeOpenAI, runtime: AgentRuntime
) -> None:
    runtime.set_setting("OPENAI_EMBEDDING_DIMENSIONS", "8")
    fake.embedding = lambda text, dims: [0.5] * 3
    with pytest.raises(
        EmbeddingShapeError, match=r"3 numbers .* not 8: check OPENAI_EMBEDDING_DIM"
    ):
        await runtime.use_model(ModelType.TEXT_EMBEDDING, {"text": "Paris"})
    runtime.set_setting("OPENAI_EMBEDDING_DIMENSIONS", "")
    fake.embedding = lambda text, dims: [0.5] * len(text)
    await runtime.use_model(ModelType.TEXT_EMBEDDING, {"text": "abc"})
    with pytest.raises(
        EmbeddingShapeError, match=r"4 numbers .* not 3: check OPENAI_EMBEDDING_MOD"
    ):
        await runtime.use_model(ModelType.TEXT_EMBEDDING, {"text": "abcd"})


async def test_image_speech_and_transcription_use_the_openai_endpoints(
    fake: FakeOpenAI, runtime: AgentRuntime
) -> None:
    images = await runtime.use_model(ModelType.IMAGE, {"prompt": "a cat", "n": 2})
    speech = await runtime.use_model(ModelType.TEXT_TO_SPEECH, {"text": "hi there"})
    text = await runtime.use_model(ModelType.TRANSCRIPTION, {"audio": b"ID3 some audio"})
    assert images == [{"url": "https://images.test/0.png"}, {"url": "https://images.test/1.png"}]
    assert speech == b"ID3hi there"
    assert text == "hello from the audio"
    by_path = {path.rsplit("/v1", 1)[-1]: body for path, body in fake.requests}
    assert by_path["/images/generations"]["model"] == "dall-e-3"
    assert by_path["/audio/speech"]["voice"] == "nova"
    assert by_path["/audio/speech"]["model"] == "gpt-4o-mini-tts"


async def test_reasoning_models_get_max_completion_tokens_and_no_sampling_options(
    fake: FakeOpenAI, runtime: AgentRuntime
) -> None:
    runtime.set_setting("OPENAI_REASONING_EFFORT", "low")
    answer = await runtime.use_model(
        ModelType.TEXT_REASONING_SMALL, {"prompt": "2+2?", "temperature": 0.7}
    )
    assert answer == fake.default
    [request] = fake.chat_requests()
    assert request["model"] == "o4-mini"
    assert request["max_completion_tokens"] == 8192
    assert request["reasoning_effort"] == "low"
    assert "temperature" not in request
    assert "max_tokens" not in request


async def test_embeddings_can_come_from_another_server(
    fake: FakeOpenAI, runtime: AgentRuntime
) -> None:
    with fake_openai_server() as embeddings:
        runtime.set_setting("OPENAI_EMBEDDING_URL", embeddings.url)
        vector = await runtime.use_model(ModelType.TEXT_EMBEDDING, {"text": "ab"})
    assert vector[:2] == [1.0, 1.0]
    assert [p for p, _ in embeddings.requests] == ["/v1/embeddings"]
    assert not [p for p, _ in fake.requests if p.endswith("/embeddings")]


async def test_an_unreachable_embedding_server_names_openai_embedding_url(
    fake: FakeOpenAI,
) -> None:
    offline = AgentRuntime(
        character=Character(name="x"),
        settings={
            "OPENAI_BASE_URL": fake.url,
            "OPENAI_EMBEDDING_URL": "http://127.0.0.1:9/v1",
            "OPENAI_MAX_RETRIES": "0",
        },
    )
    await offline.register_plugin(get_openai_plugin())
    try:
        with pytest.raises(ModelError, match=r"127\.0\.0\.1:9/v1: check OPENAI_EMBEDDING_URL"):
            await offline.use_model(ModelType.TEXT_EMBEDDING, {"text": "ab"})
    finally:
        await close_clients(offline)


async def test_object_models_ask_for_json_mode_or_the_given_schema(
    fake: FakeOpenAI, runtime: AgentRuntime
) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    fake.script.extend(['{"city": "Paris"}', '{"city": "Rome"}'])
    assert await runtime.use_model(ModelType.OBJECT_SMALL, {"prompt": "city?"}) == {"city": "Paris"}
    assert await runtime.use_model(ModelType.OBJECT_LARGE, {"prompt": "c?", "schema": schema}) == {
        "city": "Rome"
    }
    plain, shaped = fake.chat_requests()
    assert plain["response_format"] == {"type": "json_object"}
    assert shaped["response_format"]["json_schema"]["schema"] == schema
