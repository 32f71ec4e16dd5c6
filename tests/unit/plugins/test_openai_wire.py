"""The chat request as it leaves (auth, JSON) and answers that are not chat completions."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from elizamesh import AgentRuntime, Character, ModelError, ModelType
from elizamesh.plugins.openai import get_openai_plugin
from shared.plugins.openai import close_clients


@dataclass
class Canned:
    """A server that answers every POST with ``body`` (SSE ``events`` when streamed)."""

    body: bytes = b""
    events: list[bytes] = field(default_factory=list)
    seen: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def canned() -> Iterator[Canned]:
    state = Canned()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", 0)))
            request = json.loads(raw)
            state.seen.append(({k.lower(): v for k, v in self.headers.items()}, request))
            self.send_response(200)
            if request.get("stream"):
                self.send_header("content-type", "text/event-stream")
                self.end_headers()
                for event in [*state.events, b"[DONE]"]:
                    self.wfile.write(b"data: " + event + b"\n\n")
                return
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(state.body)))
            self.end_headers()
            self.wfile.write(state.body)

        def log_message(self, format: str, *args: object) -> None:
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
async def agent(canned: Canned) -> AsyncIterator[AgentRuntime]:
    runtime = AgentRuntime(
        character=Character(name="x", system="Be brief."),
        settings={
            "OPENAI_API_KEY": "sk-wire",
            "OPENAI_BASE_URL": canned.url,
            "OPENAI_MAX_RETRIES": "0",
        },
    )
    await runtime.register_plugin(get_openai_plugin())
    yield runtime
    await close_clients(runtime)  # only registered, never initialized: no service closes them


async def test_a_chat_request_carries_the_key_and_the_parameters_as_json(
    canned: Canned, agent: AgentRuntime
) -> None:
    canned.body = json.dumps(
        {
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        }
    ).encode()

    answer = await agent.use_model(
        ModelType.TEXT_SMALL, {"prompt": "hi", "temperature": 0.5, "stop": "END"}
    )

    assert answer == "hello"
    [(headers, request)] = canned.seen
    assert headers["authorization"] == "Bearer sk-wire"
    assert headers["content-type"] == "application/json"
    assert request["model"] == "gpt-4o-mini"
    assert request["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]
    assert request["temperature"] == 0.5
    assert request["stop"] == ["END"]
    assert "stream" not in request


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"choices": []}', b'{"choices": [{"message": {"content": 7}}]}'],
)
async def test_an_answer_that_is_no_chat_completion_is_a_model_error_naming_the_server(
    canned: Canned, agent: AgentRuntime, body: bytes
) -> None:
    canned.body = body
    with pytest.raises(ModelError, match=r"at http://127\.0\.0\.1:\d+/v1 answered something else"):
        await agent.use_model(ModelType.TEXT_SMALL, {"prompt": "hi"})


async def test_a_streamed_chunk_of_another_shape_is_a_model_error(
    canned: Canned, agent: AgentRuntime
) -> None:
    canned.events = [
        b'{"choices": [{"index": 0, "delta": {"content": "he"}}]}',
        b'{"choices": "nope"}',
    ]
    pieces: list[str] = []

    async def collect(chunk: str, _message_id: str | None) -> None:
        pieces.append(chunk)

    with pytest.raises(ModelError, match=r"answered something else .*\$\.choices"):
        await agent.use_model(ModelType.TEXT_SMALL, {"prompt": "hi"}, on_stream_chunk=collect)
    assert pieces == ["he"]
    [(_, request)] = canned.seen
    assert request["stream"] is True
    assert request["stream_options"] == {"include_usage": True}


async def test_parameters_that_are_no_json_values_are_a_bad_request_naming_params(
    canned: Canned, agent: AgentRuntime
) -> None:
    with pytest.raises(ValueError, match="model parameters must be JSON values") as raised:
        await agent.use_model(ModelType.TEXT_SMALL, {"prompt": "hi", "seed": object()})
    assert getattr(raised.value, "details", None) == {"field": "params", "rule": "JSON values"}
    assert canned.seen == []
