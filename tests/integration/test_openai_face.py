"""The official ``openai`` client against the gateway's OpenAI-compatible face.

A real runtime and memory service on a real nats-server; the agent's model is
scripted and answers with what it was shown, so a test can see what the turn saw.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from contracts import Subjects
from tests.gateway_stack import AGENT, GatewayStack, gateway_stack
from tests.scripted import ScriptedModel, plan

SEEN = re.compile(r"I see (\d+) mentions of pineapple")


def echo_what_it_sees(prompt: str) -> str:
    """Answer with how often the prompt mentions 'pineapple' (the room's memory shows there)."""
    return plan(f"I see {prompt.count('pineapple')} mentions of pineapple.")


@pytest.fixture
async def stack(nats_url: str, subjects: Subjects, tmp_path: Path) -> AsyncIterator[GatewayStack]:
    model = ScriptedModel(default=plan("**Hello** from the agent."))
    async with gateway_stack(nats_url, subjects, tmp_path, model) as running:
        yield running


@pytest.fixture
async def client(stack: GatewayStack) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=f"{stack.url}/v1", api_key="unused", timeout=60, max_retries=0
    ) as client:
        yield client


async def test_the_models_are_the_hosted_agents(client: openai.AsyncOpenAI) -> None:
    models = [model.id async for model in client.models.list()]
    assert models == [AGENT]
    assert (await client.models.retrieve("Eliza")).id == AGENT
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("nobody")


async def test_a_non_streamed_completion_is_the_agents_answer(
    client: openai.AsyncOpenAI,
) -> None:
    completion = await client.chat.completions.create(
        model="Eliza",  # the agent's name works as well as its id
        messages=[{"role": "user", "content": "Hi there"}],
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "**Hello** from the agent."
    assert completion.choices[0].finish_reason == "stop"


async def test_a_streamed_completion_arrives_as_chunks_that_make_the_answer(
    client: openai.AsyncOpenAI,
) -> None:
    stream = await client.chat.completions.create(
        model=AGENT, messages=[{"role": "user", "content": "Hi there"}], stream=True
    )
    pieces = []
    finish = None
    async for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        pieces.append(chunk.choices[0].delta.content or "")
        finish = chunk.choices[0].finish_reason or finish
    assert len([p for p in pieces if p]) > 1  # it streamed, not one block
    assert "".join(pieces) == "**Hello** from the agent."
    assert finish == "stop"


async def test_two_calls_of_one_conversation_share_the_rooms_memory(
    stack: GatewayStack, client: openai.AsyncOpenAI
) -> None:
    stack.model.default = echo_what_it_sees("")
    stack.model.large.extend([echo_what_it_sees, echo_what_it_sees])
    first_question: ChatCompletionMessageParam = {"role": "user", "content": "I like pineapple."}
    first = await client.chat.completions.create(model=AGENT, messages=[first_question])
    answer = first.choices[0].message.content or ""
    assert SEEN.search(answer), answer
    conversation: list[ChatCompletionMessageParam] = [
        first_question,
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "What fruit did I say?"},
    ]
    second = await client.chat.completions.create(model=AGENT, messages=conversation)
    # Only the newest message was sent; the first one came from the room's memory.
    last_prompt = stack.model.prompts["TEXT_LARGE"][-1]
    assert "What fruit did I say?" in last_prompt
    assert "I like pineapple." in last_prompt
    assert last_prompt.count("What fruit did I say?") == 1
    seen = SEEN.search(second.choices[0].message.content or "")
    assert seen is not None
    assert int(seen.group(1)) >= 1


async def test_another_conversation_has_a_room_of_its_own(
    stack: GatewayStack, client: openai.AsyncOpenAI
) -> None:
    await client.chat.completions.create(
        model=AGENT, messages=[{"role": "user", "content": "My pineapple secret."}]
    )
    await client.chat.completions.create(
        model=AGENT, messages=[{"role": "user", "content": "Something else entirely."}]
    )
    assert "pineapple" not in stack.model.prompts["TEXT_LARGE"][-1]


async def test_an_unknown_model_is_openais_not_found_error(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        await client.chat.completions.create(
            model="nobody", messages=[{"role": "user", "content": "hi"}]
        )
    assert raised.value.status_code == 404
    error = raised.value.body
    assert isinstance(error, dict)
    assert error["type"] == "not_found_error"
    assert "nobody" in error["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": AGENT, "messages": []}, "messages"),
        ({"model": AGENT}, "messages"),
        ({"model": AGENT, "messages": [{"role": "assistant", "content": "x"}]}, "messages"),
        ({"model": AGENT, "messages": [{"role": "user", "content": "   "}]}, "messages"),
        ({"model": AGENT, "messages": [{"role": "wizard", "content": "x"}]}, "messages"),
    ],
)
async def test_bad_requests_are_openai_shaped_400s_naming_the_field(
    stack: GatewayStack, body: dict[str, object], field: str
) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as http:
        response = await http.post("/v1/chat/completions", json=body)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert field in error["message"]
        assert error["param"].startswith(field)
        healthy = await http.post(
            "/v1/chat/completions",
            json={"model": AGENT, "messages": [{"role": "user", "content": "still there?"}]},
        )
        assert healthy.status_code == 200
